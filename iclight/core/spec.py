"""A relight, and a sequence, as one typed, frozen value each: made and checked once, at the door,
by `relight_spec` and `sequence_spec`; below the door nothing checks or defaults them again.

Every door makes them the same way: the API's keywords (`Relighter.relight`), the command line, the
Cog predictor, a manifest line, the web app and `reproduce` all call these two functions with the
option names of `options.py` (a designed light as a `Light` or as its flat settings). A seed not
given is drawn here, and only here.

Images (the subject, the background, a mask, a light map, a sequence's frames) stay as they were
given (a path, a PIL image or an array): they are read, and checked, where they are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from PIL import Image

from . import config
from . import constants as C
from . import light as L
from . import options as O
from .lora import Lora
from .validation import InputError, random_seed

ImageLike = str | os.PathLike | Image.Image | np.ndarray
SEED_SPACE = 2**63  # a sequence's seeds one per frame, from its base seed
# How a camera looks into a panorama (`hdri`): settings that mean nothing without one.
HDRI_SETTINGS = ("hdri_heading", "hdri_pitch", "hdri_fov", "hdri_exposure", "hdri_light")


@dataclass(frozen=True)
class Settings:
    """What one diffusion runs with; relights with equal settings can share a batch."""

    width: int
    height: int
    steps: int
    cfg: float
    highres_scale: float
    highres_denoise: float
    sampler: str = O.HOSTED_SAMPLER
    light_start: float | None = None  # the first pass starts from the light's latent at this denoise
    clip_skip: int = 1
    model: str = C.FBC
    highres_pass: bool = True

    @property
    def highres_size(self) -> tuple[int, int]:
        def snap(x: int) -> int:
            return round(x * self.highres_scale / C.HIGHRES_MULTIPLE) * C.HIGHRES_MULTIPLE

        return snap(self.width), snap(self.height)

    @property
    def highres_steps(self) -> int:
        """The high-res pass's schedule: `steps / highres_denoise` (the hosted rule), of which it
        runs the last `int(schedule * highres_denoise)` steps; at least one, where the hosted rule
        gives none (1 step at a denoise under 1/1.5: the hosted code fails there)."""
        return schedule(self.steps, self.highres_denoise)

    @property
    def first_steps(self) -> int:
        """The first pass's schedule when it starts from the light (`light_start`), by the same rule."""
        return schedule(self.steps, self.light_start or 1.0)

    @property
    def guided(self) -> bool:
        """Whether the diffusion runs classifier-free guidance (two halves to every batch)."""
        return self.cfg > 1


def ran(steps: int, denoise: float) -> int:
    """The steps an image-to-image pass over a schedule of `steps` runs at `denoise` (diffusers' rule)."""
    return min(int(steps * denoise), steps)


def schedule(steps: int, denoise: float) -> int:
    """`steps / denoise` steps, of which an image-to-image pass runs the last `int(schedule *
    denoise)`; at least one."""
    found = round(steps / denoise)
    while int(found * denoise) < 1:
        found += 1
    return found


@dataclass(frozen=True, eq=False)
class RelightSpec:
    """One relight, checked (`relight_spec`): the hosted inputs, then what goes beyond them
    (`options.py` says what each one does)."""

    subject: ImageLike
    background: ImageLike | None
    prompt: str
    appended_prompt: str
    negative_prompt: str
    compute_normal: bool
    width: int
    height: int
    steps: int
    cfg: float
    highres_scale: float
    highres_denoise: float
    light_source: str
    seed: int
    number_of_images: int
    mask: ImageLike | None
    detail_transfer: float
    keep_background: bool
    matting: str | None  # None: the relighter's own
    light: L.Light | None
    light_mix: float | None
    light_map: ImageLike | None
    hdri: ImageLike | None
    hdri_heading: float
    hdri_pitch: float
    hdri_fov: float
    hdri_exposure: float
    hdri_light: float
    keep_colors: float
    loras: tuple[Lora, ...] | None  # None: the relighter's own
    sampler: str
    light_start: float | None
    clip_skip: int
    model: str
    lowres_denoise: float | None  # fc: the first pass's start from its light (None: from noise)
    highres_pass: bool

    @property
    def settings(self) -> Settings:
        start = self.lowres_denoise if self.model == C.FC and self.lit else self.light_start
        return Settings(
            self.width, self.height, self.steps, self.cfg, self.highres_scale, self.highres_denoise,
            self.sampler, start, self.clip_skip, self.model, self.highres_pass,
        )  # fmt: skip

    @property
    def lit(self) -> bool:
        """fc: whether the first pass starts from a light (a gradient, a designed light, a light map
        or a panorama) rather than from noise."""
        given = (self.light, self.light_map, self.hdri)
        return self.light_source != C.NO_LIGHT or any(v is not None for v in given)

    @property
    def texts(self) -> tuple[str, str]:
        """The positive and negative text the relight encodes."""
        return f"{self.prompt}, {self.appended_prompt}", self.negative_prompt

    @property
    def count(self) -> int:
        """Images made by one diffusion (compute_normal makes one under each of its four lights)."""
        return 1 if self.compute_normal else self.number_of_images

    def record(self) -> dict[str, Any]:
        """Every setting as flat, JSON-ready parameters (the images apart): what a recipe keeps and
        `relight_spec` takes back."""
        skip = {"subject", "background", "light", "loras", *O.FILES}
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        found["loras"] = None if self.loras is None else [lora.record() for lora in self.loras]
        return found | L.no_fields() | (self.light.fields() if self.light else {})


