"""Several relights in one diffusion batch, each with its own noise.

A member of a shared batch brings its own condition, prompts, seed and image count. Its noise is
drawn from its own generator, in the shapes and order of the same relight run alone: the
low-res pass's initial latents, every SDE step's noise, the high-res pass's noise. So its images
are the lone run's, up to the arithmetic of a larger batch. With no members set, the pipelines
and the scheduler here are diffusers' own, draw for draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

SDE = ("sde-dpmsolver", "sde-dpmsolver++")


@dataclass
class Member:
    """One relight's part of a shared batch: its image count and its own random stream."""

    count: int
    generator: torch.Generator


def split(batch: torch.Tensor, members: list[Member]) -> list[torch.Tensor]:
    return list(torch.split(batch, [m.count for m in members]))


class SharedScheduler(DPMSolverMultistepScheduler):
    """DPM-Solver whose SDE noise, in a shared batch, is drawn member by member."""

    members: list[Member] | None = None

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None, return_dict=True):
        if self.members and variance_noise is None and self.config.algorithm_type in SDE:
            variance_noise = torch.cat(
                [
                    randn_tensor(part.shape, generator=m.generator, device=model_output.device, dtype=torch.float32)
                    for part, m in zip(split(model_output, self.members), self.members, strict=True)
                ]
            )
        return super().step(model_output, timestep, sample, generator, variance_noise, return_dict)


class SharedText2Image(StableDiffusionPipeline):
    """Text to image whose initial latents, in a shared batch, are drawn member by member."""

    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        members = self.scheduler.members
        if not members or latents is not None:
            return super().prepare_latents(
                batch_size, num_channels_latents, height, width, dtype, device, generator, latents
            )
        parts = [
            super(SharedText2Image, self).prepare_latents(
                m.count, num_channels_latents, height, width, dtype, device, m.generator
            )
            for m in members
        ]
        return torch.cat(parts)


class SharedImage2Image(StableDiffusionImg2ImgPipeline):
    """Image to image whose noise, in a shared batch, is drawn member by member."""

    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
        members = self.scheduler.members
        if not members:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device, generator)
        parts = [
            super(SharedImage2Image, self).prepare_latents(latents, step, m.count, 1, dtype, device, m.generator)
            for latents, step, m in zip(split(image, members), split(timestep, members), members, strict=True)
        ]
        return torch.cat(parts)
