"""One light across many frames: a product's views or a video's frames relit together.

Frames run in windows of shared diffusion batches (`Relighter.run_shared`), every frame a member
with its own seed: one seed for all (shared noise: frames differ only where their inputs differ)
or one each. Consistent light attention (`models/attention.py`) mixes each frame's self-attention
with the attention over its window's averaged keys and values, in both passes. Windows after the
first carry reference frames of the first window, so their averages stay anchored to it; every
window is thus complete in itself, and can run anywhere, in any order, with the same pixels.
Mattes estimated per frame are smoothed over neighbouring frames, where a flickering edge would
make the relit frames flicker.

A sequence is planned first (`plan`: its frames looked over, nothing decoded), then run window by
window (`run_window`); `stream` gives the windows in order as they are done, so a long clip is never
held whole. The background may be one image, or a video or a folder of images: frame k of the
background under frame k of the subject (the same range and stride).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ..core import constants as C
from ..core.hooks import Hooks
from ..core.spec import RelightSpec, SequenceSpec
from ..core.validation import InputError
from ..imaging import video
from ..imaging.images import IMAGE_SUFFIXES, load_image_and_alpha
from ..matting.mattes import NONE
from .results import SequenceResult

REFERENCES = 2  # frames of the first window carried into every later one
# What `run` may hold in memory of relit frames and their mattes (a resource: the host's memory);
# longer clips go window by window to disk (`iclight sequence`, a manifest, `jobs.sequences`).
IN_MEMORY_BYTES = 4 << 30


class Relights(Protocol):
    """What running a sequence's windows needs of a relighter (`pipeline.Relighter`): its UNet's
    modules (where the attention layers are), mattes, and diffusion batches the frames share."""

    @property
    def unet(self) -> Any: ...

    @property
    def matting(self) -> str: ...

    def matte(self, subject: Any, mask: Any = None, matting_choice: str | None = None) -> tuple[np.ndarray, Any]: ...

    def run_shared(
        self, specs: list[RelightSpec], hooks: Hooks, consistency: Any = None, one_generator: bool = False
    ) -> list[Any]: ...


class Source:
    """A sequence's frames (or backgrounds) by source index, read when asked for: a list of
    images, a folder of images in name order, or a video file."""

    def __init__(self, given: Any, name: str) -> None:
        self.name, self.video, self.items = name, None, None
        if isinstance(given, list | tuple):
            self.items = list(given)
            return
        path = Path(given)
        if path.is_dir():
            self.items = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.items:
                raise InputError(f"{name}: {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
        elif not path.exists():
            raise InputError(f"{name}: {path} does not exist")
        else:
            self.video = video.probe(path, name)
            self._frames = video.Frames(self.video)

    @property
    def count(self) -> int:
        return self.video.count if self.video else len(self.items)

    def get(self, indices: list[int]) -> dict[int, Any]:
        if self.video is not None:
            return self._frames.get(indices)
        return {i: self.items[i] for i in indices}

    def close(self) -> None:
        if self.video is not None:
            self._frames.close()


def is_sequence_source(value: Any) -> bool:
    """Whether a background is many (a video or a folder of images) rather than one image."""
    if not isinstance(value, str | os.PathLike):
        return False
    path = Path(value)
    return path.is_dir() or video.is_video(path)


@dataclass
class Plan:
    """A sequence looked over: which source frame each of its frames is, its windows and their
    carried references, every frame's seed, its masks and its backgrounds, nothing decoded."""

    spec: SequenceSpec
    frames: Source
    picks: list[int]  # the source index of each frame
    backgrounds: Source | None
    masks: list | None
    windows: list[list[int]]
    carried: list[int]
    seeds: list[int]

    @property
    def count(self) -> int:
        return len(self.picks)

    def seconds(self, i: int) -> float | None:
        """Frame i's time in the source video from the first frame's (None: not a video)."""
        info = self.frames.video
        return None if info is None else info.seconds(self.picks[i]) - info.seconds(self.picks[0])

    def background_index(self, i: int) -> int:
        k, total = self.picks[i], self.backgrounds.count
        if k < total:
            return k
        return k % total if self.spec.background_fit == "loop" else total - 1

    def close(self) -> None:
        self.frames.close()
        if self.backgrounds is not None:
            self.backgrounds.close()


def plan(spec: SequenceSpec) -> Plan:
    """Everything a sequence's windows need to know before any runs, checked, with no model: the
    frames and their range, the masks' count, the backgrounds (where a run happens the attention
    layers are checked against its UNet, before any frame is read)."""
    frames = Source(spec.frames, "frames")
    picks = list(range(frames.count))[spec.start : spec.end : spec.stride]
    if not picks:
        raise InputError(f"frames: none in the range given ({frames.count} in all)")
    backgrounds = Source(spec.relight.background, "background") if is_sequence_source(spec.relight.background) else None
    if backgrounds is not None and spec.background_fit == "exact" and backgrounds.count != frames.count:
        raise InputError(
            f"background: {backgrounds.count} background frames for {frames.count} frames; background_fit "
            "'exact' needs as many (hold or loop take a shorter background)"
        )
    masks = masks_of(spec.masks, len(picks))
    windows = plan_windows(len(picks), spec.window)
    carried = references(windows[0], spec.window) if len(windows) > 1 and spec.consistency > 0 else []
    return Plan(spec, frames, picks, backgrounds, masks, windows, carried, spec.seeds(len(picks)))


