"""The Relighter: loads once, relights many times (background-conditioned IC-Light)."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import basemodel, config, layout, lighting, samplers, sequence
from . import constants as C
from . import matting as matting_models
from .basemodel import BaseModel
from .colors import keep_colors
from .compositing import keep_background as composite_background
from .compositing import transfer_detail
from .fetch import HashCache
from .imaging import (
    ImageLike,
    fit_mask,
    light_background,
    load_image,
    load_image_and_alpha,
    resize,
    resize_and_center_crop,
    to_tensor,
    to_uint8,
    to_unit,
    unit_to_uint8,
)
from .lighting import Light, condition_image
from .loading import Components, load_components, load_matting, resolve_device
from .loras import Lora, Loras
from .loras import parse as lora_list
from .normals import normal_map
from .previews import Previews
from .prompts import PromptEncoder
from .rmbg import on_grey
from .sharing import Member, SharedImage2Image, SharedText2Image
from .speed import SpeedSettings, attention_backend, boot_compiled
from .speed import apply as apply_speed
from .timing import StageTimer
from .unet import ConditionedUNet
from .validation import InputError, denoise, fraction, random_seed, validate

log = logging.getLogger("iclight")

# CUDA tuning of the VAE.
VAE_TILE_ABOVE = 2048  # high-res side (px) above which the VAE works in tiles on CUDA
# High-res pixels of a whole batch above which the VAE takes one image at a time on CUDA. Below,
# it takes the batch at once like the hosted code: 6% faster with 4 images at the defaults on an
# H200, at twice the peak memory (docs/performance.md).
VAE_SLICE_ABOVE = 4_000_000


# The hosted inputs a relight takes as keywords (the images are its first two arguments, and the
# output encoding is the caller's).
HOSTED_KEYWORDS = tuple(
    spec.name
    for spec in C.INPUTS
    if spec.name not in ("subject_image", "background_image", "output_format", "output_quality")
)


class Stopped(RuntimeError):
    """A diffusion ended early because nobody waits for its images any more (see `Relighter.stop`)."""


class GPUOutOfMemoryError(RuntimeError):
    """A request too big for the GPU; memory was freed and the next request can run."""


@dataclass
class RelightResult:
    """Images in generation order, with what made them."""

    images: list[Image.Image]
    seed: int
    matte: np.ndarray  # HxW floats in [0, 1], at the subject's size
    subject_on_grey: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    width: int
    height: int
    steps: int
    cfg: float
    highres_scale: float
    highres_denoise: float
    sampler: str = samplers.HOSTED
    light_start: float | None = None  # the first pass starts from the light's latent at this denoise

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
        return _schedule(self.steps, self.highres_denoise)

    @property
    def first_steps(self) -> int:
        """The first pass's schedule when it starts from the light (`light_start`), by the same rule."""
        return _schedule(self.steps, self.light_start or 1.0)

    def vae_slicing(self, count: int) -> bool:
        """Whether the VAE should take `count` images one at a time (on CUDA), to bound memory."""
        hw, hh = self.highres_size
        return count * hw * hh > VAE_SLICE_ABOVE

    def vae_tiling(self) -> bool:
        """Whether the VAE should work in tiles (on CUDA); tiles change pixels a little."""
        return max(self.highres_size) > VAE_TILE_ABOVE


def _ran(schedule: int, denoise: float) -> int:
    """The steps an image-to-image pass over `schedule` runs at `denoise` (diffusers' rule)."""
    return min(int(schedule * denoise), schedule)


def _schedule(steps: int, denoise: float) -> int:
    """`steps / denoise` steps, of which an image-to-image pass runs the last `int(schedule *
    denoise)`; at least one."""
    schedule = round(steps / denoise)
    while int(schedule * denoise) < 1:
        schedule += 1
    return schedule


