"""How one job runs: relighted and encoded (on a worker), its files then written (on the driver).

Running is split in two so that a job can run on one machine and be written on another:
`execute` relights and encodes, `files.commit` writes the files, each under a temporary name
renamed once complete, then a done-marker, last.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.hooks import NO_HOOKS, QUIET, Hooks
from ..core.spec import SequenceSpec
from ..core.validation import InputError
from ..imaging.images import encode_image
from .files import commit
from .job import Job, JobFailed, Outcome, OutputFile
from .recipe import encode_with_recipe, input_records, make_recipe, models_record, parameters, sidecar_text

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


def _run(relighter, job: Job, hooks: Hooks) -> list[OutputFile]:
    if isinstance(job.spec, SequenceSpec):
        return _sequence_files(relighter, job, relighter.run_sequence(job.spec, hooks))
    spec = job.spec
    result = relighter.run(spec, hooks)
    images = {"subject_image": spec.subject, "background_image": spec.background, "mask": spec.mask}
    inputs = input_records(images | {"light_map": spec.light_map})
    settings = parameters(spec, job.encoding, relighter.matting)
    weights, device, models = relighter.weights_hashes(), str(relighter.device), models_record(relighter, spec)
    fmt, quality = job.encoding.format, job.encoding.quality
    files = []
    for i, image in enumerate(result.images):
        recipe = make_recipe(settings, result.seed, i, inputs, weights, device) | {"models": models}
        files.append(OutputFile(f"{job.id}-{i}.{fmt}", encode_with_recipe(image, fmt, quality, recipe), recipe))
    if job.save_matte:
        matte = Image.fromarray((result.matte * 255).round().astype("uint8"))
        files.append(OutputFile(f"{job.id}-matte.png", _png(matte)))
        files.append(OutputFile(f"{job.id}-subject-on-grey.png", _png(Image.fromarray(result.subject_on_grey))))
    return files


def _sequence_files(relighter, job: Job, result) -> list[OutputFile]:
    """Every frame as ID-frame-NNNNN.FMT, the video as ID.mp4 (or .webm) where the frames came from
    one, and the recipe as ID.json, written last."""
    from ..imaging import video

    spec: SequenceSpec = job.spec
    fmt, quality = job.encoding.format, job.encoding.quality
    files = [
        OutputFile(f"{job.id}-frame-{i:05d}.{fmt}", encode_image(image, fmt, quality))
        for i, image in enumerate(result.images)
    ]
    if result.clip is not None:
        with tempfile.TemporaryDirectory() as tmp:
            frames = [np.asarray(im) for im in result.images]
            path = video.write(frames, result.clip.rate, Path(tmp) / job.id, result.clip)
            files.append(OutputFile(path.name, path.read_bytes()))
    relight = spec.relight
    frames_file = spec.frames if isinstance(spec.frames, str | Path) and Path(spec.frames).is_file() else None
    inputs = input_records({"frames": frames_file, "background_image": relight.background})
    inputs |= input_records({"light_map": relight.light_map})
    settings = parameters(relight, job.encoding, relighter.matting)
    recipe = make_recipe(settings, result.seeds[0], 0, inputs, relighter.weights_hashes(), str(relighter.device))
    recipe |= {"kind": "sequence", "frames": str(spec.frames), "sequence": spec.record(), "seeds": result.seeds}
    recipe |= {"windows": result.windows, "models": models_record(relighter, relight)}
    files.append(OutputFile(f"{job.id}.json", sidecar_text(recipe).encode()))
    return files


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def relight_one(relighter, job: Job, out: Path, hooks: Hooks = NO_HOOKS) -> dict[str, Any]:
    """One job in this process, its files written into `out` as NAME-SEED-N.FMT (the command
    line's `relight` and `sequence`, and the web app). Returns its record; raises JobFailed."""
    if job.error:
        raise JobFailed(job.error)
    job = replace(job, id=f"{job.id}-{job.seed}")
    outcome = execute(relighter, job, hooks)
    if outcome.error:
        raise JobFailed(outcome.error)
    return commit(out, job, outcome, mark_done=False)
