"""A job (one relight or one sequence, checked, with where its files go) and what became of it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..core import constants as C
from ..core.spec import Encoding, RelightSpec, SequenceSpec

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


@dataclass(frozen=True)
class Job:
    """One relight or sequence to run, checked at its door; its files are named from `id`.
    A job that cannot run (a bad manifest line) has no spec and says why in `error`."""

    id: str
    spec: RelightSpec | SequenceSpec | None
    encoding: Encoding | None = None
    source: str = ""  # "list.jsonl:3", or the subject's path
    error: str | None = None
    save_matte: bool = False
    key: str = ""  # what the job is (its files and settings, a seed only where one was given)

    @property
    def relight(self) -> RelightSpec | None:
        """The relight (a sequence's: the one its frames share)."""
        return self.spec.relight if isinstance(self.spec, SequenceSpec) else self.spec

    @property
    def seed(self) -> int | None:
        return None if self.relight is None else self.relight.seed


def models_for(jobs: list[Job]) -> str | None:
    """The IC-Light models a relighter must serve to run every job that can run: fbc, fc or both
    (None where no job can run)."""
    found = {job.relight.model for job in jobs if job.relight is not None}
    return C.BOTH if len(found) > 1 else next(iter(found), None)


@dataclass(frozen=True)
class Task:
    """What one worker runs: a job whole, or one window of a sequence job."""

    job: Job
    window: int | None = None


@dataclass
class OutputFile:
    name: str
    data: bytes
    recipe: dict[str, Any] | None = None  # images carry one, also written as NAME.json


@dataclass
class Outcome:
    """What became of one job, with its encoded files (not yet written)."""

    id: str
    error: str | None
    seed: int | None
    seconds: float
    files: list[OutputFile] = field(default_factory=list)
    window: int | None = None  # a sequence window's frames, where it is one
    recipe: dict[str, Any] | None = None  # a sequence's recipe (its first window's worker makes it)

    @property
    def ok(self) -> bool:
        return self.error is None


class JobFailed(RuntimeError):
    """A single relight that could not be done; the message says why (naming the input)."""
