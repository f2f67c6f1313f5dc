"""A batch run: skip what is finished, run the rest (here or on Ray), write and report.

The same driver serves the local batch and the Ray one; only the executor differs, a function
from tasks (a job whole, or one window of a sequence job) to their outcomes, in any order. The
driver writes every file (`files.commit`, `sequence_files.SequenceFiles`), so a job's files appear exactly
once, whole, whoever ran it; a sequence's windows are written as they come, and a sequence cut
short continues after its last finished window when the batch is run again. `results.jsonl` in
the output folder gets a line per job as it ends and, at the end, is rewritten in job order
with what became of every job, this run's and earlier runs'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core.spec import SequenceSpec
from ..core.validation import InputError
from ..pipeline import windows
from . import sequence_files
from .files import RESULTS_FILE, commit, finished, record, remove_partials, write_atomic
from .job import Job, Outcome, Task

Executor = Callable[[list[Task]], Iterable[Outcome]]


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


class _Sequences:
    """The sequence jobs of a run: their plans and their files, written as their windows come."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.outputs: dict[str, sequence_files.SequenceFiles] = {}
        self.started: dict[str, float] = {}

    def tasks(self, job: Job) -> tuple[Job, list[Task]]:
        """The job as it began (a resumed one keeps its seed) and its windows left to run."""
        job, done = sequence_files.resume(self.out, job)
        plan = windows.plan(job.spec)  # the frames looked over: a bad source fails here
        plan.close()
        self.outputs[job.id] = sequence_files.SequenceFiles(self.out, job, plan, job.id, done)
        self.started[job.id] = time.perf_counter()
        return job, [Task(job, w) for w in range(len(plan.windows)) if w not in done]

    def add(self, outcome: Outcome) -> dict[str, Any] | None:
        """A window's outcome; the job's record once it is finished (or has failed)."""
        output = self.outputs.get(outcome.id)
        if output is None:  # the job failed already: its other windows are dropped
            return None
        if outcome.error:
            output.abandon()
            del self.outputs[outcome.id]
            return record(self.out, output.job, [], output.job.seed, outcome.error, outcome.seconds)
        output.add(outcome)
        if not output.complete:
            return None
        del self.outputs[outcome.id]
        return output.finish(time.perf_counter() - self.started[outcome.id])

    def finished_before_running(self) -> Iterator[dict[str, Any]]:
        """The records of sequences whose every window an earlier run finished."""
        for job_id in [j for j, o in self.outputs.items() if o.complete]:
            yield self.outputs.pop(job_id).finish(0.0)


def run_batch(jobs: list[Job], out: Path, executor: Executor) -> Summary:
    out.mkdir(parents=True, exist_ok=True)
    done = {job.id: rec for job in jobs if (rec := finished(out, job))}
    todo = [job for job in jobs if job.id not in done]
    remove_partials(out, todo)
    # Every job's seed was drawn when it was read, not on a worker: a job redone after a worker
    # died makes the same images (a sequence begun earlier keeps that run's seed).
    print(f"{len(jobs)} jobs: {len(done)} already done, {len(todo)} to run", flush=True)
    summary = Summary(len(jobs), len(done), dict(done))
    jobs_by_id = {job.id: job for job in todo}
    seqs = _Sequences(out)
    tasks, early = [], []
    for job in todo:
        if job.error:
            early.append(record(out, job, [], None, job.error, 0.0))
        elif isinstance(job.spec, SequenceSpec):
            try:
                job, windows = seqs.tasks(job)
                jobs_by_id[job.id] = job
                tasks += windows
            except InputError as e:
                early.append(record(out, job, [], job.seed, str(e), 0.0))
        else:
            tasks.append(Task(job))
    early += list(seqs.finished_before_running())
    start = time.perf_counter()
    with open(out / RESULTS_FILE, "w") as log, tqdm(total=len(todo), desc="batch", unit="job") as bar:
        for rec in done.values():
            log.write(json.dumps(rec) + "\n")

        failed = 0

        def note(rec: dict[str, Any]) -> None:
            nonlocal failed
            summary.records[rec["id"]] = rec
            log.write(json.dumps(rec) + "\n")
            log.flush()
            failed += rec["status"] == "failed"
            bar.update()
            bar.set_postfix(failed=failed, refresh=False)

        for rec in early:
            note(rec)
        for outcome in executor(tasks) if tasks else ():
            if outcome.window is None:
                note(commit(out, jobs_by_id[outcome.id], outcome))
            elif (rec := seqs.add(outcome)) is not None:
                note(rec)
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
