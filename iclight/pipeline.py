"""The Relighter: loads once, relights many times (background-conditioned IC-Light)."""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from . import config, layout, lighting
from . import constants as C
from . import matting as matting_models
from .colors import keep_colors
from .compositing import keep_background as composite_background
from .compositing import transfer_detail
from .fetch import HashCache
from .imaging import (
    ImageLike,
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
from .loading import Components, load_components, resolve_device
from .normals import normal_map
from .prompts import PromptEncoder
from .rmbg import estimate_matte, on_grey
from .speed import SpeedSettings, attention_backend, boot_compiled
from .speed import apply as apply_speed
from .timing import StageTimer
from .unet import ConditionedUNet
from .validation import InputError, fraction, random_seed, validate

log = logging.getLogger("iclight")

# CUDA tuning of the VAE.
VAE_TILE_ABOVE = 2048  # high-res side (px) above which the VAE works in tiles on CUDA
# High-res pixels of a whole batch above which the VAE takes one image at a time on CUDA. Below,
# it takes the batch at once like the hosted code: 6% faster with 4 images at the defaults on an
# H200, at twice the peak memory (docs/performance.md).
VAE_SLICE_ABOVE = 4_000_000


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

    @property
    def highres_size(self) -> tuple[int, int]:
        def snap(x: int) -> int:
            return round(x * self.highres_scale / C.HIGHRES_MULTIPLE) * C.HIGHRES_MULTIPLE

        return snap(self.width), snap(self.height)

    def vae_slicing(self, count: int) -> bool:
        """Whether the VAE should take `count` images one at a time (on CUDA), to bound memory."""
        hw, hh = self.highres_size
        return count * hw * hh > VAE_SLICE_ABOVE

    def vae_tiling(self) -> bool:
        """Whether the VAE should work in tiles (on CUDA); tiles change pixels a little."""
        return max(self.highres_size) > VAE_TILE_ABOVE


class Relighter:
    """Holds every model and both diffusers pipelines, which share one set of modules."""

    def __init__(self, components: Components, device: torch.device, weights_root: Path | None = None) -> None:
        self.weights_root = weights_root
        self.weight_files = components.sources
        self._weights_hashes: dict[str, str] | None = None
        self.device = device
        self.vae = components.vae
        self.rmbg = components.rmbg
        self.matting = matting_models.RMBG if components.rmbg is not None else matting_models.NONE
        self.unet = ConditionedUNet(components.unet)
        self.prompts = PromptEncoder(components.tokenizer, components.text_encoder)
        scheduler = DPMSolverMultistepScheduler(**C.SCHEDULER_CONFIG)
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
        self.compile_report: dict[str, float | bool | int] | None = None
        self.t2i = StableDiffusionPipeline(**modules)
        self.i2i = StableDiffusionImg2ImgPipeline(**modules)

    @classmethod
    def load(
        cls,
        weights_dir: str | os.PathLike | None = None,
        device: str | None = None,
        use_prepared: bool = True,
        speed: SpeedSettings | None = None,
        matting_choice: str | None = None,
    ) -> Relighter:
        """Load from `weights_dir` (default: ICLIGHT_WEIGHTS_DIR, else weights/) onto `device`.

        A valid prepared UNet is used when present, unless `use_prepared` is False. `speed`
        defaults to `SpeedSettings.default` (see `speed.py`); a compiled model is warmed up here.
        `matting_choice` (default ICLIGHT_MATTING) is the matting model loaded (see `matting.py`)."""
        config.check()
        choice = matting_models.check(matting_choice or config.MATTING.read())
        dev = resolve_device(device)
        start = time.perf_counter()
        root = layout.weights_dir(weights_dir)
        relighter = cls(load_components(root, dev, use_prepared, choice), dev, root)
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
    ) -> RelightResult:
        """Relight `subject` to match `background` (or a synthetic light) as `prompt` says.

        Beyond the hosted model: `mask` replaces background removal (white = subject),
        `detail_transfer` (0..1) restores the subject's fine detail inside the matte,
        `keep_background` puts the relit subject over the background's own pixels, `light` (a
        `lighting.Light`) or `light_map` (an image) is the light instead of a preset, `light_mix`
        (0..1) blends the background with the light, and `keep_colors` (0..1) keeps the
        subject's own chroma inside the matte (see `lighting.py` and `colors.py`). `matting`
        (`rmbg-1.4` or `none`, default the loaded one) cuts out a subject without mask or alpha.
        """
        a = validate(
            {
                "subject_image": subject,
                "background_image": background,
                "prompt": prompt,
                "appended_prompt": appended_prompt,
                "negative_prompt": negative_prompt,
                "compute_normal": compute_normal,
                "width": width,
                "height": height,
                "steps": steps,
                "cfg": cfg,
                "highres_scale": highres_scale,
                "highres_denoise": highres_denoise,
                "light_source": light_source,
                "seed": seed,
                "number_of_images": number_of_images,
            },
            optional=("background_image",),
        )
        extras = Extras(mask, detail_transfer, keep_background, light, light_map, light_mix, keep_colors, matting)
        extras = extras.check(a)
        s = Settings(a["width"], a["height"], a["steps"], a["cfg"], a["highres_scale"], a["highres_denoise"])
        cuda, count = self.device.type == "cuda", 1 if a["compute_normal"] else a["number_of_images"]
        self.vae.use_tiling = cuda and s.vae_tiling()
        self.vae.use_slicing = cuda and s.vae_slicing(count)
        try:
            with attention_backend(self.speed.attention):
                return self._relight(a, s, subject, background, extras)
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, once the traceback (and the tensors its frames hold) is gone
        gc.collect()
        torch.cuda.empty_cache()
        raise GPUOutOfMemoryError(
            f"out of GPU memory for {count} image(s) at {s.width}x{s.height} (high-res {s.highres_size[0]}x"
            f"{s.highres_size[1]}); try fewer images, a smaller size or a lower highres_scale"
        )

    def _relight(
        self,
        a: dict,
        s: Settings,
        subject: ImageLike,
        background: ImageLike | None,
        extras: Extras,
    ) -> RelightResult:
        seed = random_seed() if a["seed"] is None else a["seed"]
        log.info("Using seed: %d", seed)
        stage = StageTimer(self.device)
        sigma = C.NORMAL_SIGMA if a["compute_normal"] else C.RELIGHT_SIGMA

        image, alpha = load_image_and_alpha(subject, "subject_image")  # both first: a bad file fails at once
        bg_upload = None if background is None else load_image(background, "background_image")
        light_map = None if extras.light_map is None else load_image(extras.light_map, "light_map")
        with stage("background removal"):
            matte = self._matte(image, alpha, extras.mask, extras.matting)
            fg = on_grey(image, matte, sigma)
        with stage("text"):
            embeds = self.prompts(f"{a['prompt']}, {a['appended_prompt']}", a["negative_prompt"])

        if a["compute_normal"]:
            runs = [
                self._two_passes(fg, light_background(light, s.width, s.height, bg_upload), embeds, s, 1, seed, stage)
                for light in C.NORMAL_LIGHTS
            ]
            images = normal_map(*(r[0] for r in runs), matte)
        else:
            bg = condition_image(
                a["light_source"], bg_upload, s.width, s.height, extras.light, light_map, extras.light_mix
            )
            floats = self._two_passes(fg, bg, embeds, s, a["number_of_images"], seed, stage)
            images = [extras.finish(unit_to_uint8(x), image, bg_upload, matte[..., 0]) for x in floats]
        return RelightResult([Image.fromarray(x) for x in images], seed, matte[..., 0], fg, stage.result())

    def _matte(
        self, image: np.ndarray, alpha: np.ndarray | None, mask: ImageLike | None, choice: str | None = None
    ) -> np.ndarray:
        """A supplied mask, else the subject's own alpha, else the matting model's estimate (HxWx1)."""
        if mask is not None:
            m = load_image(mask, "mask")[..., 0].astype(np.float32) / 255.0
            if m.shape != image.shape[:2]:
                raise InputError(
                    f"mask: size {m.shape[1]}x{m.shape[0]} differs from the subject's {image.shape[1]}x{image.shape[0]}"
                )
            return m[..., None]
        if alpha is not None:
            return alpha[..., None]
        choice = choice or self.matting
        if choice == matting_models.NONE:
            raise matting_models.needs_a_matte()
        if self.rmbg is None:
            raise matting_models.unavailable(choice, self.matting)
        return estimate_matte(self.rmbg, image)

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
        """Low-res text-to-image, then high-res latent refinement; floats in [0, 1]."""
        rng = torch.Generator(device=self.device).manual_seed(seed)
        pos, neg = embeds
        common = dict(
            prompt_embeds=pos,
            negative_prompt_embeds=neg,
            num_images_per_prompt=count,
            generator=rng,
            output_type="latent",
            guidance_scale=s.cfg,
        )
        with stage("low-res diffusion"):
            cond = self._condition(fg, bg, s.width, s.height)
            latents = self.t2i(
                width=s.width,
                height=s.height,
                num_inference_steps=s.steps,
                cross_attention_kwargs={"concat_conds": cond},
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
                num_inference_steps=round(s.steps / s.highres_denoise),
                cross_attention_kwargs={"concat_conds": cond},
                **common,
            ).images
        with stage("final decode"):
            return to_unit(self._decode(latents))

    def _condition(self, fg: np.ndarray, bg: np.ndarray, width: int, height: int) -> torch.Tensor:
        """fg and bg latents joined on channels, in the UNet's dtype (cast once, not at every step): [1, 8, h, w]."""
        pair = [resize_and_center_crop(fg, width, height), resize_and_center_crop(bg, width, height)]
        latents = self._encode(to_tensor(pair))
        return latents.reshape(1, -1, *latents.shape[2:]).to(self.unet.dtype)

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
        used = [n for n in names if getattr(self, n) not in (None, 0, 0.0, False)]
        if a["compute_normal"] and used:
            raise InputError(f"compute_normal: cannot be combined with {used[0]} (it relights under four fixed lights)")
        return self

    def finish(self, result: np.ndarray, subject: np.ndarray, background: np.ndarray | None, matte: np.ndarray):
        """Detail transfer, then the subject's colours, then the background's own pixels."""
        if self.detail_transfer > 0:
            result = transfer_detail(result, subject, matte, self.detail_transfer)
        if self.keep_colors > 0:
            result = keep_colors(result, subject, matte, self.keep_colors)
        if self.keep_background:
            result = composite_background(result, background, matte)
        return result
