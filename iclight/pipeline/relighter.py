"""The Relighter: loads once, relights many times, with either IC-Light model or both (fbc:
a subject and a background; fc: a subject, a prompt and a light).

It holds the loaded models and their caches, nothing else. A relight is a checked `RelightSpec`
(`core/spec.py`); what varies per run beyond it (the stop check, previews, progress bars, a
sequence's consistent light attention) comes as arguments of the run.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..core import config
from ..core import constants as C
from ..core.hooks import NO_HOOKS, Hooks
from ..core.lora import Lora
from ..core.lora import parse as parse_loras
from ..core.options import STOCHASTIC_SAMPLERS
from ..core.spec import ImageLike, RelightSpec, Settings, relight_spec, sequence_spec
from ..core.validation import InputError, choice
from ..imaging import hdri
from ..imaging.compositing import on_grey
from ..imaging.images import load_image_and_alpha
from ..imaging.lighting import light_background
from ..imaging.normals import normal_map
from ..imaging.tensors import to_unit
from ..matting import mattes as matting
from ..models.attention import Consistency
from ..models.compiled import boot_compiled
from ..models.cudagraphs import Capture
from ..models.loras import Loras
from ..models.prompts import PromptEncoder
from ..models.sharing import Member
from ..models.speed import SpeedSettings, attention_backend
from ..models.speed import apply as apply_speed
from ..models.timing import StageTimer
from ..models.unet import ConditionedUNet
from ..store import layout
from ..store.basemodel import resolve as resolve_base
from ..store.fetch import HashCache
from . import windows
from .loading import Components, load_components, load_matting, resolve_device
from .passes import Diffusion, Models, pixels
from .prepare import Caches, Prepared, finish, matte_of, prepare_relight
from .results import GPUOutOfMemoryError, RelightResult, SequenceResult, Stopped

log = logging.getLogger("iclight")


class Relighter:
    """Holds every model, loaded once, and their caches; every run takes what varies as arguments."""

    def __init__(
        self,
        components: Components,
        device: torch.device,
        weights_root: Path | None = None,
        default_loras: tuple[Lora, ...] = (),
    ) -> None:
        self.device = device
        self.weights_root = weights_root
        self.weight_files = components.sources
        self._weights_hashes: dict[str, str] | None = None
        self.base_model = components.base
        self.default_loras = default_loras  # what a relight naming no LoRAs gets (ICLIGHT_LORAS)
        self.adapters = Loras(tuple(components.unets.values()), components.text_encoder)
        self.unets = {m: ConditionedUNet(unet, self.adapters) for m, unet in components.unets.items()}
        parts = (components.text_encoder, components.tokenizer)
        self._models = {m: Models(components.vae, unet, *parts) for m, unet in self.unets.items()}
        self.prompts = PromptEncoder(components.tokenizer, components.text_encoder)
        default = next(iter(components.matters), matting.NONE)
        loader = partial(self._load_matting, weights_root) if weights_root else None
        self.mattes = matting.Mattes(default, components.matters, loader)
        self.panoramas = hdri.Panoramas()
        self.speed = SpeedSettings()
        self.compile_report: dict[str, float | bool | int] | None = None
        self._lock = threading.RLock()  # one run at a time on the models

    @classmethod
    def load(
        cls,
        weights_dir: str | os.PathLike | None = None,
        device: str | None = None,
        use_prepared: bool = True,
        speed: SpeedSettings | None = None,
        matting_choice: str | None = None,
        base_model: str | os.PathLike | None = None,
        base_vae: str | os.PathLike | None = None,
        loras: list | None = None,
        graph_capture: Capture | None = None,
        model: str | None = None,
    ) -> Relighter:
        """Load from `weights_dir` (default: ICLIGHT_WEIGHTS_DIR, else weights/) onto `device`.

        A valid prepared UNet is used when present, unless `use_prepared` is False. `speed`
        defaults to `SpeedSettings.default` (see `models/speed.py`); a compiled model is warmed up
        here. `matting_choice` (default ICLIGHT_MATTING) is the matting model loaded (see
        `matting/`). `base_model` (default ICLIGHT_BASE_MODEL) replaces the bundled SD1.5
        (`models/basemodel.py`; `base_vae`: its VAE file), `loras` (default ICLIGHT_LORAS) are
        loaded now and applied to every relight that names none of its own (`models/loras.py`).
        `graph_capture` records the UNet's graphs where `speed` asks for them (default: CUDA
        graph capture; the CPU's emulation of a deployment gives one that runs there). `model`
        (default ICLIGHT_MODEL): fbc, fc or both, the IC-Light models served; a relight naming
        none gets the first (fbc where both are)."""
        config.check()
        picked = choice("matting", matting_choice or config.MATTING.read(), C.MATTING_CHOICES)
        served = C.served(choice("model", model or config.MODEL.read(), C.MODEL_CHOICES))
        base = resolve_base(base_model or config.BASE_MODEL.read(), base_vae)
        defaults = parse_loras(loras if loras is not None else [(str(p), s) for p, s in config.LORAS.read()]) or ()
        dev = resolve_device(device)
        start = time.perf_counter()
        root = layout.weights_dir(weights_dir)
        relighter = cls(load_components(root, dev, use_prepared, picked, base, served), dev, root, defaults)
        relighter.adapters.activate(defaults)  # before the speed settings: fusing and warm-up see them
        settings = speed or SpeedSettings.default(dev)
        compiled = apply_speed(settings, tuple(relighter.unets.values()), relighter.vae, dev, graph_capture)
        relighter.speed = settings
        if settings.compile:
            relighter.compile_report = boot_compiled(settings, dev, root, relighter.warm_up, compiled)
        log.info("ready on %s (%s) in %.2f s", dev, settings.label, time.perf_counter() - start)
        return relighter

    @property
    def model(self) -> str:
        """The IC-Light model a relight naming none uses: the first served."""
        return next(iter(self.unets))

    @property
    def unet(self) -> ConditionedUNet:
        """The default model's UNet."""
        return self.unets[self.model]

    @property
    def models(self) -> Models:
        return self._models[self.model]

    @property
    def vae(self):
        return self.models.vae

    @property
    def matting(self) -> str:
        """The matting choice a relight uses unless it asks for another."""
        return self.mattes.default

    @property
    def rmbg(self) -> torch.nn.Module | None:
        return self.mattes.model(matting.RMBG)

    def _load_matting(self, root: Path, picked: str) -> matting.Matter:
        matter = load_matting(root, self.device, picked)
        self.weight_files = (*self.weight_files, *matting.FILES[picked])
        self._weights_hashes = None
        return matter

    def weights_hashes(self) -> dict[str, str]:
        """sha256 of each weight file this relighter was loaded from (hashed once, then cached on disk)."""
        if self._weights_hashes is None:
            hashes = HashCache(self.weights_root) if self.weights_root else None
            self._weights_hashes = {rel: hashes.sha256(rel) for rel in self.weight_files} if hashes else {}
        return self._weights_hashes

    def loras_of(self, spec: RelightSpec) -> tuple[Lora, ...]:
        """The LoRAs a relight runs with: its own, else (None) the relighter's defaults."""
        return self.default_loras if spec.loras is None else spec.loras

    @torch.inference_mode()
    def matte(
        self, subject: ImageLike, mask: ImageLike | None = None, matting_choice: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The matte (HxW in [0, 1]) and the subject on grey, as a relight would make them."""
        image, alpha = load_image_and_alpha(subject, "subject_image")
        with self._lock:  # a model's work, never beside another run (a CUDA graph recording)
            found = matte_of(image, alpha, mask, self.mattes, matting_choice)
        return found[..., 0], on_grey(image, found, C.RELIGHT_SIGMA)

    def warm_up(self) -> None:
        """2-step relights through both passes at the hosted defaults' sizes with every model
        served, with the relighter's LoRAs and, where it has some, without (compiles a compiled
        model for what it serves)."""
        subject = np.full((64, 64, 3), 200, np.uint8)
        mask = np.full((64, 64), 255, np.uint8)
        sizes = {name: C.default(name) for name in ("width", "height", "highres_scale")}  # the sizes served most
        for model in self.unets:
            for loras in (None, []) if self.default_loras else (None,):
                self.relight(
                    subject, None, "warm up", model=model, light_source=C.LEFT_LIGHT, steps=2, seed=0, mask=mask,
                    loras=loras, **sizes,
                )  # fmt: skip

    def relight(self, subject: ImageLike, background: ImageLike | None, prompt: str, **options: Any) -> RelightResult:
        """Relight `subject` to match `background` (or a synthetic light) as `prompt` says.

        Every hosted input is a keyword with the hosted default; beyond them `mask`, the light
        (`light=Light(...)` or its settings, `light_map`, `light_mix`), `detail_transfer`,
        `keep_colors`, `keep_background`, `matting`, `loras`, `sampler`, `light_start`,
        `clip_skip`, `model` (default: the first served), `lowres_denoise` and `highres_pass`:
        `iclight.core.options` says what each does, docs/ shows them in use."""
        return self.run(relight_spec(subject, background, prompt, **self._with_model(options)))

    def relight_sequence(
        self, frames: Any, background: ImageLike | None, prompt: str, **options: Any
    ) -> SequenceResult:
        """Relight a product's views or a video's frames with one light (docs/sequences.md).

        `frames`: a list of images, a folder of images or a video file (frames `start` to `end`,
        every `stride`-th; a phone clip read upright). `background`: one image, or a video or a
        folder of images (frame k under frame k; `background_fit` for a shorter one). Every option
        of `relight` applies but `mask` (`masks`: one per frame, a list or a folder),
        `number_of_images` and `compute_normal`; `consistency`, `shared_noise`, `smooth_mattes`,
        `window`, `layers` and `hdri_turn` say how frames are relit together. Every frame is held
        in memory: the command line and manifests write long clips as they go."""
        return windows.run(self, sequence_spec(frames, background, prompt, **self._with_model(options)), NO_HOOKS)

    def _with_model(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options with this relighter's model where they name none."""
        return options if options.get("model") is not None else options | {"model": self.model}

    def check_served(self, spec: RelightSpec) -> None:
        """An InputError naming `model` where this relighter does not serve the relight's."""
        if spec.model not in self.unets:
            raise InputError(
                f"model: {spec.model!r} is not loaded here (this relighter serves {', '.join(self.unets)}); load it "
                f"with model={spec.model!r} or 'both' (ICLIGHT_MODEL)"
            )

    def run(self, spec: RelightSpec, hooks: Hooks = NO_HOOKS) -> RelightResult:
        """One checked relight (see `relight`)."""
        self.check_served(spec)
        with self._lock:
            try:
                with attention_backend(self.speed.attention):
                    return self._relight(spec, hooks)
            except torch.cuda.OutOfMemoryError:
                pass  # handled below, once the traceback (and the tensors its frames hold) is gone
        raise _out_of_memory(spec.count, spec.settings)

    def share_key(self, spec: RelightSpec) -> tuple | None:
        """Relights with equal keys can share one diffusion batch (`run_shared`); None: this one cannot."""
        if spec.compute_normal or spec.sampler in STOCHASTIC_SAMPLERS:
            return None
        chunks = max(len(self.prompts.token_chunks(text)) for text in spec.texts)
        return (spec.settings, chunks, self.loras_of(spec))

    def run_shared(
        self,
        specs: list[RelightSpec],
        hooks: Hooks = NO_HOOKS,
        consistency: Consistency | None = None,
        one_generator: bool = False,
    ) -> list[RelightResult | Exception]:
        """Relights with one `share_key` in one diffusion batch: each its own subject, background
        or light, prompts, seed and image count, and its own images; `consistency`: a sequence
        window's light attention; `one_generator`: the first relight's seed draws every member's
        noise in turn (a sequence's `batch_noise`), not each its own. A relight whose inputs fail
        fails alone (its exception in its place); out of GPU memory, each is retried alone."""
        keys = {self.share_key(s) for s in specs}
        if len(keys) != 1 or None in keys:
            raise ValueError("run_shared: the requests cannot share a batch (see share_key)")
        self.check_served(specs[0])
        with self._lock:
            return self._run_shared(specs, hooks, consistency, one_generator)

    def _run_shared(
        self, specs, hooks: Hooks, consistency: Consistency | None, one_generator: bool
    ) -> list[RelightResult | Exception]:
        s = specs[0].settings
        outcomes: list[RelightResult | Exception | None] = [None] * len(specs)
        shared = StageTimer(self.device, quiet=True)
        self._use(specs[0])
        with shared("text"):  # every member's prompts in one pass of the text encoder
            self.prompts.pairs([spec.texts for spec in specs], s.clip_skip, self.adapters.text_key)
        ready = []
        for i, spec in enumerate(specs):
            try:
                ready.append((i, self._prepared(spec)))
            except (InputError, ValueError, OSError) as e:
                outcomes[i] = e
        if ready:
            try:
                unet = self.unets[s.model]
                processors = consistency.processors(unet.unet) if consistency else {}
                with attention_backend(self.speed.attention), unet.attention(processors):
                    results = self._shared_passes([p for _, p in ready], s, shared, hooks, one_generator)
                for (i, _), result in zip(ready, results, strict=True):
                    outcomes[i] = result
            except Stopped:
                raise
            except Exception as e:  # out of memory above all: each relight is then retried alone
                log.warning("a shared batch of %d relights failed (%s); running each alone", len(ready), e)
                _free_memory()
                for i, _ in ready:
                    outcomes[i] = self._alone(specs[i], hooks)
        return outcomes

    def _alone(self, spec: RelightSpec, hooks: Hooks) -> RelightResult | Exception:
        try:
            return self.run(spec, hooks)
        except (GPUOutOfMemoryError, InputError, ValueError, OSError) as e:
            return e

    def _use(self, spec: RelightSpec) -> None:
        """The LoRAs `spec` asks for, made active (nothing is reloaded; every cache that depends on
        them is keyed on them)."""
        self.adapters.activate(self.loras_of(spec))

    def _prepared(self, spec: RelightSpec, live: bool = False) -> Prepared:
        caches = Caches(self.mattes, self.prompts, self.panoramas)
        return prepare_relight(spec, caches, self.adapters.text_key, self.device, live)

    def _relight(self, spec: RelightSpec, hooks: Hooks) -> RelightResult:
        self._use(spec)
        p = self._prepared(spec, live=True)
        s, count = spec.settings, spec.count
        diffusion = Diffusion(self._models[spec.model], s, count, hooks)
        if spec.compute_normal:
            runs = [
                diffusion.run(
                    p.fg, light_background(light, s.width, s.height, p.bg_upload), p.embeds, 1, spec.seed, p.stage
                )
                for light in C.NORMAL_LIGHTS
            ]
            images = normal_map(*(to_unit(r)[0] for r in runs), p.matte)
        else:
            decoded = diffusion.run(p.fg, p.bg, p.embeds, count, spec.seed, p.stage)
            images = [finish(spec, x, p) for x in pixels(s, decoded)]
        return RelightResult([Image.fromarray(x) for x in images], spec.seed, p.matte[..., 0], p.fg, p.stage.result())

    def _shared_passes(
        self, prepared: list[Prepared], s: Settings, stage: StageTimer, hooks: Hooks, one_generator: bool
    ) -> list[RelightResult]:
        """Both passes for every prepared relight at once (see `models/sharing.py`); `stage` times
        what the members share."""
        seeded = [torch.Generator(device=self.device).manual_seed(p.spec.seed) for p in prepared]
        generators = [seeded[0]] * len(prepared) if one_generator else seeded
        members = [Member(p.spec.count, g) for p, g in zip(prepared, generators, strict=True)]
        pos = torch.cat([p.embeds[0].expand(p.spec.count, -1, -1) for p in prepared])
        neg = torch.cat([p.embeds[1].expand(p.spec.count, -1, -1) for p in prepared])
        count = sum(m.count for m in members)
        diffusion = Diffusion(self._models[s.model], s, count, hooks, members, one_start=one_generator)
        decoded = diffusion.run([p.fg for p in prepared], [p.bg for p in prepared], (pos, neg), 1, None, stage)
        made = pixels(s, decoded)
        shared = stage.result()
        results, start = [], 0
        for p in prepared:
            own = made[start : start + p.spec.count]
            start += p.spec.count
            images = [Image.fromarray(finish(p.spec, x, p)) for x in own]
            results.append(RelightResult(images, p.spec.seed, p.matte[..., 0], p.fg, p.stage.result() | shared))
        return results


def _free_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def _out_of_memory(count: int, s: Settings) -> GPUOutOfMemoryError:
    _free_memory()
    return GPUOutOfMemoryError(
        f"out of GPU memory for {count} image(s) at {s.width}x{s.height} (high-res {s.highres_size[0]}x"
        f"{s.highres_size[1]}); try fewer images, a smaller size or a lower highres_scale"
    )
