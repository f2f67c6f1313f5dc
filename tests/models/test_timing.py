"""Stage timings: wall clock on the CPU, the GPU's own timeline on CUDA."""

from __future__ import annotations

import time

import pytest
import torch

from iclight.models.timing import StageTimer


def test_cpu_stages_are_wall_clock_and_repeated_stages_add_up() -> None:
    timer = StageTimer(torch.device("cpu"))
    for _ in range(2):
        with timer("low-res diffusion"):
            time.sleep(0.02)
    with timer("final decode"):
        pass
    seconds = timer.result()
    assert list(seconds) == ["low-res diffusion", "final decode"]
    assert 0.04 <= seconds["low-res diffusion"] < 0.5 and seconds["final decode"] < 0.02


def test_cuda_stages_are_read_from_events_after_the_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """No host sync inside a stage: events are only recorded there, and read in `result`."""
    recorded: list[str] = []

    class Event:
        clock = 0.0

        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing
            self.at, self.done = None, False

        def record(self) -> None:
            Event.clock += 0.25  # milliseconds between two records on the GPU's timeline
            self.at = Event.clock
            recorded.append("record")

        def synchronize(self) -> None:
            self.done = True

        def elapsed_time(self, end: Event) -> float:
            assert end.done, "read before the stage's work finished"
            return (end.at - self.at) * 1000

    monkeypatch.setattr(torch.cuda, "Event", Event)
    timer = StageTimer(torch.device("cuda"))
    for name in ("high-res diffusion", "final decode", "high-res diffusion"):
        with timer(name):
            pass
    assert recorded == ["record"] * 6 and timer.seconds == {}
    assert timer.result() == {"high-res diffusion": 0.5, "final decode": 0.25}


def test_a_timed_prediction_encodes_its_images_as_the_case_says(relighter, monkeypatch: pytest.MonkeyPatch) -> None:
    import iclight.imaging.images
    from benchmarks.bench import predict_once

    encoded = []
    record = lambda images, fmt, quality, folder: encoded.append((fmt, quality))  # noqa: E731
    monkeypatch.setattr(iclight.imaging.images, "save_images", record)
    small = dict(width=256, height=256, steps=1, highres_scale=1.0)
    cpu = torch.device("cpu")
    predict_once(relighter, {**small, "output_format": "png", "output_quality": 95}, cpu)
    run = predict_once(relighter, small, cpu)
    assert encoded == [("png", 95), ("webp", 80)]  # the hosted predictor's defaults when the case is silent
    assert run["predict_s"] >= run["stages_s"]["image encoding"] > 0


def test_cuda_memory_is_the_peak_above_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from iclight.models.timing import cuda_memory

    with cuda_memory(torch.device("cpu")) as cpu:
        pass
    assert cpu == {}
    allocated = [3e9]  # what the allocator holds now; the peak follows it
    peak = [0.0]
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: peak.__setitem__(0, allocated[0]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: allocated[0])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: peak[0])
    with cuda_memory(torch.device("cuda")) as found:
        peak[0] = 5.5e9  # a prediction's activations, freed before it ends
        allocated[0] = 3.25e9  # and something it kept
    assert found == pytest.approx({"peak_cuda_gb": 5.5, "working_cuda_gb": 2.5, "added_cuda_gb": 0.25})
