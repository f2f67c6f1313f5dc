"""One light across many frames: a product's views or a video's frames relit together.

Frames run in windows of shared diffusion batches (`Relighter.run_shared`), every frame a member
with its own seed: one seed for all (shared noise: frames differ only where their inputs differ)
or one each. Consistent light attention (`consistency.py`) mixes each frame's self-attention with
the attention over its window's averaged keys and values, in both passes. Windows after the first
carry reference frames of the first window, so their averages stay anchored to it. Mattes
estimated per frame are smoothed over neighbouring frames, where a flickering edge would make the
relit frames flicker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import consistency as cla
from . import constants as C
from . import samplers, video
from .imaging import IMAGE_SUFFIXES, ImageLike, load_image_and_alpha
from .validation import InputError, fraction, random_seed

WINDOW = 8  # frames per diffusion batch by default
MAX_WINDOW = C.SEQUENCE_MAX_WINDOW
REFERENCES = 2  # frames of the first window carried into every later one


@dataclass
class SequenceResult:
    """Relit frames in order, with the seed of each, their mattes and the windows that ran."""

    images: list[Image.Image]
    seeds: list[int]
    mattes: list[np.ndarray]
    windows: list[list[int]]
    clip: video.Clip | None = None  # the source video's rate and audio, where frames came from one


@dataclass(frozen=True)
class SequenceOptions:
    consistency: float = 0.5
    shared_noise: bool = True
    smooth_mattes: bool = True
    window: int = WINDOW
    layers: str = cla.DEFAULT_LAYERS

    def check(self) -> SequenceOptions:
        fraction("consistency", self.consistency)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or not 1 <= self.window <= MAX_WINDOW:
            raise InputError(f"window: {self.window!r} is out of range; allowed 1 to {MAX_WINDOW}")
        for name in ("shared_noise", "smooth_mattes"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        return self


def frames_of(source: Any, start: int = 0, end: int | None = None, stride: int = 1) -> tuple[list, video.Clip | None]:
    """The frames of a list of images, a folder of images (sorted by name) or a video file."""
    if isinstance(source, list | tuple):
        if not source:
            raise InputError("frames: the list is empty")
        return list(source)[start:end:stride], None
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"frames: {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
        return files[start:end:stride], None
    if not path.exists():
        raise InputError(f"frames: {path} does not exist")
    clip = video.read(path, start, end, stride)
    return clip.frames, clip


def masks_of(source: Any, count: int) -> list | None:
    """One mask per frame, from a list or a folder (sorted by name); None: the matting model."""
    if source is None:
        return None
    items = source
    if isinstance(source, str | os.PathLike):
        folder = Path(source)
        if not folder.is_dir():
            raise InputError(f"masks: {folder} is not a folder of masks")
        items = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(items) != count:
        raise InputError(f"masks: {len(items)} masks for {count} frames; give one mask per frame")
    return list(items)


def smooth(mattes: list[np.ndarray]) -> list[np.ndarray]:
    """Each matte the median of itself and its neighbours (where they have its size): a pixel
    that flips for one frame is held, an edge that moves keeps moving."""
    out = []
    for i, matte in enumerate(mattes):
        around = [m for m in mattes[max(0, i - 1) : i + 2] if m.shape == matte.shape]
        out.append(np.median(np.stack(around), axis=0) if len(around) == 3 else matte)
    return out


def plan_windows(count: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


def references(first: list[int], size: int) -> list[int]:
    """Frames of the first window carried into later ones, evenly spread, leaving room for one new frame."""
    k = min(REFERENCES, size - 1, len(first))
    if k <= 0:
        return []
    return sorted({first[round(j * (len(first) - 1) / max(k - 1, 1))] for j in range(k)})


def relight_sequence(
    relighter,
    frames: Any,
    background: ImageLike | None,
    prompt: str,
    *,
    options: SequenceOptions = SequenceOptions(),
    masks: Any = None,
    seed: int | None = None,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    **relight_options,
) -> SequenceResult:
    """Every frame relit as `relighter.relight(frame, background, prompt, **relight_options)`
    would, with one light across them (see the module's docstring)."""
    options = options.check()
    if relight_options.get("number_of_images", 1) != 1 or relight_options.get("compute_normal"):
        raise InputError("number_of_images: a sequence makes one image per frame (and no compute_normal)")
    sampler = relight_options.get("sampler")
    if sampler in samplers.STOCHASTIC:
        raise InputError(f"sampler: {sampler} draws one noise for a whole batch; a sequence needs another sampler")
    items, clip = frames_of(frames, start, end, stride)
    if not items:
        raise InputError("frames: none in the range given")
    given = masks_of(masks, len(items))
    for i, item in enumerate(items):  # a bad frame fails before any diffusion, named
        load_image_and_alpha(item, f"frames[{i}]")
    smoothed = None
    if given is None and options.smooth_mattes:
        smoothed = [m.round().astype(np.uint8) for m in _smoothed(relighter, items, relight_options.get("matting"))]
    frame_masks = given or smoothed or [None] * len(items)
    base = random_seed() if seed is None else seed
    seeds = [base if options.shared_noise else (base + i) % 2**63 for i in range(len(items))]
    requests = [
        relighter.request(item, background, prompt, mask=mask, seed=s, **relight_options)
        for item, mask, s in zip(items, frame_masks, seeds, strict=True)
    ]
    windows = plan_windows(len(requests), options.window)
    relit: list[Image.Image | None] = [None] * len(requests)
    mattes: list[np.ndarray | None] = [None] * len(requests)
    carried = references(windows[0], options.window) if len(windows) > 1 and options.consistency > 0 else []
    for number, window in enumerate(windows):
        members = ([] if number == 0 else carried) + window
        with cla.applied(relighter.unet.unet, options.consistency, options.layers):
            results = relighter.run_shared([requests[i] for i in members])
        for i, result in zip(members, results, strict=True):
            if isinstance(result, Exception):
                raise result
            if i in window:
                relit[i], mattes[i] = result.images[0], result.matte
    return SequenceResult(relit, seeds, mattes, windows, clip)


def _smoothed(relighter, items: list, matting: str | None) -> list[np.ndarray]:
    """The matting model's matte of every frame (its alpha where it has one), smoothed over
    neighbouring frames, in 0..255."""
    return [m * 255.0 for m in smooth([relighter.matte(item, None, matting)[0] for item in items])]
