"""A sequence job written as it runs: each window's frames written whole as the window is done,
the video encoded in frame order as the windows before it are done, and what is done kept in a
progress file, so that a run killed part-way (even by SIGKILL) and started again with the same
command continues after its last finished window and ends with the same frames.

The frames and the video are made from the same encoded frame files whichever run wrote them;
the video is written under a temporary name and renamed once complete, the recipe and the
done-marker last: nothing half-written looks finished. Windows may be done anywhere and in any
order (on Ray's actors): a window is written once, however often it arrives.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.hooks import Hooks
from ..core.spec import SequenceSpec
from ..imaging.images import encode_image
from ..pipeline import windows
from .files import DONE_DIR, record, write_atomic
from .job import Job, Outcome, OutputFile
from .recipe import recipe_for, sidecar_text

log = logging.getLogger("iclight")
PROGRESS_DIR = ".progress"


def resume(out: Path, job: Job) -> tuple[Job, set[int]]:
    """`job` as an earlier run of it began (its seed, where it drew one), and the windows that run
    finished; a job not begun, or begun with other inputs or settings, starts anew."""
    progress = _read_progress(out, job)
    if progress is None:
        return job, set()
    spec: SequenceSpec = job.spec
    job = replace(job, spec=replace(spec, relight=replace(spec.relight, seed=progress["seed"])))
    return job, set(progress["windows"])


def _read_progress(out: Path, job: Job) -> dict[str, Any] | None:
    try:
        found = json.loads((out / PROGRESS_DIR / f"{job.id}.json").read_text())
    except (OSError, ValueError):
        return None
    return found if found.get("key") == job.key else None


def frame_name(name: str, index: int, fmt: str) -> str:
    return f"{name}-frame-{index:05d}.{fmt}"


def window_files(relighter, job: Job, p: windows.Plan, number: int, name: str, hooks: Hooks) -> Outcome:
    """Window `number` of a sequence job relit and encoded where it runs (here, or on an actor)."""
    start = time.perf_counter()
    relit = windows.run_window(relighter, p, number, hooks)
    return _encoded(relighter, job, p, number, relit, name, time.perf_counter() - start)


def _encoded(relighter, job: Job, p: windows.Plan, number: int, relit: list, name: str, seconds: float) -> Outcome:
    """A window's frames encoded; the first window also carries the job's recipe (made once: it
    hashes every input file)."""
    fmt, quality = job.encoding.format, job.encoding.quality
    files = [OutputFile(frame_name(name, r.index, fmt), encode_image(r.image, fmt, quality)) for r in relit]
    recipe = recipe_of(relighter, job, p) if number == 0 else None
    return Outcome(job.id, None, job.seed, seconds, files, window=number, recipe=recipe)


def recipe_of(relighter, job: Job, p: windows.Plan) -> dict[str, Any]:
    """What makes the frames again (`iclight reproduce NAME.json`)."""
    spec: SequenceSpec = job.spec
    video_file = spec.frames if isinstance(spec.frames, str | Path) and Path(spec.frames).is_file() else None
    images = {"frames": video_file, "background_image": spec.relight.background}
    recipe = recipe_for(relighter, spec.relight, job.encoding, p.seeds[0], images)
    recipe |= {"kind": "sequence", "frames": str(spec.frames), "sequence": spec.record(), "seeds": p.seeds}
    return recipe | {"windows": p.windows}


class SequenceFiles:
    """A sequence job's files, written as its windows are done (see the module's docstring)."""

    def __init__(self, out: Path, job: Job, p: windows.Plan, name: str, done: set[int]) -> None:
        from ..imaging import video

        self.out, self.job, self.p, self.name = out, job, p, name
        fmt = job.encoding.format
        kept = {w for w in done if all((out / frame_name(name, i, fmt)).is_file() for i in p.windows[w])}
        self.recipe = (_read_progress(out, job) or {}).get("recipe")
        if self.recipe is None:
            kept.discard(0)  # the first window brings the recipe
        self.done, self.encoded = kept, 0
        out.mkdir(parents=True, exist_ok=True)
        info = p.frames.video
        self.writer = video.Writer(out / name, info.rate, self._audio()) if info else None
        self._feed()
        self._save()

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.p.windows)

    def add(self, outcome: Outcome) -> None:
        """A window's frames (written once, however often the window arrives)."""
        if outcome.window in self.done:
            return
        for f in outcome.files:
            write_atomic(self.out / f.name, f.data)
        self.done.add(outcome.window)
        self.recipe = self.recipe or outcome.recipe
        self._save()
        self._feed()

    def _feed(self) -> None:
        """The frames of the windows done in a row from the start, into the video, in order."""
        while self.encoded < len(self.p.windows) and self.encoded in self.done:
            if self.writer is not None:
                for i in self.p.windows[self.encoded]:
                    self.writer.add(self._pixels(i), self.p.seconds(i))
            self.encoded += 1

    def _pixels(self, i: int) -> np.ndarray:
        data = (self.out / frame_name(self.name, i, self.job.encoding.format)).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def _save(self) -> None:
        folder = self.out / PROGRESS_DIR
        folder.mkdir(exist_ok=True)
        state = {"key": self.job.key, "seed": self.job.seed, "windows": sorted(self.done), "recipe": self.recipe}
        write_atomic(folder / f"{self.job.id}.json", json.dumps(state))

    def finish(self, seconds: float, mark_done: bool = True) -> dict[str, Any]:
        """The video given its name, the recipe written, then the done-marker; the progress gone."""
        fmt = self.job.encoding.format
        names = [frame_name(self.name, i, fmt) for i in range(self.p.count)]
        if self.writer is not None:
            names.append(self.writer.close().name)
        write_atomic(self.out / f"{self.name}.json", sidecar_text(self.recipe))
        names.append(f"{self.name}.json")
        if mark_done:
            marker = {"id": self.job.id, "files": names, "seed": self.job.seed, "seconds": round(seconds, 3)}
            (self.out / DONE_DIR).mkdir(exist_ok=True)
            write_atomic(self.out / DONE_DIR / f"{self.job.id}.json", json.dumps(marker))
        (self.out / PROGRESS_DIR / f"{self.job.id}.json").unlink(missing_ok=True)
        return record(self.out, self.job, names, self.job.seed, None, seconds)

    def _audio(self) -> tuple[Path, float, float] | None:
        """The source's audio over the frames' range: from the first frame to the one after the last."""
        info, picks = self.p.frames.video, self.p.picks
        if not info.audio:
            return None
        after = picks[-1] + 1
        end = info.seconds(after) if after < info.count else info.seconds(picks[-1]) + 1 / float(info.rate)
        return info.path, info.seconds(picks[0]), end

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.abandon()


def run_here(relighter, job: Job, out: Path, hooks: Hooks, with_seed: bool = False) -> dict[str, Any]:
    """A sequence job in this process, window by window, its files written into `out` as it goes
    (named ID-SEED-... with `with_seed`, as `iclight sequence` and the web app name them)."""
    start = time.perf_counter()
    job, done = resume(out, job)
    p = windows.plan(job.spec)
    name = f"{job.id}-{job.seed}" if with_seed else job.id
    output = SequenceFiles(out, job, p, name, done)
    if done:
        log.info("%s: %d of %d windows done before; going on after them", job.id, len(done), len(p.windows))
    try:
        began = time.perf_counter()
        for number, relit in windows.stream(relighter, p, hooks, set(output.done)):
            output.add(_encoded(relighter, job, p, number, relit, name, time.perf_counter() - began))
            began = time.perf_counter()
        return output.finish(time.perf_counter() - start, mark_done=not with_seed)
    except BaseException:
        output.abandon()
        raise
    finally:
        p.close()
