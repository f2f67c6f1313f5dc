"""What a run gives back, and what may end it early."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


class Stopped(RuntimeError):
    """A diffusion ended early because nobody waits for its images any more (`Hooks.stop`)."""


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


@dataclass
class SequenceResult:
    """Relit frames in order, with the seed of each, their mattes and the windows that ran."""

    images: list[Image.Image]
    seeds: list[int]
    mattes: list[np.ndarray]
    windows: list[list[int]]
    video: object | None = None  # the source video looked over (`imaging.video.VideoInfo`), where frames came from one
    times: list[float] | None = None  # each frame's time in it, in seconds from the first
