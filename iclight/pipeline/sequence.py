"""One light across many frames: a product's views or a video's frames relit together.

Frames run in windows of shared diffusion batches (`Relighter.run_shared`), every frame a member
with its own seed: one seed for all (shared noise: frames differ only where their inputs differ)
or one each. Consistent light attention (`models/attention.py`) mixes each frame's self-attention
with the attention over its window's averaged keys and values, in both passes. Windows after the
first carry reference frames of the first window, so their averages stay anchored to it. Mattes
estimated per frame are smoothed over neighbouring frames, where a flickering edge would make the
relit frames flicker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.hooks import Hooks
from ..core.spec import SequenceSpec
from ..core.validation import InputError
from ..imaging import video
from ..imaging.images import IMAGE_SUFFIXES, load_image_and_alpha
from ..models import attention
from .results import SequenceResult

REFERENCES = 2  # frames of the first window carried into every later one


def frames_of(source: Any, start: int = 0, end: int | None = None, stride: int = 1) -> tuple[list, video.Clip | None]:
    """The frames of a list of images, a folder of images (sorted by name) or a video file."""
    if isinstance(source, list | tuple):
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


def run(relighter, spec: SequenceSpec, hooks: Hooks) -> SequenceResult:
    """Every frame relit as its own relight would be, with one light across them (see the module's
    docstring). The layers are resolved and every frame read before any matting or diffusion."""
    consistency = None
    if spec.consistency > 0:
        chosen = attention.layers(relighter.unet.unet, spec.layers)
        groups = 2 if spec.relight.settings.guided else 1
        consistency = attention.Consistency(spec.consistency, chosen, groups)
    items, clip = frames_of(spec.frames, spec.start, spec.end, spec.stride)
    if not items:
        raise InputError("frames: none in the range given")
    given = masks_of(spec.masks, len(items))
    for i, item in enumerate(items):  # a bad frame fails before any diffusion, named
        load_image_and_alpha(item, f"frames[{i}]")
    masks = given or (_smoothed(relighter, items, spec.relight.matting) if spec.smooth_mattes else None)
    masks = masks or [None] * len(items)
    frames = [spec.frame(item, m, seed) for item, m, seed in zip(items, masks, spec.seeds(len(items)), strict=True)]
    windows = plan_windows(len(frames), spec.window)
    relit: list[Image.Image | None] = [None] * len(frames)
    mattes: list[np.ndarray | None] = [None] * len(frames)
    carried = references(windows[0], spec.window) if len(windows) > 1 and consistency else []
    for number, window in enumerate(windows):
        members = ([] if number == 0 else carried) + window
        results = relighter.run_shared([frames[i] for i in members], hooks, consistency)
        for i, result in zip(members, results, strict=True):
            if isinstance(result, Exception):
                raise result
            if i in window:
                relit[i], mattes[i] = result.images[0], result.matte
        if hooks.frames_done is not None:
            hooks.frames_done(window[-1] + 1, len(frames))
    return SequenceResult(relit, spec.seeds(len(frames)), mattes, windows, clip)


def _smoothed(relighter, items: list, matting: str | None) -> list[np.ndarray]:
    """The matting model's matte of every frame (its alpha where it has one), smoothed over
    neighbouring frames, as 0..255 masks."""
    found = smooth([relighter.matte(item, None, matting)[0] for item in items])
    return [(m * 255.0).round().astype(np.uint8) for m in found]