class Relighter:
    """Holds every model and both diffusers pipelines, which share one set of modules."""

    def __init__(self, components: Components, device: torch.device, weights_root: Path | None = None) -> None:
        self.weights_root = weights_root
        self.weight_files = components.sources
        self._weights_hashes: dict[str, str] | None = None
        self.device = device
        self.vae = components.vae
        default = next(iter(components.matters), matting_models.NONE)
        loader = partial(self._load_matting, weights_root) if weights_root else None
        self.mattes = matting_models.Mattes(default, components.matters, loader)
        self.unet = ConditionedUNet(components.unet)
        self.prompts = PromptEncoder(components.tokenizer, components.text_encoder)
        self.base_model: BaseModel | None = components.base
        self.loras = Loras(components.unet, components.text_encoder)
        self.default_loras: tuple[Lora, ...] = ()  # what a relight naming no LoRAs gets (ICLIGHT_LORAS)
        self.scheduler = scheduler = samplers.make(samplers.HOSTED)
        self._samplers = {samplers.HOSTED: scheduler}
        modules = dict(
            vae=self.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            image_encoder=None,
            requires_safety_checker=False,
        )
        self.speed = SpeedSettings()
        # Asked between denoising steps where set (the server: are all of a batch's requests
        # canceled?); True ends the diffusion with `Stopped`.
        self.stop: Callable[[], bool] | None = None
        # Set by the web app around a relight: previews of the latents (`previews.py`); None elsewhere.
        self.previews: Previews | None = None
        self.compile_report: dict[str, float | bool | int] | None = None
        self.t2i = SharedText2Image(**modules)
        self.i2i = SharedImage2Image(**modules)

    @property
    def matting(self) -> str:
        """The matting choice a relight uses unless it asks for another."""
        return self.mattes.default

    @property
    def rmbg(self) -> torch.nn.Module | None:
        return self.mattes.model(matting_models.RMBG)

    def _load_matting(self, root: Path, choice: str) -> matting_models.Matter:
        matter = load_matting(root, self.device, choice)
        self.weight_files = (*self.weight_files, *matting_models.FILES[choice])
        self._weights_hashes = None
        return matter

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
    ) -> Relighter:
        """Load from `weights_dir` (default: ICLIGHT_WEIGHTS_DIR, else weights/) onto `device`.

        A valid prepared UNet is used when present, unless `use_prepared` is False. `speed`
        defaults to `SpeedSettings.default` (see `speed.py`); a compiled model is warmed up here.
        `matting_choice` (default ICLIGHT_MATTING) is the matting model loaded (see `matting.py`).
        `base_model` (default ICLIGHT_BASE_MODEL) replaces the bundled SD1.5 (`basemodel.py`;
        `base_vae`: its VAE file), `loras` (default ICLIGHT_LORAS) are applied to every relight
        that names none of its own (`loras.py`)."""
        config.check()
        choice = matting_models.check(matting_choice or config.MATTING.read())
        base = basemodel.resolve(base_model or config.BASE_MODEL.read(), base_vae)
        dev = resolve_device(device)
        start = time.perf_counter()
        root = layout.weights_dir(weights_dir)
        relighter = cls(load_components(root, dev, use_prepared, choice, base), dev, root)
        defaults = loras if loras is not None else [(str(p), scale) for p, scale in config.LORAS.read()]
        relighter.default_loras = lora_list(defaults) or ()
        settings = speed or SpeedSettings.default(dev)
        apply_speed(settings, relighter.unet, relighter.vae, dev)
        relighter.speed = settings
        if settings.compile:
            relighter.compile_report = boot_compiled(settings, dev, root, relighter.warm_up)
        log.info("ready on %s (%s) in %.2f s", dev, settings.label, time.perf_counter() - start)
        return relighter

    @torch.inference_mode()
    def matte(
        self, subject: ImageLike, mask: ImageLike | None = None, matting_choice: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The matte (HxW in [0, 1]) and the subject on grey, as a relight would make them."""
        image, alpha = load_image_and_alpha(subject, "subject_image")
        matte = self._matte(image, alpha, mask, matting_choice)
        return matte[..., 0], on_grey(image, matte, C.RELIGHT_SIGMA)

    def warm_up(self) -> None:
        """A 2-step relight through both passes at the hosted defaults' sizes (compiles a compiled model)."""
        subject = np.full((64, 64, 3), 200, np.uint8)
        mask = np.full((64, 64), 255, np.uint8)
        sizes = {name: C.default(name) for name in ("width", "height", "highres_scale")}
        self.relight(subject, None, "warm up", light_source=C.LEFT_LIGHT, steps=2, seed=0, mask=mask, **sizes)

    def models_record(self, loras: list | None = None) -> dict[str, Any]:
        """What a recipe keeps of the models beyond the weights folder: the base model's files and
        the LoRAs a relight with `loras` (None: the defaults) used, each with its sha256."""
        used = self._loras(lora_list(loras))
        base = None
        if self.base_model is not None:
            base = {"path": str(self.base_model.path), "files": self.base_model.sha256()}
        return {"base_model": base, "loras": [lora.record() for lora in used]}

    def _loras(self, asked: tuple[Lora, ...] | None) -> tuple[Lora, ...]:
        """The LoRAs a relight runs with: its own, else (None) the relighter's defaults."""
        return self.default_loras if asked is None else asked

    def show_step_progress(self, enabled: bool) -> None:
        """Diffusers' per-step progress bars (on by default; a batch shows its own per job)."""
        for pipe in (self.t2i, self.i2i):
            pipe.set_progress_bar_config(disable=not enabled)

    def weights_hashes(self) -> dict[str, str]:
        """sha256 of each weight file this relighter was loaded from (hashed once, then cached on disk)."""
        if self._weights_hashes is None:
            hashes = HashCache(self.weights_root) if self.weights_root else None
            self._weights_hashes = {rel: hashes.sha256(rel) for rel in self.weight_files} if hashes else {}
        return self._weights_hashes

    @torch.inference_mode()
    def relight(
        self,
        subject: ImageLike,
        background: ImageLike | None,
        prompt: str,
        *,
        appended_prompt: str = C.default("appended_prompt"),
        negative_prompt: str = C.default("negative_prompt"),
        compute_normal: bool = C.default("compute_normal"),
        width: int = C.default("width"),
        height: int = C.default("height"),
        steps: int = C.default("steps"),
        cfg: float = C.default("cfg"),
        highres_scale: float = C.default("highres_scale"),
        highres_denoise: float = C.default("highres_denoise"),
        light_source: str = C.default("light_source"),
        seed: int | None = None,
        number_of_images: int = C.default("number_of_images"),
        mask: ImageLike | None = None,
        detail_transfer: float = 0.0,
        keep_background: bool = False,
        light: Light | None = None,
        light_map: ImageLike | None = None,
        light_mix: float | None = None,
        keep_colors: float = 0.0,
        matting: str | None = None,
        loras: list | None = None,
        sampler: str = samplers.HOSTED,
        light_start: float | None = None,
    ) -> RelightResult:
        """Relight `subject` to match `background` (or a synthetic light) as `prompt` says.

        Beyond the hosted model: `mask` replaces background removal (white = subject),
        `detail_transfer` (0..1) restores the subject's fine detail inside the matte,
        `keep_background` puts the relit subject over the background's own pixels, `light` (a
        `lighting.Light`) or `light_map` (an image) is the light instead of a preset, `light_mix`
        (0..1) blends the background with the light, and `keep_colors` (0..1) keeps the
        subject's own chroma inside the matte (see `lighting.py` and `colors.py`). `matting`
        (`rmbg-1.4`, `birefnet`, `birefnet-lite` or `none`; default the loaded one, see
        `matting.py`) cuts out a subject without mask or alpha. `loras` (FILE, FILE:SCALE or
        (FILE, SCALE) each; default the relighter's) are applied at their scales (`loras.py`),
        `sampler` is one of `samplers.SAMPLERS`, and `light_start` (0..1] starts the first pass
        from the light's latent at that denoise (docs/models.md).
        """
        return self.run(self._request({k: v for k, v in locals().items() if k != "self"}))

    def relight_sequence(
        self,
        frames,
        background: ImageLike | None,
        prompt: str,
        *,
        consistency: float = 0.5,
        shared_noise: bool = True,
        smooth_mattes: bool = True,
        window: int = sequence.WINDOW,
        layers: str = sequence.cla.DEFAULT_LAYERS,
        masks=None,
        seed: int | None = None,
        start: int = 0,
        end: int | None = None,
        stride: int = 1,
        **options,
    ) -> sequence.SequenceResult:
        """Relight a product's views or a video's frames with one light (`sequence.py`, docs/sequences.md).

        `frames`: a list of images, a folder of images or a video file (frames `start` to `end`,
        every `stride`-th). Every keyword of `relight` applies but `mask` (`masks`: one per frame,
        a list or a folder) and `number_of_images`. `consistency` (0..1) is consistent light
        attention's gamma (0: independent frames), `shared_noise` gives every frame the same noise,
        `smooth_mattes` smooths the estimated mattes over neighbouring frames, `window` frames run
        together (at most 12), `layers` chooses the attention layers (`consistency.layers`)."""
        options_ = sequence.SequenceOptions(consistency, shared_noise, smooth_mattes, window, layers)
        return sequence.relight_sequence(
            self, frames, background, prompt, options=options_, masks=masks, seed=seed, start=start, end=end,
            stride=stride, **options,
        )  # fmt: skip

    def request(self, subject: ImageLike, background: ImageLike | None, prompt: str, **options) -> Request:
        """A relight checked now and run later (`run`, `run_shared`): `relight`'s keywords,
        defaults, checks and messages."""
        bound = inspect.signature(self.relight).bind(subject, background, prompt, **options)
        bound.apply_defaults()
        return self._request(bound.arguments)

    def _request(self, given: dict) -> Request:
        hosted = {"subject_image": given["subject"], "background_image": given["background"]}
        hosted |= {k: given[k] for k in HOSTED_KEYWORDS}
        a = validate(hosted, optional=("background_image",))
        extras = Extras(*(given[f.name] for f in fields(Extras))).check(a)
        sampler, start = samplers.check(given["sampler"]), _light_start(given["light_start"], a)
        s = Settings(a["width"], a["height"], a["steps"], a["cfg"], a["highres_scale"], a["highres_denoise"])
        return Request(a, extras, replace(s, sampler=sampler, light_start=start), given["subject"], given["background"])

    def _use(self, request: Request) -> None:
        """The sampler and LoRAs `request` asks for, made current (nothing is reloaded)."""
        loras = self._loras(request.extras.loras)
        if self.loras.activate(loras):
            self.prompts.clear()  # LoRAs on the text encoder change the embeddings
        self.unet.eager = bool(loras)  # CUDA graphs were recorded without the adapters
        name = request.settings.sampler
        if name not in self._samplers:
            self._samplers[name] = samplers.make(name)
        self.scheduler = self.t2i.scheduler = self.i2i.scheduler = self._samplers[name]

    def run(self, request: Request) -> RelightResult:
        """One checked relight (see `relight`)."""
        a, s = request.a, request.settings
        cuda, count = self.device.type == "cuda", 1 if a["compute_normal"] else a["number_of_images"]
        self.vae.use_tiling = cuda and s.vae_tiling()
        self.vae.use_slicing = cuda and s.vae_slicing(count)
        self._use(request)
        try:
            with attention_backend(self.speed.attention):
                return self._relight(a, s, request.subject, request.background, request.extras)
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, once the traceback (and the tensors its frames hold) is gone
        raise self._out_of_memory(count, s)

    def _on_step(self, stage: str, total: int) -> Callable | None:
        """What runs after each denoising step: the stop check and the previews, where set."""
        if self.stop is None and self.previews is None:
            return None
        previews = self.previews

        def on_step(pipe, step: int, timestep, tensors: dict) -> dict:
            self._check_stop(pipe, step, timestep, tensors)
            if previews is not None:
                previews.step(stage, step + 1, total, tensors["latents"])
            return tensors

        return on_step

    def _check_stop(self, pipe, step: int, timestep, tensors: dict) -> dict:
        if self.stop is not None and self.stop():
            raise Stopped("every relight of this diffusion batch was canceled")
        return tensors

    def _free_memory(self) -> None:
        gc.collect()
        torch.cuda.empty_cache()

    def _out_of_memory(self, count: int, s: Settings) -> GPUOutOfMemoryError:
        self._free_memory()
        return GPUOutOfMemoryError(
            f"out of GPU memory for {count} image(s) at {s.width}x{s.height} (high-res {s.highres_size[0]}x"
            f"{s.highres_size[1]}); try fewer images, a smaller size or a lower highres_scale"
        )

    def share_key(self, request: Request) -> tuple | None:
        """Requests with equal keys can share one diffusion batch (`run_shared`); None: this one cannot."""
        a = request.a
        if a["compute_normal"] or request.settings.sampler in samplers.STOCHASTIC:
            return None
        chunks = max(len(self.prompts.token_chunks(text)) for text in _texts(a))
        return (request.settings, chunks, self._loras(request.extras.loras))

    def run_shared(self, requests: list[Request]) -> list[RelightResult | Exception]:
        """Relights with one `share_key` in one diffusion batch: each its own subject, background
        or light, prompts, seed and image count, and its own images. A relight whose inputs fail
        fails alone (its exception in its place); out of GPU memory, each is retried alone."""
        keys = {self.share_key(r) for r in requests}
        if len(keys) != 1 or None in keys:
            raise ValueError("run_shared: the requests cannot share a batch (see share_key)")
        s = requests[0].settings
        outcomes: list[RelightResult | Exception | None] = [None] * len(requests)
        shared = StageTimer(self.device, quiet=True)
        self._use(requests[0])
        with shared("text"):  # every member's prompts in one pass of the text encoder
            self.prompts.pairs([_texts(r.a) for r in requests])
        ready = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, self._prepared(request)))
            except (InputError, ValueError, OSError) as e:
                outcomes[i] = e
        if ready:
            count = sum(p.count for _, p in ready)
            cuda = self.device.type == "cuda"
            self.vae.use_tiling = cuda and s.vae_tiling()
            self.vae.use_slicing = cuda and s.vae_slicing(count)
            try:
                with attention_backend(self.speed.attention):
                    results = self._shared_passes([p for _, p in ready], s, shared)
                for (i, _), result in zip(ready, results, strict=True):
                    outcomes[i] = result
            except Stopped:
                raise
            except Exception as e:  # out of memory above all: each relight is then retried alone
                log.warning("a shared batch of %d relights failed (%s); running each alone", len(ready), e)
            if any(outcomes[i] is None for i, _ in ready):
                self._free_memory()
                for i, _ in ready:
                    outcomes[i] = self._alone(requests[i])
        return outcomes

    def _alone(self, request: Request) -> RelightResult | Exception:
        try:
            return self.run(request)
        except (GPUOutOfMemoryError, InputError, ValueError, OSError) as e:
            return e

    def _relight(
        self,
        a: dict,
        s: Settings,
        subject: ImageLike,
        background: ImageLike | None,
        extras: Extras,
    ) -> RelightResult:
        p = self._prepared(Request(a, extras, s, subject, background), live=True)
        if a["compute_normal"]:
            runs = [
                self._two_passes(
                    p.fg, light_background(light, s.width, s.height, p.bg_upload), p.embeds, s, 1, p.seed, p.stage
                )
                for light in C.NORMAL_LIGHTS
            ]
            images = normal_map(*(r[0] for r in runs), p.matte)
        else:
            floats = self._two_passes(p.fg, p.bg, p.embeds, s, p.count, p.seed, p.stage)
            images = [extras.finish(unit_to_uint8(x), p.image, p.bg_upload, p.matte[..., 0]) for x in floats]
        return RelightResult([Image.fromarray(x) for x in images], p.seed, p.matte[..., 0], p.fg, p.stage.result())

    def _prepared(self, request: Request, live: bool = False) -> Prepared:
        """Everything a relight needs before its diffusion: the seed, images, matte, condition and
        prompt embeddings. `live`: stage times are logged as they end (else kept for later)."""
        a, extras, s = request.a, request.extras, request.settings
        seed = random_seed() if a["seed"] is None else a["seed"]
        if live:
            log.info("Using seed: %d", seed)
        stage = StageTimer(self.device, quiet=not live)
        sigma = C.NORMAL_SIGMA if a["compute_normal"] else C.RELIGHT_SIGMA

        image, alpha = load_image_and_alpha(request.subject, "subject_image")  # both first: a bad file fails at once
        bg_upload = None if request.background is None else load_image(request.background, "background_image")
        light_map = None if extras.light_map is None else load_image(extras.light_map, "light_map")
        with stage("background removal"):
            matte = self._matte(image, alpha, extras.mask, extras.matting)
            fg = on_grey(image, matte, sigma)
        with stage("text"):
            embeds = self.prompts(*_texts(a))
        bg = None
        if not a["compute_normal"]:
            bg = condition_image(
                a["light_source"], bg_upload, s.width, s.height, extras.light, light_map, extras.light_mix
            )
        return Prepared(request, seed, stage, image, bg_upload, matte, fg, bg, embeds, a["number_of_images"])

    def _shared_passes(self, prepared: list[Prepared], s: Settings, stage: StageTimer) -> list[RelightResult]:
        """Both passes for every prepared relight at once (see `sharing.py`); `stage` times what
        the members share."""
        members = [Member(p.count, torch.Generator(device=self.device).manual_seed(p.seed)) for p in prepared]
        pos = torch.cat([p.embeds[0].expand(p.count, -1, -1) for p in prepared])
        neg = torch.cat([p.embeds[1].expand(p.count, -1, -1) for p in prepared])
        self.scheduler.members = members
        try:
            floats = self._two_passes([p.fg for p in prepared], [p.bg for p in prepared], (pos, neg), s, 1, None, stage)
        finally:
            self.scheduler.members = None
        shared = stage.result()
        results, start = [], 0
        for p in prepared:
            own = floats[start : start + p.count]
            start += p.count
            images = [p.request.extras.finish(unit_to_uint8(x), p.image, p.bg_upload, p.matte[..., 0]) for x in own]
            timings = p.stage.result() | shared
            results.append(RelightResult([Image.fromarray(x) for x in images], p.seed, p.matte[..., 0], p.fg, timings))
        return results

    def _matte(
        self, image: np.ndarray, alpha: np.ndarray | None, mask: ImageLike | None, choice: str | None = None
    ) -> np.ndarray:
        """A supplied mask, else the subject's own alpha, else the matting model's estimate (HxWx1)."""
        if mask is not None:
            m = load_image(mask, "mask")[..., 0].astype(np.float32) / 255.0
            return fit_mask(m, image.shape[1], image.shape[0])[..., None]
        if alpha is not None:
            return alpha[..., None]
        return self.mattes.estimate(image, choice)

    def _two_passes(
        self,
        fg: np.ndarray,
        bg: np.ndarray,
        embeds: tuple[torch.Tensor, torch.Tensor],
        s: Settings,
        count: int,
        seed: int,
        stage: StageTimer,
    ) -> list[np.ndarray]:
        """Low-res text-to-image, then high-res latent refinement; floats in [0, 1]. In a shared
        batch, `fg` and `bg` are lists (one per member), `seed` is None and the members' own
        generators draw the noise."""
        rng = None if seed is None else torch.Generator(device=self.device).manual_seed(seed)
        pos, neg = embeds
        common = dict(
            prompt_embeds=pos,
            negative_prompt_embeds=neg,
            num_images_per_prompt=count,
            generator=rng,
            output_type="latent",
            guidance_scale=s.cfg,
        )
        low_total = s.steps if s.light_start is None else _ran(s.first_steps, s.light_start)
        with stage("low-res diffusion"):
            cond = self._condition(fg, bg, s.width, s.height)
            on_step = self._on_step("low-res pass", low_total)
            if s.light_start is None:
                latents = self.t2i(
                    width=s.width,
                    height=s.height,
                    num_inference_steps=s.steps,
                    cross_attention_kwargs={"concat_conds": cond},
                    callback_on_step_end=on_step,
                    **common,
                ).images
            else:  # from the light's latent, as IC-Light's text-conditioned demo starts from its light
                latents = self.i2i(
                    image=self._light_latents(bg, s),
                    strength=s.light_start,
                    num_inference_steps=s.first_steps,
                    cross_attention_kwargs={"concat_conds": cond},
                    callback_on_step_end=on_step,
                    **common,
                ).images
        hw, hh = s.highres_size
        with stage("high-res condition"):
            # Before the decode waits for the low-res pass: on CUDA the host resizes fg and bg
            # while the GPU is still busy with the steps queued above.
            cond = self._condition(fg, bg, hw, hh)
        with stage("decode and resize"):
            pixels = [resize(p, hw, hh) for p in to_uint8(self._decode(latents))]
        with stage("high-res encode"):
            latents = self._encode(to_tensor(pixels)).to(device=self.unet.device, dtype=self.unet.dtype)
        with stage("high-res diffusion"):
            latents = self.i2i(
                image=latents,
                strength=s.highres_denoise,
                num_inference_steps=s.highres_steps,
                cross_attention_kwargs={"concat_conds": cond},
                callback_on_step_end=self._on_step("high-res pass", _ran(s.highres_steps, s.highres_denoise)),
                **common,
            ).images
        with stage("final decode"):
            return to_unit(self._decode(latents))

    def _condition(self, fg, bg, width: int, height: int) -> torch.Tensor:
        """fg and bg latents joined on channels, in the UNet's dtype (cast once, not at every step):
        [1, 8, h, w]; in a shared batch, one per image of each member."""
        if isinstance(fg, list):
            counts = self.scheduler.members
            conds = [self._condition(f, b, width, height) for f, b in zip(fg, bg, strict=True)]
            return torch.cat([c.expand(m.count, -1, -1, -1) for c, m in zip(conds, counts, strict=True)])
        pair = [resize_and_center_crop(fg, width, height), resize_and_center_crop(bg, width, height)]
        latents = self._encode(to_tensor(pair))
        return latents.reshape(1, -1, *latents.shape[2:]).to(self.unet.dtype)

    def _light_latents(self, bg, s: Settings) -> torch.Tensor:
        """The light (the condition's background image) as a latent at the low-res size; in a
        shared batch one per image of each member."""
        if isinstance(bg, list):
            counts = self.scheduler.members
            parts = [self._light_latents(b, s) for b in bg]
            return torch.cat([p.expand(m.count, -1, -1, -1) for p, m in zip(parts, counts, strict=True)])
        light = self._encode(to_tensor([resize_and_center_crop(bg, s.width, s.height)]))
        return light.to(device=self.unet.device, dtype=self.unet.dtype)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        # Contiguous: the encoder may hand back another memory layout, which a compiled UNet
        # would see as a new input and compile again for.
        return (dist.mode() * vae.config.scaling_factor).contiguous()

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