@dataclass(frozen=True)
class Encoding:
    """How a relight's images are written: the hosted `output_format` and `output_quality`."""

    format: str
    quality: int


@dataclass(frozen=True, eq=False)
class SequenceSpec:
    """A sequence, checked (`sequence_spec`): its frames and masks, how they are relit together,
    and the relight every frame shares (its subject: the frames as given)."""

    frames: Any  # a list of images, a folder of images or a video file
    relight: RelightSpec
    masks: Any  # None, a list or a folder: one mask per frame
    consistency: float
    shared_noise: bool
    smooth_mattes: bool
    window: int
    layers: str
    background_fit: str
    hdri_turn: float
    start: int
    end: int | None
    stride: int
    batch_noise: bool  # one generator draws a window's noise frame after frame (Light-A-Video's)

    def seeds(self, count: int) -> list[int]:
        """Every frame's seed: the relight's for all (shared noise), or one more for each frame."""
        base = self.relight.seed
        return [base if self.shared_noise else (base + i) % SEED_SPACE for i in range(count)]

    def frame(
        self, index: int, subject: ImageLike, mask: ImageLike | None, seed: int, background: ImageLike | None
    ) -> RelightSpec:
        """Frame `index`'s relight: its image, mask, seed and background, the panorama turned to its heading."""
        heading = self.relight.hdri_heading + index * self.hdri_turn
        return replace(self.relight, subject=subject, mask=mask, seed=seed, background=background, hdri_heading=heading)

    def record(self) -> dict[str, Any]:
        """The sequence's own settings, flat (what a recipe keeps as "sequence")."""
        found = {o.name: getattr(self, o.name) for o in O.SEQUENCE if o.name != "masks"}
        return found | {"masks": self.masks if isinstance(self.masks, str | None) else str(self.masks)}


# -- the doors ----------------------------------------------------------------------------------


def relight_spec(subject: Any, background: Any = None, prompt: Any = None, **options: Any) -> RelightSpec:
    """The relight these inputs ask for, checked, or an InputError naming the first input that
    cannot be used. `options` are the names of `options.RELIGHT`; None means the default."""
    _known(options, O.RELIGHT, "option")
    if subject is None:
        raise InputError("subject_image: required, but no value was given")
    values = _checked(O.RELIGHT, _model_defaults(options) | {"prompt": prompt})
    values["light"] = _designed(values.pop("light"), {name: values.pop(name) for name in L.FIELDS})
    if values["seed"] is None:
        values["seed"] = random_seed(C.SEED_BITS[values["model"]])
    spec = RelightSpec(subject=subject, background=background, **values)
    _consistent(spec)
    return spec


def sequence_spec(frames: Any, background: Any = None, prompt: Any = None, **options: Any) -> SequenceSpec:
    """A sequence these inputs ask for, checked: `options` are the names of `options.SEQUENCE` and
    those of `options.RELIGHT` that a sequence takes."""
    if frames is None or (isinstance(frames, list | tuple) and not frames):
        raise InputError("frames: required: a video, a folder of images or a list of images")
    own = {name: options.pop(name) for name in [o.name for o in O.SEQUENCE] if name in options}
    for option in O.RELIGHT:
        given = options.get(option.name)
        if option.single and given is not None and (option.default is None or given != option.default):
            also = " (masks: one mask per frame)" if option.name == "mask" else ""
            raise InputError(f"{option.name}: a sequence makes one image per frame, so it takes no {option.name}{also}")
    relight = relight_spec(frames, background, prompt, **options)
    if relight.sampler in O.STOCHASTIC_SAMPLERS:
        raise InputError(f"sampler: {relight.sampler} draws one noise for a whole batch; a sequence needs another")
    values = _checked(O.SEQUENCE, own)
    if values["end"] is not None and values["end"] <= values["start"]:
        raise InputError(f"end: {values['end']} is not after start ({values['start']})")
    return SequenceSpec(frames=frames, relight=relight, **values)


def encoding(output_format: Any = None, output_quality: Any = None) -> Encoding:
    values = _checked(O.OUTPUT, {"output_format": output_format, "output_quality": output_quality})
    return Encoding(values["output_format"], values["output_quality"])


def _model_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """The options with the relight's model (ICLIGHT_MODEL's where none is given) and that model's
    defaults where they differ from the table's (fc: no light source, the hosted lowres_denoise)."""
    model = options.get("model") or config.MODEL.read()
    found = options | {"model": C.served(model)[0]}
    if found["model"] == C.FC:
        for name in ("light_source", "lowres_denoise"):
            found[name] = C.FC_INPUT_SPECS[name].default if found.get(name) is None else found[name]
    return found


