"""A report saved after every section, so that a run cut short keeps what it measured; optional
sections skipped by request or when the time limit is reached; a failing section recorded while
the run goes on."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sections:
    """What every GPU report has: how it ran, and how long each section took."""

    mode: str
    machine: dict[str, Any] = field(default_factory=dict)
    sections_s: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # section -> what it raised (the run went on)
    seconds: float = 0.0


class Progress:
    """Saves the report (as `name`) after every section, and keeps the optional sections within
    the time limit (None: no limit)."""

    def __init__(self, report: Sections, out: Path, limit: float | None, skip: set[str], name: str) -> None:
        self.report, self.path, self.limit, self.skip = report, out / name, limit, skip
        self.start = time.perf_counter()

    def left(self) -> float | None:
        return None if self.limit is None else self.limit - (time.perf_counter() - self.start)

    def out_of_time(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    def wants(self, name: str) -> bool:
        """Whether optional section `name` runs: neither skipped by request nor out of time."""
        if name in self.skip:
            self.report.skipped[name] = "--skip"
            return False
        if self.out_of_time():
            self.report.skipped[name] = "out of time (--time-limit)"
            return False
        return True

    @contextmanager
    def section(self, name: str, fatal: bool = False) -> Iterator[None]:
        """Time and save section `name`. An error in a section that is not `fatal` is recorded
        and the run goes on: one broken part must not cost the whole run."""
        start = time.perf_counter()
        try:
            yield
        except Exception as e:
            if fatal:
                raise
            self.report.errors[name] = "".join(traceback.format_exception(e))[-3000:]
            print(f"{self.path.stem}: {name} failed: {type(e).__name__}: {e}", flush=True)
        finally:
            self.report.sections_s[name] = time.perf_counter() - start
            self.save()
        print(f"{self.path.stem}: {name} done in {self.report.sections_s[name]:.0f} s", flush=True)

    def save(self) -> None:
        self.report.seconds = time.perf_counter() - self.start
        self.path.write_text(json.dumps(asdict(self.report), indent=1, default=str))
