"""CUDA graphs of the eager UNet, checked on the CPU with recorders that behave like torch's:
replays copy new inputs into the recorded buffers and write every output into one buffer.

That every feature replays its graphs with the eager pixels, a graph never serving another
computation (a LoRA set, consistent light attention), is `tests/models/test_deployment.py`'s matrix, whose
recorder freezes what ran as a CUDA graph does. What only a GPU shows (that torch records the UNet,
and the time it saves) is measured by `make gpu-quick` and `make gpu-check`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from torch.utils._python_dispatch import TorchDispatchMode

from iclight.models.cudagraphs import Forward, UNetGraphs, cuda_capture
from iclight.models.speed import SpeedSettings
from iclight.models.unet import ConditionedUNet, widen_conv_in
from iclight.pipeline import Relighter, standins

COMPILE_ENV, UNET_GRAPHS_ENV = "ICLIGHT_COMPILE", "ICLIGHT_UNET_GRAPHS"
SMALL = dict(width=256, height=320, steps=3, highres_scale=1.5, seed=5)


def replaying(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
    """make_graphed_callables' contract: fixed input buffers, and one output buffer that each
    replay overwrites."""
    out = forward(*static)

    def replay(*inputs: torch.Tensor) -> torch.Tensor:
        for buffer, x in zip(static, inputs, strict=True):
            if buffer.data_ptr() != x.data_ptr():
                buffer.copy_(x)
        out.copy_(forward(*static))
        return out.detach()

    return replay


def frozen(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
    """A graph that froze what it saw at recording (as a host-made tensor would be)."""
    out = forward(*static)
    return lambda *inputs: out.detach()


def refusing(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
    raise RuntimeError("operation not permitted when stream is capturing")


def _graphed(weights_dir: Path, capture) -> tuple[Relighter, UNetGraphs]:
    """A relighter whose UNet's graphs are recorded by `capture`, as a deployment loads with them."""
    graphed = Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(unet_graphs=True), graph_capture=capture)
    return graphed, graphed.unet.fast


def _relight(relighter: Relighter, subject: np.ndarray, background: np.ndarray, **extra) -> list[np.ndarray]:
    result = relighter.relight(subject, background, "sunset", **(SMALL | extra))
    return [np.asarray(image) for image in result.images]


