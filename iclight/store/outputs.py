"""Where the Cog predictor writes each prediction's files, and how they are kept bounded.

The Cog server reads a prediction's output files once, to encode or upload them, and
never removes them; a server that runs for months would fill its disk. Each prediction
gets its own folder under one root (`ICLIGHT_OUTPUT_DIR`, else a folder in the system's
temporary directory) holding a marker that lists what we wrote. Whenever a new folder is
finished, the older ones are pruned:

- this process keeps its `keep` most recent finished folders, and at least as many as the
  server takes predictions at once (`COG_MAX_CONCURRENCY`): a slot is free again only once its
  prediction has been answered, so no more than that many finish before a folder is read;
- folders of other processes (an earlier run of the server, a neighbour sharing the
  root) are removed only once they are older than `stale_after_s`;
- a folder still being written is never touched, and only the files named in a marker
  are deleted: a folder holding anything else is left in place.

The Python API and the command line never go through here: files they write are the user's.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core import config

log = logging.getLogger("iclight")

MARKER = ".iclight-outputs.json"
DEFAULT_KEEP = config.KEEP_OUTPUTS.default
DEFAULT_STALE_AFTER_S = 3600.0


class OutputFolders:
    """Hands out one fresh folder per prediction and prunes old ones (thread-safe)."""

    def __init__(
        self, root: Path | None = None, keep: int = DEFAULT_KEEP, stale_after_s: float = DEFAULT_STALE_AFTER_S
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep: must keep at least 1 output folder, got {keep}")
        self.root = Path(root) if root else config.OUTPUT_DIR.read()
        self.keep = keep
        self.stale_after_s = stale_after_s
        self._pid = os.getpid()
        self._in_flight: set[Path] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> OutputFolders:
        return cls(config.OUTPUT_DIR.read(), max(config.KEEP_OUTPUTS.read(), config.COG_CONCURRENCY.read()))

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """A new folder for one prediction's files; on a clean exit its files are recorded
        as ours, so that a later prune may remove them."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        _write_marker(path, {"pid": self._pid, "files": [], "complete": False})
        with self._lock:
            self._in_flight.add(path)
        try:
            yield path
        finally:
            # Also after a failure: what was written is recorded, so it can be pruned.
            files = sorted(p.name for p in path.iterdir() if p.name != MARKER)
            _write_marker(path, {"pid": self._pid, "files": files, "complete": True})
            with self._lock:
                self._in_flight.discard(path)
        self.prune()

    def prune(self) -> list[Path]:
        """Remove what is no longer needed (see the module's docstring); returns what went."""
        with self._lock:
            in_flight = set(self._in_flight)
        now = time.time()
        mine, removable = [], []
        for path, marker, age in self._ours(now):
            if path in in_flight:
                continue
            if marker.get("pid") == self._pid and marker.get("complete"):
                mine.append((age, path, marker))
            elif age > self.stale_after_s:
                removable.append((path, marker))
        mine.sort(key=lambda item: item[0])  # youngest first
        removable += [(path, marker) for _, path, marker in mine[self.keep :]]
        return [path for path, marker in removable if _remove(path, marker)]

    def _ours(self, now: float) -> Iterator[tuple[Path, dict, float]]:
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return
        for path in entries:
            marker_path = path / MARKER
            try:
                marker = json.loads(marker_path.read_text())
                age = now - marker_path.stat().st_mtime
            except (OSError, ValueError):
                continue  # not a folder of ours, or one being removed by a neighbour
            if isinstance(marker, dict):
                yield path, marker, age


def _write_marker(folder: Path, content: dict) -> None:
    tmp = folder / (MARKER + ".part")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, folder / MARKER)


def _remove(folder: Path, marker: dict) -> bool:
    """Delete the files the marker names and the marker; then the folder, unless it holds
    something else (which stays, in a folder that is no longer marked as ours)."""
    try:
        for name in marker.get("files", []):
            if isinstance(name, str) and "/" not in name and name not in ("", ".", "..", MARKER):
                (folder / name).unlink(missing_ok=True)
        (folder / MARKER).unlink(missing_ok=True)
        folder.rmdir()
    except FileNotFoundError:
        return True  # a neighbour pruning the same root got there first
    except OSError:
        log.warning("output folder %s holds files iclight did not write; they are left in place", folder)
        return False
    return True