def consistency_of(relighter: Relights, spec: SequenceSpec):
    """Consistent light attention (`models.attention.Consistency`) on the relighter's UNet: its
    layers chosen by `layers` (named where they cannot be), its groups by the guidance."""
    if spec.consistency == 0:
        return None
    from ..models import attention

    chosen = attention.layers(relighter.unet.unet, spec.layers)
    return attention.Consistency(spec.consistency, chosen, 2 if spec.relight.settings.guided else 1)


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
    """Frames in windows of `size` (0: one window of every frame)."""
    size = size or count
    return [list(range(i, min(i + size, count))) for i in range(0, count, size)]


def references(first: list[int], size: int) -> list[int]:
    """Frames of the first window carried into later ones, evenly spread, leaving room for one new frame."""
    k = min(REFERENCES, size - 1, len(first))
    if k <= 0:
        return []
    return sorted({first[round(j * (len(first) - 1) / max(k - 1, 1))] for j in range(k)})


@dataclass
class Relit:
    """One frame of a sequence, relit."""

    index: int
    image: Image.Image
    matte: np.ndarray


def run_window(relighter: Relights, p: Plan, number: int, hooks: Hooks) -> list[Relit]:
    """Window `number` of the plan: its frames (and the first window's references) read, matted
    and relit in one shared batch; the window's own frames back, in order."""
    consistency = consistency_of(relighter, p.spec)  # a bad rule fails before any frame is read
    window = p.windows[number]
    members = ([] if number == 0 else p.carried) + window
    images = _read(p, members)
    masks = _masks(relighter, p, members, images)
    backgrounds = _backgrounds(p, members)
    specs = [p.spec.frame(i, images[i], masks[i], p.seeds[i], backgrounds[i]) for i in members]
    results = relighter.run_shared(specs, hooks, consistency, p.spec.batch_noise)
    found = {}
    for i, result in zip(members, results, strict=True):
        if isinstance(result, Exception):
            raise result
        found[i] = Relit(i, result.images[0], result.matte)
    return [found[i] for i in window]


def _read(p: Plan, indices: list[int]) -> dict[int, Any]:
    """Frames by sequence index, each read and named where it cannot be (before any diffusion)."""
    got = p.frames.get([p.picks[i] for i in indices])
    images = {i: got[p.picks[i]] for i in indices}
    for i, image in images.items():
        if p.frames.video is None:
            load_image_and_alpha(image, f"frames[{i}]")
    return images


def _masks(relighter: Relights, p: Plan, members: list[int], images: dict[int, Any]) -> dict[int, Any]:
    """Each member's mask: the given one, else its estimated matte smoothed over its neighbours
    (as 0..255), else none (the relight estimates it)."""
    if p.masks is not None:
        return {i: p.masks[i] for i in members}
    relight = p.spec.relight
    whole = relight.model == C.FC and (relight.matting or relighter.matting) == NONE  # every frame whole
    if not p.spec.smooth_mattes or whole:
        return dict.fromkeys(members)
    around = sorted({j for i in members for j in (i - 1, i, i + 1) if 0 <= j < p.count})
    images |= _read(p, [j for j in around if j not in images])
    raw = {j: relighter.matte(images[j], None, p.spec.relight.matting)[0] for j in around}
    found = {}
    for i in members:
        trio = [raw[j] for j in (i - 1, i, i + 1) if j in raw]
        smoothed = smooth(trio)[1] if len(trio) == 3 else raw[i]
        found[i] = (smoothed * 255.0).round().astype(np.uint8)
    return found


def _backgrounds(p: Plan, members: list[int]) -> dict[int, Any]:
    if p.backgrounds is None:
        return dict.fromkeys(members, p.spec.relight.background)
    wanted = {i: p.background_index(i) for i in members}
    got = p.backgrounds.get(sorted(set(wanted.values())))
    return {i: got[k] for i, k in wanted.items()}


def stream(
    relighter: Relights, p: Plan, hooks: Hooks, done: set[int] = frozenset()
) -> Iterator[tuple[int, list[Relit]]]:
    """The windows not `done`, in order, each as soon as it is relit; `hooks.frames_done` is told
    the frames done before, then after each window."""
    finished = sum(len(p.windows[w]) for w in done)
    if hooks.frames_done is not None:
        hooks.frames_done(finished, p.count)
    for number in [n for n in range(len(p.windows)) if n not in done]:
        relit = run_window(relighter, p, number, hooks)
        finished += len(relit)
        if hooks.frames_done is not None:
            hooks.frames_done(finished, p.count)
        yield number, relit


def run(relighter: Relights, spec: SequenceSpec, hooks: Hooks) -> SequenceResult:
    """Every frame relit and held in memory (`stream` gives long clips window by window)."""
    p = plan(spec)
    try:
        _fits_in_memory(p)
        relit = [frame for _, window in stream(relighter, p, hooks) for frame in window]
    finally:
        p.close()
    times = [p.seconds(i) for i in range(p.count)] if p.frames.video else None
    images, mattes = [r.image for r in relit], [r.matte for r in relit]
    return SequenceResult(images, p.seeds, mattes, p.windows, p.frames.video, times)


def _fits_in_memory(p: Plan) -> None:
    s = p.spec.relight.settings
    width, height = s.highres_size
    subject = p.frames.video.size if p.frames.video else (width, height)
    need = p.count * (width * height * 3 + subject[0] * subject[1] * 4)
    if need > IN_MEMORY_BYTES:
        raise InputError(
            f"frames: {p.count} relit frames and their mattes would hold {need / 2**30:.1f} GB in memory (at most "
            f"{IN_MEMORY_BYTES / 2**30:.0f} GB here); `iclight sequence` or a manifest writes them as they are made"
        )