@dataclass(frozen=True)
class Extras:
    """What a relight may ask for beyond the hosted model's inputs."""

    mask: ImageLike | None = None
    detail_transfer: float = 0.0
    keep_background: bool = False
    light: Light | None = None
    light_map: ImageLike | None = None
    light_mix: float | None = None
    keep_colors: float = 0.0
    matting: str | None = None
    loras: tuple[Lora, ...] | None = None  # None: the relighter's defaults

    def check(self, a: dict) -> Extras:
        """These extras, or an InputError naming the first one that cannot be used with `a`."""
        if self.matting is not None:
            matting_models.check(self.matting)
        for name in ("detail_transfer", "keep_colors"):
            fraction(name, getattr(self, name))
        if self.light_mix is not None:
            lighting.from_fields({"light_mix": self.light_mix})
        if self.light is not None:
            if not isinstance(self.light, Light):
                raise InputError(f"light: expected a lighting.Light, got {type(self.light).__name__}")
            self.light.check()
        if self.keep_background and a["background_image"] is None:
            raise InputError("keep_background: needs a background image")
        names = ("detail_transfer", "keep_background", "light", "light_map", "light_mix", "keep_colors")
        used = [n for n in names if _given(getattr(self, n))]
        if a["compute_normal"] and used:
            raise InputError(f"compute_normal: cannot be combined with {used[0]} (it relights under four fixed lights)")
        return replace(self, loras=lora_list(self.loras))

    def finish(self, result: np.ndarray, subject: np.ndarray, background: np.ndarray | None, matte: np.ndarray):
        """Detail transfer, then the subject's colours, then the background's own pixels."""
        if self.detail_transfer > 0:
            result = transfer_detail(result, subject, matte, self.detail_transfer)
        if self.keep_colors > 0:
            result = keep_colors(result, subject, matte, self.keep_colors)
        if self.keep_background:
            result = composite_background(result, background, matte)
        return result


