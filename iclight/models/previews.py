"""Live previews of a relight: the latents every few steps of both passes, turned into a picture by
a fixed linear projection of SD1.5's four latent channels to RGB (no extra weights, no VAE decode:
about a millisecond at the hosted sizes, where a decode costs a step or more)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# How SD1.5's VAE latent channels map to RGB, fitted on decoded images (the factors ComfyUI and
# A1111 use for their cheap previews); the result is in about [-1, 1].
LATENT_RGB = torch.tensor(
    [
        [0.3512, 0.2297, 0.3227],
        [0.3250, 0.4974, 0.2350],
        [-0.2829, 0.1762, 0.2721],
        [-0.2120, -0.2616, -0.7177],
    ]
)
EVERY = 3  # steps between previews


def latent_to_rgb(latent: torch.Tensor) -> np.ndarray:
    """One [4, h, w] latent as an h x w RGB uint8 picture (1/8 of the image's size)."""
    rgb = torch.einsum("chw,cr->hwr", latent.detach().float().cpu(), LATENT_RGB)
    return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()


@dataclass(frozen=True)
class Preview:
    stage: str  # "low-res pass" or "high-res pass"
    step: int
    total: int
    image: np.ndarray

    @property
    def label(self) -> str:
        return f"{self.stage}, step {self.step}/{self.total}"


class Previews:
    """Hands `sink` a preview every `every` steps and at each pass's last step."""

    def __init__(self, sink: Callable[[Preview], None], every: int = EVERY) -> None:
        self.sink, self.every = sink, max(1, every)

    def step(self, stage: str, step: int, total: int, latents: torch.Tensor) -> None:
        if step % self.every == 0 or step == total:
            self.sink(Preview(stage, step, total, latent_to_rgb(latents[0])))
