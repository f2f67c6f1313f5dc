"""CUDA graphs of the eager UNet, checked on the CPU with a recorder that behaves like torch's:
replays copy new inputs into the recorded buffers and write every output into one buffer.

What only a GPU shows (that torch records the UNet, and the time it saves) is measured by
`python -m benchmarks.gpucheck` (its settings section has unet_graphs alone and in the defaults).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers.models.attention_processor import Attention
from torch.utils._python_dispatch import TorchDispatchMode

from iclight import standins
from iclight.core.spec import relight_spec
from iclight.models.cudagraphs import Forward, UNetGraphs
from iclight.models.speed import SpeedSettings
from iclight.models.unet import ConditionedUNet, widen_conv_in
from iclight.pipeline import Relighter

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


@pytest.fixture(scope="module")
def graphed(weights_dir: Path) -> Relighter:
    return Relighter.load(weights_dir, device="cpu")


def _relight(relighter: Relighter, subject: np.ndarray, background: np.ndarray, **extra) -> list[np.ndarray]:
    result = relighter.relight(subject, background, "sunset", **(SMALL | extra))
    return [np.asarray(image) for image in result.images]


def test_replayed_graphs_give_the_eager_pixels(
    graphed: Relighter, relighter: Relighter, subject_array, background_array
) -> None:
    graphs = graphed.unet.graphs = UNetGraphs(graphed.unet.joined, replaying)
    eager = _relight(relighter, subject_array, background_array, number_of_images=2)
    for _ in range(2):  # recorded, then replayed from the start
        assert all(
            np.array_equal(a, b)
            for a, b in zip(_relight(graphed, subject_array, background_array, number_of_images=2), eager, strict=True)
        )
    # one graph per pass; 3 low-res steps and round(3 / 0.5) * 0.5 = 3 high-res steps, each time
    assert graphs.summary() == {"recorded": 2, "replays": 12, "eager": 0, "failed": 0, "kept": 2}


def _how(unet: torch.nn.Module) -> tuple:
    """What a UNet computes beyond its inputs, read off its modules: every attention layer's
    processor (and its mix), and the adapters each LoRA layer adds, at their scales (none where
    they are disabled: the base layer alone)."""
    found = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            processor = module.processor
            found.append((name, type(processor).__name__, getattr(processor, "gamma", None)))
        elif hasattr(module, "scaling") and hasattr(module, "active_adapters") and not module.disable_adapters:
            found.append((name, tuple((a, module.scaling[a]) for a in module.active_adapters)))
    return tuple(found)


def test_a_graph_is_never_replayed_for_another_computation(
    graphed: Relighter, relighter: Relighter, subject_array, background_array, tmp_path: Path
) -> None:
    """A CUDA graph replays the kernels it recorded, whatever the UNet does now. This recorder
    notes every replay whose UNet computes otherwise than at recording: consistent light
    attention (a sequence's window) or another LoRA set. Three relights sharing a batch have a
    3-frame window's shapes: before and after a sequence they give the same pixels, and the
    sequence gives the pixels it gives without graphs."""
    unet, crossed = graphed.unet.unet, []

    def recording(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
        recorded, replay = _how(unet), replaying(forward, static)

        def checked(*inputs: torch.Tensor) -> torch.Tensor:
            if _how(unet) != recorded:
                crossed.append(inputs[0].shape)
            return replay(*inputs)

        return checked

    graphs = graphed.unet.graphs = UNetGraphs(graphed.unet.joined, recording)
    frames = [np.roll(subject_array, 9 * i, axis=1) for i in range(3)]
    masks = [np.where(f[..., 0] > 100, 255, 0).astype(np.uint8) for f in frames]
    size = SMALL | {"seed": 3}

    def plain(**extra) -> list[np.ndarray]:
        pairs = zip(frames, masks, strict=True)
        specs = [relight_spec(f, background_array, "sun", mask=m, **size, **extra) for f, m in pairs]
        return [np.asarray(r.images[0]) for r in graphed.run_shared(specs)]

    def sequence(on: Relighter) -> list[np.ndarray]:
        result = on.relight_sequence(frames, background_array, "sun", masks=masks, window=3, consistency=0.9, **size)
        return [np.asarray(im) for im in result.images]

    before = plain()
    assert graphs.stats.recorded == 2  # both passes
    within = sequence(graphed)
    after = plain()
    lora = standins.write_lora(graphed.weights_root, tmp_path / "style.safetensors")
    plain(loras=[f"{lora}:1.0"])
    again = plain()
    assert crossed == []
    assert graphs.stats.recorded == 6  # both passes: plain, under the window's attention, with the LoRA
    for a, b, c in zip(before, after, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    assert all(np.array_equal(a, b) for a, b in zip(within, sequence(relighter), strict=True))


def test_outputs_outlive_the_next_replay() -> None:
    graphs = UNetGraphs(lambda x, t: x * t, replaying)
    first = graphs(torch.ones(1, 4, 2, 2), torch.tensor(2.0))
    second = graphs(torch.ones(1, 4, 2, 2), torch.tensor(3.0))
    assert first.eq(2).all() and second.eq(3).all()


def test_a_graph_that_froze_its_inputs_is_dropped(
    graphed: Relighter, relighter: Relighter, subject_array, background_array, caplog: pytest.LogCaptureFixture
) -> None:
    graphs = graphed.unet.graphs = UNetGraphs(graphed.unet.joined, frozen)
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
    timestep = torch.empty((), device="meta", dtype=torch.int64)  # as the scheduler keeps it, on the device
    with torch.inference_mode(), HostReads() as reads:
        out = ConditionedUNet(unet).joined(sample, cond, timestep, text)
    assert out.shape == sample.shape and out.is_meta
    assert reads.found == []
