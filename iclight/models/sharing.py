"""Several relights in one diffusion batch, each with its own noise.

A member of a shared batch brings its own condition, prompts, seed and image count. Its noise is
drawn from its own generator, in the shapes and order of the same relight run alone: the
low-res pass's initial latents, every SDE step's noise, the high-res pass's noise. So its images
are the lone run's, up to the arithmetic of a larger batch. With no members set, the pipelines
and the scheduler here are diffusers' own, draw for draw.

With `one_start` (a sequence's `batch_noise`, Light-A-Video's way of drawing), the members share
one generator: every member starts from the first member's starting noise, drawn once, and each
step's noise is drawn member after member from the one stream (on the CPU, what one draw for the
whole batch gives).
"""

from __future__ import annotations

from collections.abc import Callable
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


def starts(members: list[Member], one_start: bool, draw: Callable[[int, Member], torch.Tensor]) -> torch.Tensor:
    """Every member's starting latents, `draw(i, member)` each; with `one_start`, every member's
    from the first one's noise (the generator rewound for each, and left as after one draw)."""
    if not one_start:
        return torch.cat([draw(i, m) for i, m in enumerate(members)])
    generator = members[0].generator
    before = generator.get_state()
    found = [draw(0, members[0])]
    after = generator.get_state()
    for i, m in enumerate(members[1:], start=1):
        generator.set_state(before)
        found.append(draw(i, m))
    generator.set_state(after)
    return torch.cat(found)


class SharedScheduler(DPMSolverMultistepScheduler):
    """DPM-Solver whose SDE noise, in a shared batch, is drawn member by member."""

    members: list[Member] | None = None
    one_start: bool = False  # every member starts from the first member's noise (`starts`)

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
        base = super().prepare_latents

        def draw(i: int, m: Member) -> torch.Tensor:
            return base(m.count, num_channels_latents, height, width, dtype, device, m.generator)

        return starts(members, self.scheduler.one_start, draw)


class SharedImage2Image(StableDiffusionImg2ImgPipeline):
    """Image to image whose noise, in a shared batch, is drawn member by member."""

    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
        members = self.scheduler.members
        if not members:
            return super().prepare_latents(image, timestep, batch_size, num_images_per_prompt, dtype, device, generator)
        images, steps, base = split(image, members), split(timestep, members), super().prepare_latents

        def draw(i: int, m: Member) -> torch.Tensor:
            return base(images[i], steps[i], m.count, 1, dtype, device, m.generator)

        return starts(members, self.scheduler.one_start, draw)