def _known(given: dict[str, Any], table: tuple[O.Option, ...], what: str) -> None:
    names = [o.name for o in table]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InputError(f"{unknown[0]}: not a relight {what}; expected one of {names}")


def _checked(table: tuple[O.Option, ...], given: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for option in table:
        raw = given.get(option.name)
        if raw is None and option.required:
            raise InputError(f"{option.name}: required, but no value was given")
        values[option.name] = option.default if raw is None else option.check(raw)
    return values


def _designed(light: L.Light | None, flat: dict[str, Any]) -> L.Light | None:
    """The designed light: a `Light`, or its flat settings; not both."""
    if light is not None and any(v is not None for v in flat.values()):
        raise InputError("light: give a Light or its settings (light_angle, light_color, ...), not both")
    return light if light is not None else L.from_fields(flat)


def _given(value: Any) -> bool:
    """Whether an extra asks for something (an image, even an array, always does; 0 and False do not)."""
    return value is not None and not (isinstance(value, bool | int | float) and not value)


def _consistent(s: RelightSpec) -> None:
    """An InputError naming the first input that contradicts another."""
    _for_the_model(s)
    if s.compute_normal:
        extras = ("detail_transfer", "keep_background", "light", "light_map", "light_mix", "keep_colors")
        names = (*extras, "light_start", "hdri")
        used = [n for n in names if _given(getattr(s, n))]
        if used:
            raise InputError(f"compute_normal: cannot be combined with {used[0]} (it relights under four fixed lights)")
    if s.hdri is not None:
        _hdri_alone(s)
        return
    for name in HDRI_SETTINGS:
        if getattr(s, name) != O.default(name):
            raise InputError(f"{name}: needs hdri, a panorama to turn the camera in")
    if s.keep_background and s.background is None:
        raise InputError("keep_background: needs a background image")
    check_light(s.light_source, s.background is not None, s.light, s.light_map is not None, s.light_mix)


def _for_the_model(s: RelightSpec) -> None:
    """An InputError naming an input the relight's model cannot use, and the model."""
    if s.model == C.FBC:
        if s.lowres_denoise is not None:
            raise InputError(
                "lowres_denoise: the fbc model takes none (light_start starts its first pass from a light)"
            )
        if s.light_source == C.NO_LIGHT:
            raise InputError(
                f"light_source: {C.NO_LIGHT!r} is the fc model's; the fbc model's: {list(C.LIGHT_SOURCES)}"
            )
        return
    if s.background is not None:
        raise InputError(
            "background_image: the fc model takes no background; its light is light_source, a designed light, a "
            "light map or an HDRI (model fbc relights to a background)"
        )
    if s.light_source not in C.FC_LIGHT_SOURCES:
        raise InputError(
            f"light_source: {s.light_source!r} is not the fc model's; choose one of {list(C.FC_LIGHT_SOURCES)}"
        )
    for name, why in (("compute_normal", "relights under fbc's four lights"), ("light_start", "uses lowres_denoise")):
        if _given(getattr(s, name)):
            raise InputError(f"{name}: the fc model takes none ({name} {why})")


def _hdri_alone(s: RelightSpec) -> None:
    """A panorama is the background and the light: nothing else may claim to be either."""
    if s.background is not None:
        raise InputError("hdri: cannot be combined with a background image (the panorama's view is the background)")
    if s.light_source not in (C.BACKGROUND_IMAGE, C.NO_LIGHT):
        raise InputError(f"light_source: {s.light_source!r} contradicts hdri; leave the default (the panorama's view)")
    for name in ("light", "light_map", "light_mix"):
        if getattr(s, name) is not None:
            raise InputError(
                f"hdri: cannot be combined with {name} (the panorama makes the light; hdri_light sets how much)"
            )


def check_light(source: str, background: bool, light: L.Light | None, light_map: bool, mix: float | None) -> None:
    """The light's part of the door: the light source, the background, a designed light, a light
    map and the mix agree (the web app's light preview asks it alone, before there is a subject)."""
    mixing = mix is not None and mix < 1.0
    if mixing and not background:
        raise InputError("light_mix: needs a background image to mix the light with")
    if mixing and light is None and not light_map and source not in L.PRESET_ANGLES:
        raise InputError(f"light_mix: light_source {source!r} has no light to mix; pick a light or design one")
    if light_map and light is not None:
        raise InputError("light_map: cannot be combined with light settings (light_angle, light_color, ...)")
    if (light_map or light is not None) and source not in (C.BACKGROUND_IMAGE, C.NO_LIGHT, *L.PRESET_ANGLES):
        what = "light_map" if light_map else "light settings"
        raise InputError(f"light_source: {source!r} contradicts {what}; use a gradient or the default")
    preset = L.PRESET_ANGLES.get(source)
    if preset is not None and light is not None and light.angle is not None and light.angle % 360 != preset:
        raise InputError(f"light_angle: {light.angle:g} contradicts light_source {source!r} ({preset:g})")
    if source in L.BACKGROUND_SOURCES and not background and light is None and not light_map:
        raise InputError(f"background_image: required when light_source is {source!r}")
