"""Every setting of a relight and of a sequence, written once: its default, the check it goes
through at the door (`spec.py`), and how the command line, manifests, the web app and the docs
present it. The API's keywords, the command line's flags, a manifest line's fields and a recipe's
parameters are all these names; a new option is one entry here, one field of the spec, and the
code that uses it.

The hosted model's inputs come from the one contract in `constants`; the images (subject,
background, and a sequence's frames) are the doors' own arguments, not options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from . import constants as C
from . import light as L
from . import validation as V
from .lora import parse as parse_loras

# The samplers a relight may use, by the names ComfyUI and A1111 users know (`models/samplers.py`
# maps them to diffusers' schedulers); the first is the hosted model's.
HOSTED_SAMPLER = "dpmpp-2m-sde-karras"
SAMPLERS = (HOSTED_SAMPLER, "dpmpp-2m-karras", "euler", "euler-a", "unipc", "ddim")
# Draw fresh noise at every step from one generator: requests with them share no diffusion batch.
STOCHASTIC_SAMPLERS = frozenset({"euler-a"})
CLIP_SKIPS = (1, 2)  # 1: the text encoder's last layer (the hosted model's); 2: the one before it
# What a background video (or folder of backgrounds) shorter than a sequence's frames does.
BACKGROUND_FITS = ("hold", "loop", "exact")
# Light-A-Video's layers: the self-attention of every up block but the last (`models/attention.py`).
DEFAULT_LAYERS = "up-but-last"


# How a job's id (`jobs/manifest.py`) counts an option. The options of the first ids count always,
# as those ids took them: checked, as given, or (the seed, drawn where none is given) only where
# given. Every later option counts only where it is set to another value than its default, so that
# the ids of the jobs made before it stay what they were.
ALWAYS, AS_GIVEN, WHERE_GIVEN, WHERE_SET = "always", "as given", "where given", "where set"


@dataclass(frozen=True)
class Option:
    """One setting: its default, its check (the value, coerced, or an InputError naming it), how
    the command line takes it (`kind` is the argparse type; bool is a switch; a Path is a file,
    relative to a manifest's folder), and how a job's id counts it (`in_id`)."""

    name: str
    default: Any
    check: Callable[[Any], Any]
    help: str
    group: str
    kind: type | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    flag: str | None = None  # the command line's flag where it is not --NAME (for a switch: it turns it off)
    single: bool = False  # a single relight's only: a sequence refuses it
    required: bool = False
    low: float | None = None  # the range a number is checked against (a slider's, in the web app)
    high: float | None = None
    in_id: str = WHERE_SET

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def is_file(self) -> bool:
        return self.kind is Path


def _hosted(name: str, group: str = "hosted", single: bool = False) -> Option:
    spec = C.INPUT_SPECS[name]
    helptext = spec.description
    if spec.choices is not None:
        helptext += f"; one of: {', '.join(map(str, spec.choices))}"
    elif spec.ge is not None:
        helptext += f"; {spec.ge:g} to {spec.le:g}"
    return Option(
        name, spec.default, lambda v, s=spec: V.check(s, v), helptext, group, spec.type,
        metavar=None if spec.type is bool else name.upper(), choices=spec.choices, single=single,
        required=spec.required, low=spec.ge, high=spec.le, in_id=WHERE_GIVEN if name == "seed" else ALWAYS,
    )  # fmt: skip


def _number(
    name: str, default: Any, helptext: str, group: str, metavar: str | None, low: float, high: float | None,
    kind: type = float, above_low: bool = False, in_id: str = WHERE_SET,
) -> Option:  # fmt: skip
    """A number whose range is written once: the door checks it, the web app's slider spans it and
    the help states it."""
    if kind is int:
        check = partial(V.whole, name, low=int(low), high=None if high is None else int(high))
        span = f"{low} to {high}" if high is not None else f"at least {low}"
    else:
        check = partial(V.number, name, low=low, high=high, above_low=above_low)
        span = f"{'above ' if above_low else ''}{low:g} {'up ' if above_low else ''}to {high:g}"
    return Option(name, default, check, f"{span}: {helptext}", group, kind, metavar, low=low, high=high, in_id=in_id)


def _kept(value: Any) -> Any:
    """An image or a light setting: checked where it is used (`imaging`) or with the whole light."""
    return value


def _light(value: Any) -> L.Light:
    if not isinstance(value, L.Light):
        raise V.InputError(f"light: expected an iclight.Light, got {type(value).__name__}")
    return value.check()


LIGHT_HELP = {  # the flat settings of a designed light (core/light.py): (type, metavar, help)
    "light_angle": (float, "DEGREES", "the side the light comes from, counter-clockwise from the right: 0 right, "
                    "90 top, 180 left (the default), 270 bottom; a gradient light_source gives its own"),
    "light_color": (str, "COLOR", "#rrggbb or a CSS colour name (default white)"),
    "light_bright": (float, "LEVEL", "0..255: the lit side's level (default 224, as the hosted lights)"),
    "light_dark": (float, "LEVEL", "0..255: the far side's level (default 32)"),
    "light_shape": (str, "SHAPE", "linear (a gradient, the default) or spot (a soft spot: frontal or overhead)"),
    "light_x": (float, "X", "0..1: the spot's centre from the left (default 0.5)"),
    "light_y": (float, "Y", "0..1: the spot's centre from the top (default 0.5)"),
    "light_radius": (float, "R", "the spot's radius, a fraction of the shorter side (default 0.5)"),
    "fill_angle": (float, "DEGREES", "a second light (rim or fill) from this side"),
    "fill_color": (str, "COLOR", "the second light's colour (default white)"),
    "fill_strength": (float, "S", "0..1: how much the second light adds (default 0.5)"),
}  # fmt: skip


def _light_source(value: Any) -> str:
    """A light source of either model's (`spec.py` checks it against the relight's model)."""
    return V.choice("light_source", V.check(_SOURCE, value), (*C.LIGHT_SOURCES, C.NO_LIGHT))


HOSTED: tuple[Option, ...] = (
    _hosted("prompt"),
    _hosted("appended_prompt"),
    _hosted("negative_prompt"),
    _hosted("compute_normal", single=True),
    _hosted("width"),
    _hosted("height"),
    _hosted("steps"),
    _hosted("cfg"),
    _hosted("highres_scale"),
    _hosted("highres_denoise"),
    replace(
        _hosted("light_source"),
        check=_light_source,
        choices=(*C.LIGHT_SOURCES, C.NO_LIGHT),
        help=f"{_hosted('light_source').help}; the fc model's: None (no light, what fc takes when none is given), "
        f"{', '.join(C.FC_LIGHT_SOURCES[1:])}",
    ),
    _hosted("seed"),
    _hosted("number_of_images", single=True),
)
OUTPUT: tuple[Option, ...] = (_hosted("output_format", "output"), _hosted("output_quality", "output"))
EXTRAS: tuple[Option, ...] = (
    Option("mask", None, _kept, "use this matte (white = subject) instead of background removal; a subject "
           "with a real alpha channel is used the same way", "extras", Path, single=True, in_id=ALWAYS),
    _number("detail_transfer", 0.0, "restore the subject's fine detail (text, logos, faces) inside the matte",
            "extras", "STRENGTH", 0, 1, in_id=ALWAYS),
    Option("keep_background", False, lambda v: V.boolean("keep_background", v),
           "composite the relit subject over the background's own pixels", "extras", bool, in_id=ALWAYS),
    Option("matting", None, lambda v: V.choice("matting", v, C.MATTING_CHOICES),
           "the matting model for a subject without mask or alpha: rmbg-1.4 (the hosted model's; non-commercial "
           "licence), birefnet or birefnet-lite (MIT licence), or none (a mask or an alpha channel is then "
           "required); default ICLIGHT_MATTING, else rmbg-1.4", "extras", str, choices=C.MATTING_CHOICES,
           in_id=ALWAYS),
    Option("light", None, _light, "a designed light (iclight.Light); the command line gives its settings "
           "one by one", "light"),
    *(Option(name, None, _kept, text, "light", kind, metavar, in_id=AS_GIVEN)
      for name, (kind, metavar, text) in LIGHT_HELP.items()),
    _number("light_mix", None, "blend the background with the light (0 the background, 1 the light)", "light",
            "MIX", 0, 1, in_id=AS_GIVEN),
    Option("light_map", None, _kept, "an image used as the light (a painted map, a panorama crop)", "light", Path,
           in_id=ALWAYS),
    Option("hdri", None, _kept, "an equirectangular panorama (.hdr, .exr, or an 8/16-bit 2:1 image) as the "
           "background and the light (docs/lighting.md)", "hdri", Path),
    _number("hdri_heading", 0.0, "degrees the camera turns to the right from the panorama's centre", "hdri",
            "DEGREES", -360, 360),
    _number("hdri_pitch", 0.0, "degrees the camera looks up", "hdri", "DEGREES", -90, 90),
    _number("hdri_fov", 60.0, "the camera's horizontal field of view in degrees", "hdri", "DEGREES", 10, 150),
    _number("hdri_exposure", 0.0, "the view's exposure in stops", "hdri", "STOPS", -10, 10),
    _number("hdri_light", 0.5, "how strongly the panorama's light from outside the view is added", "hdri",
            "STRENGTH", 0, 1),
    _number("keep_colors", 0.0, "inside the matte keep the subject's own colours (CIELAB chroma), the relit "
            "lightness", "light", "STRENGTH", 0, 1, in_id=ALWAYS),
    Option("loras", None, parse_loras, "a LoRA (.safetensors, kohya/A1111 or diffusers layout) at SCALE "
           "(default 1); repeatable; default ICLIGHT_LORAS", "models", list, "FILE[:SCALE]", flag="--lora",
           in_id=ALWAYS),
    Option("sampler", HOSTED_SAMPLER, lambda v: V.choice("sampler", v, SAMPLERS),
           f"the sampler (default {HOSTED_SAMPLER}, the hosted model's)", "models", str, choices=SAMPLERS,
           in_id=ALWAYS),
    _number("light_start", None, "start the first pass from the light's latent at this denoise (lower: more of "
            "the light)", "models", "DENOISE", 0, 1, above_low=True, in_id=ALWAYS),
    Option("clip_skip", 1, lambda v: V.choice("clip_skip", V.check(_INT, v), CLIP_SKIPS),
           "1: the text encoder's last layer (the hosted model's); 2: the layer before it, which many "
           "community SD1.5 checkpoints are made for", "models", int, "N", choices=CLIP_SKIPS),
    Option("model", C.FBC, lambda v: V.choice("model", v, C.MODELS),
           "the IC-Light model: fbc (a subject and a background, the default) or fc (a subject, a prompt and "
           "a light, no background); default ICLIGHT_MODEL", "models", str, choices=C.MODELS),
    _number("lowres_denoise", None, "fc: the first pass starts from the light's latent at this denoise (the "
            "hosted fc model's; default 0.9)", "models", "DENOISE", 0.1, 1),
    Option("highres_pass", True, lambda v: V.boolean("highres_pass", v), "end after the low-res pass: its "
           "image is the result (as Light-A-Video's relighting stage does)", "models", bool,
           flag="--no-highres-pass"),
)  # fmt: skip
SEQUENCE: tuple[Option, ...] = (  # a sequence's id holds its every setting (`SequenceSpec.record`)
    _number("consistency", 0.5, "consistent light attention's mix (0: every frame on its own)", "sequence",
            "GAMMA", 0, 1, in_id=ALWAYS),
    Option("shared_noise", True, lambda v: V.boolean("shared_noise", v),
           "a seed per frame (default: one noise for all)", "sequence", bool, flag="--independent-noise",
           in_id=ALWAYS),
    Option("smooth_mattes", True, lambda v: V.boolean("smooth_mattes", v),
           "leave each frame's estimated matte as it is", "sequence", bool, flag="--no-smooth-mattes",
           in_id=ALWAYS),
    _number("window", 8, "frames diffused together (0: every frame in one window, as Light-A-Video does; its "
            "memory grows with the frames)", "sequence", None, 0, C.SEQUENCE_MAX_WINDOW, int, in_id=ALWAYS),
    Option("layers", DEFAULT_LAYERS, lambda v: V.pattern("layers", v, (DEFAULT_LAYERS,)),
           "the attention layers consistency acts on: up-but-last (Light-A-Video's) or a regular expression "
           "over the UNet's module names", "sequence", str, in_id=ALWAYS),
    Option("masks", None, _kept, "a folder with one mask per frame, in name order", "sequence", Path,
           in_id=ALWAYS),
    Option("background_fit", "hold", lambda v: V.choice("background_fit", v, BACKGROUND_FITS),
           "a background video (or folder) shorter than the frames: hold its last frame (the default), loop "
           "it, or exact (refuse unless the lengths match)", "sequence", str, choices=BACKGROUND_FITS,
           in_id=ALWAYS),
    _number("hdri_turn", 0.0, "degrees the camera's heading in the panorama turns with each frame (a turntable)",
            "sequence", "DEGREES", -360, 360, in_id=ALWAYS),
    _number("start", 0, "the first frame", "sequence", None, 0, None, int, in_id=ALWAYS),
    _number("end", None, "the frame to stop before (default: the last)", "sequence", None, 0, None, int,
            in_id=ALWAYS),
    _number("stride", 1, "every N-th frame", "sequence", None, 1, None, int, in_id=ALWAYS),
    Option("batch_noise", False, lambda v: V.boolean("batch_noise", v), "Light-A-Video's noise: every frame of "
           "a window starts from one noise, and one generator draws each step's noise frame after frame (instead "
           "of a seed per frame)", "sequence", bool),
)  # fmt: skip
_INT = C.InputSpec("clip_skip", int, "")
_SOURCE = C.InputSpec("light_source", str, "")

RELIGHT: tuple[Option, ...] = HOSTED + EXTRAS
BY_NAME: dict[str, Option] = {o.name: o for o in (*RELIGHT, *OUTPUT, *SEQUENCE)}
# The options that name a file (or a folder of them): a manifest's are relative to its folder.
FILES: tuple[str, ...] = tuple(o.name for o in BY_NAME.values() if o.is_file)
RELIGHT_FILES: tuple[str, ...] = tuple(o.name for o in RELIGHT if o.is_file)


def default(name: str) -> Any:
    return BY_NAME[name].default
