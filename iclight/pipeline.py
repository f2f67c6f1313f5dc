"""The Relighter: loads once, relights many times (background-conditioned IC-Light)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from . import constants as C
from . import layout
from .imaging import (
    ImageLike,
    light_background,
    load_alpha,
    load_image,
    resize,
    resize_and_center_crop,
    to_tensor,
    to_uint8,
    to_unit,
    unit_to_uint8,
)
from .normals import normal_map
from .prompts import PromptEncoder
from .rmbg import estimate_matte, on_grey
from .unet import ConditionedUNet
from .weights import Components, load_components, resolve_device

log = logging.getLogger("iclight")


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
            return int(round(x * self.highres_scale / C.HIGHRES_MULTIPLE) * C.HIGHRES_MULTIPLE)

        return snap(self.width), snap(self.height)


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")


class Relighter:
    """Holds every model and both diffusers pipelines, which share one set of modules."""

    def __init__(self, components: Components, device: torch.device) -> None:
        self.device = device
        self.vae = components.vae
        self.rmbg = components.rmbg
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
        self.t2i = StableDiffusionPipeline(**modules)
        self.i2i = StableDiffusionImg2ImgPipeline(**modules)

    @classmethod
    def load(cls, weights_dir: str | os.PathLike | None = None, device: str | None = None) -> Relighter:
        """Load from `weights_dir` (default: ICLIGHT_WEIGHTS_DIR, else weights/) onto `device`."""
        dev = resolve_device(device)
        start = time.perf_counter()
        relighter = cls(load_components(layout.weights_dir(weights_dir), dev), dev)
        log.info("ready on %s in %.2f s", dev, time.perf_counter() - start)
        return relighter

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
    ) -> RelightResult:
        """Relight `subject` to match `background` (or a synthetic light) as `prompt` says."""
        seed = random_seed() if seed is None else int(seed)
        log.info("Using seed: %d", seed)
        timings: dict[str, float] = {}
        settings = Settings(width, height, steps, float(cfg), float(highres_scale), float(highres_denoise))
        sigma = C.NORMAL_SIGMA if compute_normal else C.RELIGHT_SIGMA

        with _stage("background removal", timings):
            image = load_image(subject, "subject_image")
            matte = self._matte(subject, image, mask)
            fg = on_grey(image, matte, sigma)
        bg_upload = None if background is None else load_image(background, "background_image")
        with _stage("text", timings):
            embeds = self.prompts(f"{prompt}, {appended_prompt}", negative_prompt)

        if compute_normal:
            runs = [
                self._two_passes(
                    fg, light_background(light, width, height, bg_upload), embeds, settings, 1, seed, timings
                )[0]
                for light in C.NORMAL_LIGHTS
            ]
            images = normal_map(*runs, matte)
        else:
            bg = light_background(light_source, width, height, bg_upload)
            images = [
                unit_to_uint8(x) for x in self._two_passes(fg, bg, embeds, settings, number_of_images, seed, timings)
            ]
        return RelightResult([Image.fromarray(x) for x in images], seed, matte[..., 0], fg, timings)

    def _matte(self, source: ImageLike, image: np.ndarray, mask: ImageLike | None) -> np.ndarray:
        """A supplied mask, else the subject's own alpha, else BriaRMBG's estimate (HxWx1)."""
        if mask is not None:
            m = load_image(mask, "mask")[..., 0].astype(np.float32) / 255.0
            if m.shape != image.shape[:2]:
                raise ValueError(
                    f"mask: size {m.shape[1]}x{m.shape[0]} differs from the subject's {image.shape[1]}x{image.shape[0]}"
                )
            return m[..., None]
        alpha = None if isinstance(source, np.ndarray) and source.ndim == 2 else _safe_alpha(source)
        if alpha is not None and alpha.shape == image.shape[:2]:
            return alpha[..., None]
        return estimate_matte(self.rmbg, image)

    def _two_passes(
        self,
        fg: np.ndarray,
        bg: np.ndarray,
        embeds: tuple[torch.Tensor, torch.Tensor],
        s: Settings,
        count: int,
        seed: int,
        timings: dict[str, float],
    ) -> list[np.ndarray]:
        """Low-res text-to-image, then high-res latent refinement; floats in [0, 1]."""
        rng = torch.Generator(device=self.device).manual_seed(seed)
        pos, neg = embeds
        with _stage("low-res", timings):
            cond = self._condition(fg, bg, s.width, s.height)
            latents = self.t2i(
                prompt_embeds=pos,
                negative_prompt_embeds=neg,
                width=s.width,
                height=s.height,
                num_inference_steps=s.steps,
                num_images_per_prompt=count,
                generator=rng,
                output_type="latent",
                guidance_scale=s.cfg,
                cross_attention_kwargs={"concat_conds": cond},
            ).images
            pixels = to_uint8(self._decode(latents))
        with _stage("high-res", timings):
            hw, hh = s.highres_size
            latents = self._encode(to_tensor([resize(p, hw, hh) for p in pixels]))
            latents = latents.to(device=self.unet.device, dtype=self.unet.dtype)
            height, width = latents.shape[2] * C.LATENT_FACTOR, latents.shape[3] * C.LATENT_FACTOR
            cond = self._condition(fg, bg, width, height)
            latents = self.i2i(
                image=latents,
                strength=s.highres_denoise,
                prompt_embeds=pos,
                negative_prompt_embeds=neg,
                num_inference_steps=round(s.steps / s.highres_denoise),
                num_images_per_prompt=count,
                generator=rng,
                output_type="latent",
                guidance_scale=s.cfg,
                cross_attention_kwargs={"concat_conds": cond},
            ).images
            return to_unit(self._decode(latents))

    def _condition(self, fg: np.ndarray, bg: np.ndarray, width: int, height: int) -> torch.Tensor:
        """fg and bg latents joined on channels: [1, 8, h, w]."""
        pair = [resize_and_center_crop(fg, width, height), resize_and_center_crop(bg, width, height)]
        latents = self._encode(to_tensor(pair))
        return latents.reshape(1, -1, *latents.shape[2:])

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        return dist.mode() * vae.config.scaling_factor

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


def _safe_alpha(source: ImageLike) -> np.ndarray | None:
    try:
        return load_alpha(source)
    except (OSError, ValueError):
        return None


@contextmanager
def _stage(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    timings[name] = timings.get(name, 0.0) + elapsed
    log.info("%s: %.2f s", name, elapsed)
