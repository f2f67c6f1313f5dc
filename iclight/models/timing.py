"""Seconds per stage of a prediction, without making the host wait for the GPU mid-way."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

log = logging.getLogger("iclight")


def sync(device: torch.device) -> None:
    """Wait for the work queued on `device` (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def cuda_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """CUDA memory over the block, in GB, filled in when it ends (empty on the CPU): `peak_cuda_gb`
    (all that was allocated at the peak), `working_cuda_gb` (the peak above what was allocated
    when the block began) and `added_cuda_gb` (still allocated at its end, above that)."""
    found: dict[str, float] = {}
    if device.type != "cuda":
        yield found
        return
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    yield found
    peak, end = torch.cuda.max_memory_allocated(device), torch.cuda.memory_allocated(device)
    found.update(peak_cuda_gb=peak / 1e9, working_cuda_gb=(peak - start) / 1e9, added_cuda_gb=(end - start) / 1e9)


class StageTimer:
    """Wall-clock seconds per stage on the CPU. On CUDA the host only queues work, so a stage's
    wall time would be that of the work it queued, not did: there each stage is timed between
    CUDA events on the GPU's own timeline instead, read once the prediction is done."""

    def __init__(self, device: torch.device, quiet: bool = False) -> None:
        self.cuda = device.type == "cuda"
        self.quiet = quiet  # keep the times without logging them (a shared batch logs them per request)
        self.seconds: dict[str, float] = {}
        self._events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((name, start, end))
            return
        start_s = time.perf_counter()
        yield
        self._add(name, time.perf_counter() - start_s)

    def result(self) -> dict[str, float]:
        """Every stage's seconds (on CUDA this waits for the last recorded stage to finish)."""
        for name, start, end in self._events:
            end.synchronize()
            self._add(name, start.elapsed_time(end) / 1000)
        self._events.clear()
        return dict(self.seconds)

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if not self.quiet:
            log.info("%s: %.2f s", name, seconds)
