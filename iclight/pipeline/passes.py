"""One run's diffusion: the low-res pass (text to image, or image to image from a light), then
the high-res image-to-image pass.

A `Diffusion` is made for each run from the relighter's loaded models and everything that varies
per run: the sampler's fresh scheduler (with a shared batch's members), the VAE's tiling and
slicing, the stop check, the previews and the progress bars. Nothing of it is left on the models.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL

from ..core import constants as C
from ..core.hooks import Hooks
from ..core.spec import Settings, ran
from ..imaging.images import resize, resize_and_center_crop, unit_to_uint8
from ..imaging.tensors import to_tensor, to_uint8, to_unit
from ..models import samplers
from ..models.previews import Previews
from ..models.sharing import Member, SharedImage2Image, SharedText2Image
from ..models.timing import StageTimer
from ..models.unet import ConditionedUNet
from .results import Stopped

# CUDA tuning of the VAE.
VAE_TILE_ABOVE = 2048  # high-res side (px) above which the VAE works in tiles on CUDA
# High-res pixels of a whole batch above which the VAE takes one image at a time on CUDA. Below,
# it takes the batch at once like the hosted code: 6% faster with 4 images at the defaults on an
# H200, at twice the peak memory (docs/performance.md).
VAE_SLICE_ABOVE = 4_000_000


def pixels(s: Settings, decoded: torch.Tensor) -> list[np.ndarray]:
    """Decoded images as 8-bit HWC, each hosted model's way: fbc's through floats in [0, 1], fc's
    at once (as between the passes); the two differ by one grey level here and there."""
    if s.model == C.FC:
        return to_uint8(decoded)
    return [unit_to_uint8(x) for x in to_unit(decoded)]


def vae_slicing(s: Settings, count: int) -> bool:
    """Whether the VAE should take `count` images one at a time (on CUDA), to bound memory."""
    hw, hh = s.highres_size
    return count * hw * hh > VAE_SLICE_ABOVE


def vae_tiling(s: Settings) -> bool:
    """Whether the VAE should work in tiles (on CUDA); tiles change pixels a little."""
    return max(s.highres_size) > VAE_TILE_ABOVE


@dataclass(frozen=True)
class Models:
    """The loaded models a diffusion uses (the relighter's, shared by every run)."""

    vae: AutoencoderKL
    unet: ConditionedUNet
    text_encoder: torch.nn.Module
    tokenizer: object


class Diffusion:
    """Both passes for one run: `members` (a shared batch) each draw their own noise, or with
    `one_start` one stream for all (`models/sharing.py`)."""

    def __init__(
        self,
        models: Models,
        s: Settings,
        count: int,
        hooks: Hooks,
        members: list[Member] | None = None,
        one_start: bool = False,
    ) -> None:
        self.models, self.s, self.hooks, self.members = models, s, hooks, members
        self.scheduler = samplers.make(s.sampler)
        self.scheduler.members, self.scheduler.one_start = members, one_start
        parts = dict(
            vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=models.unet,
            scheduler=self.scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
            requires_safety_checker=False,
        )  # fmt: skip
        self.t2i, self.i2i = SharedText2Image(**parts), SharedImage2Image(**parts)
        for pipe in (self.t2i, self.i2i):
            pipe.set_progress_bar_config(disable=not hooks.step_progress)
        # This run's view of the VAE: the same modules, its own tiling and slicing (on CUDA).
        cuda = models.unet.device.type == "cuda"
        self.vae = copy.copy(models.vae)
        self.vae.use_tiling, self.vae.use_slicing = cuda and vae_tiling(s), cuda and vae_slicing(s, count)
        self.previews = Previews(hooks.previews) if hooks.previews else None

    def run(self, fg, bg, embeds, count: int, seed: int | None, stage: StageTimer) -> torch.Tensor:
        """The low-res pass, then (unless the settings skip it) the high-res latent refinement:
        the decoded images, in [-1, 1] (`pixels` makes them 8-bit). `bg` is the background or the
        light (the fc model's first pass's start; None: from noise). In a shared batch, `fg` and
        `bg` are lists (one per member), `seed` is None and the members' own generators draw the
        noise."""
        s, unet = self.s, self.models.unet
        rng = None if seed is None else torch.Generator(device=unet.device).manual_seed(seed)
        pos, neg = embeds
        common = dict(
            prompt_embeds=pos, negative_prompt_embeds=neg, num_images_per_prompt=count, generator=rng,
            output_type="latent", guidance_scale=s.cfg,
        )  # fmt: skip
        with stage("low-res diffusion"):
            latents = self._first_pass(fg, bg, common)
        if not s.highres_pass:
            with stage("final decode"):
                return self.decode(latents)
        hw, hh = s.highres_size
        with stage("high-res condition"):
            # Before the decode waits for the low-res pass: on CUDA the host resizes fg and bg
            # while the GPU is still busy with the steps queued above.
            cond = self.condition(fg, bg, hw, hh)
        with stage("decode and resize"):
            pixels = [resize(p, hw, hh) for p in to_uint8(self.decode(latents))]
        with stage("high-res encode"):
            latents = self.encode(to_tensor(pixels)).to(device=unet.device, dtype=unet.dtype)
        with stage("high-res diffusion"):
            latents = self._second_pass(latents, cond, common)
        with stage("final decode"):
            return self.decode(latents)

    def _second_pass(self, latents: torch.Tensor, cond: torch.Tensor, common: dict) -> torch.Tensor:
        s = self.s
        on_step = self._on_step("high-res pass", ran(s.highres_steps, s.highres_denoise))
        return self.i2i(
            image=latents, strength=s.highres_denoise, num_inference_steps=s.highres_steps,
            cross_attention_kwargs={"concat_conds": cond}, callback_on_step_end=on_step, **common,
        ).images  # fmt: skip

    def _first_pass(self, fg, bg, common: dict) -> torch.Tensor:
        s = self.s
        cond = self.condition(fg, bg, s.width, s.height)
        if s.light_start is None:
            on_step = self._on_step("low-res pass", s.steps)
            return self.t2i(
                width=s.width, height=s.height, num_inference_steps=s.steps,
                cross_attention_kwargs={"concat_conds": cond}, callback_on_step_end=on_step, **common,
            ).images  # fmt: skip
        # From the light's latent, as IC-Light's text-conditioned demo starts from its light.
        on_step = self._on_step("low-res pass", ran(s.first_steps, s.light_start))
        return self.i2i(
            image=self.light_latents(bg), strength=s.light_start, num_inference_steps=s.first_steps,
            cross_attention_kwargs={"concat_conds": cond}, callback_on_step_end=on_step, **common,
        ).images  # fmt: skip

    def condition(self, fg, bg, width: int, height: int) -> torch.Tensor:
        """The UNet's condition, in its dtype (cast once, not at every step): fbc's fg and bg
        latents joined on channels [1, 8, h, w], fc's fg latent [1, 4, h, w]; in a shared batch,
        one per image of each member."""
        if isinstance(fg, list):
            conds = [self.condition(f, b, width, height) for f, b in zip(fg, bg, strict=True)]
            return torch.cat([c.expand(m.count, -1, -1, -1) for c, m in zip(conds, self.members, strict=True)])
        seen = (fg, bg) if self.s.model == C.FBC else (fg,)
        latents = self.encode(to_tensor([resize_and_center_crop(image, width, height) for image in seen]))
        return latents.reshape(1, -1, *latents.shape[2:]).to(self.models.unet.dtype)

    def light_latents(self, bg) -> torch.Tensor:
        """The light (fbc: the condition's background image; fc: its light) as a latent at the
        low-res size; in a shared batch one per image of each member."""
        if isinstance(bg, list):
            parts = [self.light_latents(b) for b in bg]
            return torch.cat([p.expand(m.count, -1, -1, -1) for p, m in zip(parts, self.members, strict=True)])
        unet = self.models.unet
        light = self.encode(to_tensor([resize_and_center_crop(bg, self.s.width, self.s.height)]))
        return light.to(device=unet.device, dtype=unet.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        dist = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist
        # Contiguous: the encoder may hand back another memory layout, which a compiled UNet
        # would see as a new input and compile again for.
        return (dist.mode() * vae.config.scaling_factor).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample

    def _on_step(self, stage: str, total: int) -> Callable | None:
        """What runs after each denoising step: the stop check and the previews, where hooked."""
        stop, previews = self.hooks.stop, self.previews
        if stop is None and previews is None:
            return None

        def on_step(pipe, step: int, timestep, tensors: dict) -> dict:
            if stop is not None and stop():
                raise Stopped("every relight of this diffusion batch was canceled")
            if previews is not None:
                previews.step(stage, step + 1, total, tensors["latents"])
            return tensors

        return on_step
