"""A job's files on disk: each written under a temporary name and renamed once complete, then a
done-marker, last, that tells a rerun to skip the job; and what a killed run left half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .job import Job, Outcome
from .recipe import sidecar_text

DONE_DIR = ".done"
RESULTS_FILE = "results.jsonl"
PART = ".part"


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + PART)
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def commit(out: Path, job: Job, outcome: Outcome, mark_done: bool = True) -> dict[str, Any]:
    """Write the outcome's files (each complete before it gets its name), then, for a
    success, the done-marker that tells a rerun to skip the job. Returns its record."""
    out.mkdir(parents=True, exist_ok=True)
    for f in outcome.files:
        write_atomic(out / f.name, f.data)
        if f.recipe is not None:
            write_atomic((out / f.name).with_suffix(".json"), sidecar_text(f.recipe))
    names = [f.name for f in outcome.files]
    if outcome.ok and mark_done:
        done = out / DONE_DIR
        done.mkdir(exist_ok=True)
        marker = {"id": job.id, "files": names, "seed": outcome.seed, "seconds": round(outcome.seconds, 3)}
        write_atomic(done / f"{job.id}.json", json.dumps(marker))
    return record(out, job, names, outcome.seed, outcome.error, outcome.seconds)


def record(out: Path, job: Job, names: list[str], seed: int | None, error: str | None, seconds: float) -> dict:
    """One line of results.jsonl."""
    return {
        "id": job.id,
        "status": "failed" if error else "succeeded",
        "outputs": [str(out / name) for name in names],
        "seed": seed,
        "error": error,
        "seconds": round(seconds, 3),
        "source": job.source,
    }


def finished(out: Path, job: Job) -> dict[str, Any] | None:
    """The record of a job a previous run completed, if its files are all still there."""
    try:
        marker = json.loads((out / DONE_DIR / f"{job.id}.json").read_text())
        names = [str(n) for n in marker["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not names or not all((out / n).is_file() for n in names):
        return None
    return record(out, job, names, marker.get("seed"), None, marker.get("seconds", 0.0))


def remove_partials(out: Path, jobs: list[Job]) -> int:
    """Delete half-written files a killed run left for these jobs (only ours: `ID-*.part`)."""
    if not out.is_dir():
        return 0
    ids = {job.id for job in jobs}
    removed = 0
    for path in [*out.glob(f"*{PART}"), *(out / DONE_DIR).glob(f"*{PART}")]:
        if any(path.name.startswith((f"{i}-", f"{i}.")) for i in ids):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