def _light_start(value: Any, a: dict) -> float | None:
    """`light_start` checked: unset, or a denoise in (0, 1] (not with compute_normal's four lights)."""
    if value is None:
        return None
    start = denoise("light_start", value)
    if a["compute_normal"]:
        raise InputError("compute_normal: cannot be combined with light_start (it relights under four fixed lights)")
    return start


def _given(value: Any) -> bool:
    """Whether an extra asks for something (an image, even an array, always does; 0 and False do not)."""
    return value is not None and not (isinstance(value, bool | int | float) and not value)


def _texts(a: dict) -> tuple[str, str]:
    """The positive and negative text a relight encodes."""
    return f"{a['prompt']}, {a['appended_prompt']}", a["negative_prompt"]


@dataclass(frozen=True)
class Request:
    """A relight whose inputs were checked (`Relighter.request`), to be run later."""

    a: dict
    extras: Extras
    settings: Settings
    subject: ImageLike
    background: ImageLike | None


@dataclass
class Prepared:
    """A relight up to its diffusion: what the passes take and what finishing needs."""

    request: Request
    seed: int
    stage: StageTimer
    image: np.ndarray
    bg_upload: np.ndarray | None
    matte: np.ndarray
    fg: np.ndarray
    bg: np.ndarray | None
    embeds: tuple[torch.Tensor, torch.Tensor]
    count: int