def test_a_matte_never_runs_while_a_graph_records(weights_dir: Path, subject_array, background_array) -> None:
    """torch's graph capture is global: model work in another thread while a graph records spoils
    it (and that shape runs eager from then on). This stand-in notes every module that runs in
    another thread while it records; the web app makes a matte's preview in its own thread."""
    recording, spoiled = threading.Event(), []

    def watched(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
        me = threading.get_ident()

        def note(module: torch.nn.Module, args) -> None:
            if threading.get_ident() != me:
                spoiled.append(type(module).__name__)

        handle = torch.nn.modules.module.register_module_forward_pre_hook(note)
        try:
            recording.set()
            time.sleep(1.0)  # a recording takes a while; the matte has asked by now
            return replaying(forward, static)
        finally:
            handle.remove()

    graphed, graphs = _graphed(weights_dir, watched)

    def matte() -> None:
        recording.wait(30)
        graphed.matte(subject_array[:, ::-1].copy())  # not the relight's subject, whose matte is cached

    other = threading.Thread(target=matte)
    other.start()
    try:
        _relight(graphed, subject_array, background_array)
    finally:
        other.join(60)
    assert graphs.stats.recorded == 2 and spoiled == []


def test_a_failed_recording_leaves_the_stream_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.graph's exit stops at a failing capture_end, before it sets the thread's stream
    back: the recorder does (torch's CUDA calls stood in for, on the CPU)."""
    streams = ["default"]

    def failing(forward, static, pool=None):
        streams.append("capture")  # as torch.cuda.graph's entry does
        raise RuntimeError("operation failed due to a previous error during capture")

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", failing)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: streams[-1])
    monkeypatch.setattr(torch.cuda, "set_stream", streams.append)
    with pytest.raises(RuntimeError, match="during capture"):
        cuda_capture()(lambda x: x, (torch.zeros(1),))
    assert streams[-1] == "default"


def test_outputs_outlive_the_next_replay() -> None:
    graphs = UNetGraphs(lambda x, t: x * t, replaying)
    first = graphs(torch.ones(1, 4, 2, 2), torch.tensor(2.0))
    second = graphs(torch.ones(1, 4, 2, 2), torch.tensor(3.0))
    assert first.eq(2).all() and second.eq(3).all()


def test_a_graph_that_froze_its_inputs_is_dropped(
    weights_dir: Path, relighter: Relighter, subject_array, background_array, caplog: pytest.LogCaptureFixture
) -> None:
    graphed, graphs = _graphed(weights_dir, frozen)
    with caplog.at_level(logging.WARNING, logger="iclight"):
        images = _relight(graphed, subject_array, background_array)
    assert np.array_equal(images[0], _relight(relighter, subject_array, background_array)[0])
    assert graphs.stats.failed == 2 and graphs.stats.replays == 0 and graphs.stats.recorded == 0
    assert "runs eager: its replay differs from eager" in caplog.text
    _relight(graphed, subject_array, background_array)
    assert graphs.stats.failed == 2  # not tried again for the same shapes


def test_a_refused_recording_runs_eager(caplog: pytest.LogCaptureFixture) -> None:
    graphs = UNetGraphs(lambda x: x + 1, refusing)
    with caplog.at_level(logging.WARNING, logger="iclight"):
        assert graphs(torch.zeros(1, 4, 8, 8)).eq(1).all()
    assert graphs.stats.failed == 1 and graphs.stats.eager == 1
    assert "operation not permitted when stream is capturing" in caplog.text


def test_big_batches_run_eager_and_few_graphs_are_kept() -> None:
    graphs = UNetGraphs(lambda x: x * 2, replaying, max_area=2 * 16 * 16, kept=2)
    graphs(torch.ones(4, 4, 16, 16))
    assert graphs.summary() == {"recorded": 0, "replays": 0, "eager": 1, "failed": 0, "kept": 0}
    for side in (8, 12, 16, 8):  # the first 8x8 graph was dropped for the 16x16 one
        assert graphs(torch.ones(2, 4, side, side)).eq(2).all()
    assert graphs.summary() == {"recorded": 4, "replays": 4, "eager": 1, "failed": 0, "kept": 2}


def test_graphs_switch_off_and_give_way_to_compile(monkeypatch: pytest.MonkeyPatch, weights_dir: Path) -> None:
    cuda = torch.device("cuda")
    monkeypatch.setenv(UNET_GRAPHS_ENV, "0")
    assert SpeedSettings.default(cuda).label == "fused_qkv"
    monkeypatch.setenv(UNET_GRAPHS_ENV, "sometimes")
    with pytest.raises(ValueError, match=UNET_GRAPHS_ENV):
        SpeedSettings.default(cuda)
    monkeypatch.setenv(UNET_GRAPHS_ENV, "1")
    monkeypatch.setenv(COMPILE_ENV, "graphs")  # compiling replaces them
    assert SpeedSettings.default(cuda).label == "fused_qkv+channels_last+compile+cuda_graphs"
    assert SpeedSettings.default(cuda, "off").label == "fused_qkv+unet_graphs"  # gpucheck's eager defaults
    assert SpeedSettings(compile=True, unet_graphs=True).problems()
    with pytest.raises(ValueError, match="need a CUDA device"):
        Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(unet_graphs=True))


class HostReads(TorchDispatchMode):
    """Notes each operator that a CUDA graph would refuse (a read back to the host, an output
    whose shape depends on values) or freeze (a tensor made on the host), on meta inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if func.__name__.startswith(("_local_scalar_dense", "nonzero")) or any(not t.is_meta for t in tensors):
            self.found.append(str(func))
        return func(*args, **kwargs)


@pytest.mark.parametrize("fused", [False, True])
def test_the_sd15_unet_step_has_nothing_a_graph_would_refuse_or_freeze(fused: bool) -> None:
    with init_empty_weights():
        unet = standins.unet("full")
    widen_conv_in(unet)
    unet = unet.to("meta", torch.float16)
    if fused:  # the defaults on CUDA
        unet.fuse_qkv_projections()
    meta = dict(device="meta", dtype=torch.float16)
    sample, cond, text = (
        torch.empty(2, 4, 80, 64, **meta),
        torch.empty(1, 8, 80, 64, **meta),
        torch.empty(2, 77, 768, **meta),
    )
    timestep = torch.empty((), device="meta", dtype=torch.float32)  # as the UNet's core gets it, on the device
    with torch.inference_mode(), HostReads() as reads:
        out = ConditionedUNet(unet).core(torch.cat([sample, cond.expand(2, -1, -1, -1)], dim=1), timestep, text)
    assert out.shape == sample.shape and out.is_meta
    assert reads.found == []
