"""A batch run: skip what is finished, run the rest (here or on Ray), write and report.

The same driver serves the local batch and the Ray one; only the executor differs, a
function from the jobs to run to their outcomes, in any order. The driver writes every
file (see `files.commit`), so a job's files appear exactly once, whole, whoever ran it.
`results.jsonl` in the output folder gets a line per job as it ends and, at the end, is
rewritten in job order with what became of every job, this run's and earlier runs'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .files import RESULTS_FILE, commit, finished, remove_partials, write_atomic
from .job import Job, Outcome

Executor = Callable[[list[Job]], Iterable[Outcome]]


@dataclass
class Summary:
    total: int
    skipped: int
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r["status"] == "failed"]

    @property
    def ran(self) -> int:
        return len(self.records) - self.skipped


def run_batch(jobs: list[Job], out: Path, executor: Executor) -> Summary:
    out.mkdir(parents=True, exist_ok=True)
    done = {job.id: rec for job in jobs if (rec := finished(out, job))}
    todo = [job for job in jobs if job.id not in done]
    remove_partials(out, todo)
    # Every job's seed was drawn when it was read, not on a worker: a job redone after a worker
    # died makes the same images.
    print(f"{len(jobs)} jobs: {len(done)} already done, {len(todo)} to run", flush=True)
    summary = Summary(len(jobs), len(done), dict(done))
    by_id = {job.id: job for job in todo}
    start = time.perf_counter()
    with open(out / RESULTS_FILE, "w") as log, tqdm(total=len(todo), desc="batch", unit="job") as bar:
        for record in done.values():
            log.write(json.dumps(record) + "\n")
        runnable = [job for job in todo if not job.error]
        outcomes = [Outcome(job.id, job.error, None, 0.0) for job in todo if job.error]
        failed = 0
        for outcome in chain(outcomes, executor(runnable) if runnable else ()):
            record = commit(out, by_id[outcome.id], outcome)
            summary.records[outcome.id] = record
            log.write(json.dumps(record) + "\n")
            log.flush()
            failed += not outcome.ok
            bar.update()
            bar.set_postfix(failed=failed, refresh=False)
    summary.seconds = time.perf_counter() - start
    _write_results(out, jobs, summary)
    return summary


def _write_results(out: Path, jobs: list[Job], summary: Summary) -> None:
    lines = [json.dumps(summary.records[job.id]) for job in jobs if job.id in summary.records]
    write_atomic(out / RESULTS_FILE, "".join(line + "\n" for line in lines))


def report(summary: Summary) -> str:
    ran = summary.ran
    rate = f", {ran / summary.seconds:.2f} jobs/s" if ran and summary.seconds > 0 else ""
    lines = [
        f"done: {ran - len(summary.failures)} succeeded, {summary.skipped} skipped, {len(summary.failures)} failed "
        f"of {summary.total} jobs in {summary.seconds:.1f} s{rate}"
    ]
    lines += [f"  FAILED {r['id']} ({r['source']}): {r['error']}" for r in summary.failures]
    return "\n".join(lines)
