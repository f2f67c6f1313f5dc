"""How one job runs: relighted and encoded (on a worker), its files then written (on the driver).

Running is split in two so that a job can run on one machine and be written on another:
`execute` relights and encodes, `files.commit` writes the files, each under a temporary name
renamed once complete, then a done-marker, last.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.hooks import NO_HOOKS, QUIET, Hooks
from ..core.spec import SequenceSpec
from ..core.validation import InputError
from ..pipeline import windows
from . import sequence_files
from .files import commit
from .job import Job, JobFailed, Outcome, OutputFile, Task
from .recipe import encode_with_recipe, recipe_for

log = logging.getLogger("iclight")


def execute(relighter, job: Job, hooks: Hooks = QUIET) -> Outcome:
    """Relight one job and encode its files; a failure becomes the outcome's error. `hooks`: the
    run's (a batch's: no per-step progress bars, it shows its own per job)."""
    start = time.perf_counter()
    if job.error:
        return Outcome(job.id, job.error, job.seed, 0.0)
    try:
        files = _run(relighter, job, hooks)
    except (InputError, ValueError, OSError) as e:
        return Outcome(job.id, str(e), job.seed, time.perf_counter() - start)
    except Exception as e:  # one job's surprise must not end a catalogue's batch
        log.exception("job %s failed", job.id)
        return Outcome(job.id, f"{type(e).__name__}: {e}", job.seed, time.perf_counter() - start)
    return Outcome(job.id, None, job.seed, time.perf_counter() - start, files)


def execute_task(relighter, task: Task, plans: dict[str, Any], hooks: Hooks = QUIET) -> Outcome:
    """A task where it runs: a job whole, or a window of a sequence job (its plan kept in `plans`
    for the job's next windows); a failure becomes the outcome's error."""
    if task.window is None:
        return execute(relighter, task.job, hooks)
    job, start = task.job, time.perf_counter()
    try:
        if job.id not in plans:
            plans[job.id] = windows.plan(job.spec)
        return sequence_files.window_files(relighter, job, plans[job.id], task.window, job.id, hooks)
    except Exception as e:  # one window's failure fails its job, never the batch
        error = str(e) if isinstance(e, InputError | ValueError | OSError) else f"{type(e).__name__}: {e}"
        return Outcome(job.id, error, job.seed, time.perf_counter() - start, window=task.window)


def _run(relighter, job: Job, hooks: Hooks) -> list[OutputFile]:
    spec = job.spec
    result = relighter.run(spec, hooks)
    images = {"subject_image": spec.subject, "background_image": spec.background}
    first = recipe_for(relighter, spec, job.encoding, result.seed, images)
    fmt, quality = job.encoding.format, job.encoding.quality
    files = []
    for i, image in enumerate(result.images):
        recipe = first | {"index": i}
        files.append(OutputFile(f"{job.id}-{i}.{fmt}", encode_with_recipe(image, fmt, quality, recipe), recipe))
    if job.save_matte:
        matte = Image.fromarray((result.matte * 255).round().astype("uint8"))
        files.append(OutputFile(f"{job.id}-matte.png", _png(matte)))
        files.append(OutputFile(f"{job.id}-subject-on-grey.png", _png(Image.fromarray(result.subject_on_grey))))
    return files


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def relight_one(relighter, job: Job, out: Path, hooks: Hooks = NO_HOOKS) -> dict[str, Any]:
    """One job in this process, its files written into `out` as NAME-SEED-N.FMT, a sequence's as
    it goes (the command line's `relight` and `sequence`, `reproduce`, the web app). Returns its
    record; raises JobFailed."""
    if job.error:
        raise JobFailed(job.error)
    if isinstance(job.spec, SequenceSpec):
        try:
            return sequence_files.run_here(relighter, job, out, hooks, with_seed=True)
        except (InputError, ValueError, OSError) as e:
            raise JobFailed(str(e)) from e
    job = replace(job, id=f"{job.id}-{job.seed}")
    outcome = execute(relighter, job, hooks)
    if outcome.error:
        raise JobFailed(outcome.error)
    return commit(out, job, outcome, mark_done=False)
