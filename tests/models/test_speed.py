"""Speed settings: defaults per device, the environment, what they put in place, and compiling:
torch.compile with Inductor, its cache written and then loaded by a fresh process. Every feature's
pixels under each setting against eager: `tests/models/test_deployment.py`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from diffusers.models.attention_processor import FusedAttnProcessor2_0
from torch.nn.attention import SDPBackend

from iclight.core.config import ConfigError
from iclight.models.compiled import CompileCache, Compiled, boot_compiled, cache_key, options
from iclight.models.speed import SpeedSettings, attention_backend, compile_request
from iclight.pipeline import Relighter

COMPILE_ENV, ATTENTION_ENV, CHANNELS_LAST_ENV = "ICLIGHT_COMPILE", "ICLIGHT_ATTENTION", "ICLIGHT_CHANNELS_LAST"
SMALL = dict(width=256, height=256, steps=2, highres_scale=1.5, seed=3)


def test_defaults_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SpeedSettings.default(torch.device("cpu")) == SpeedSettings()
    cuda = SpeedSettings.default(torch.device("cuda"))
    # channels_last stays off in eager: it cost 7% with 4 images on an H200, 15% on an H100 (docs/performance.md).
    assert cuda.fused_qkv and not cuda.channels_last and not cuda.compile
    assert cuda.label == "fused_qkv+unet_graphs"
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert SpeedSettings.default(torch.device("cuda")).label == "fused_qkv+channels_last+compile"
    monkeypatch.setenv(COMPILE_ENV, "all")
    assert SpeedSettings.default(torch.device("cpu")).label == "compile+compile_vae"
    monkeypatch.setenv(ATTENTION_ENV, "flash")
    assert SpeedSettings.default(torch.device("cpu")).attention == "flash"


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("", "eager"),
        ("0", "eager"),
        ("off", "eager"),
        ("1", "compile"),
        ("yes", "compile"),
        ("unet", "compile"),
        ("all", "compile+compile_vae"),
        ("graphs", "compile+cuda_graphs"),
    ],
)
def test_compile_request(monkeypatch: pytest.MonkeyPatch, value: str, label: str) -> None:
    monkeypatch.setenv(COMPILE_ENV, value)
    assert SpeedSettings.default(torch.device("cpu")).label == label


@pytest.mark.parametrize(
    ("compile", "value", "cuda", "cpu"),
    [
        ("", "", False, False),
        ("1", "", True, False),  # auto: on when compiling on CUDA
        ("1", "auto", True, False),
        ("1", "0", False, False),
        ("", "1", True, True),
        ("graphs", "off", False, False),
    ],
)
def test_channels_last_follows_compile_unless_told(
    monkeypatch: pytest.MonkeyPatch, compile: str, value: str, cuda: bool, cpu: bool
) -> None:
    monkeypatch.setenv(COMPILE_ENV, compile)
    monkeypatch.setenv(CHANNELS_LAST_ENV, value)
    assert SpeedSettings.default(torch.device("cuda")).channels_last is cuda
    assert SpeedSettings.default(torch.device("cpu")).channels_last is cpu


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHANNELS_LAST_ENV, "sideways")
    with pytest.raises(ConfigError, match=f"{CHANNELS_LAST_ENV}='sideways' is not allowed; use auto"):
        SpeedSettings.default(torch.device("cuda"))
    monkeypatch.delenv(CHANNELS_LAST_ENV)
    monkeypatch.setenv(COMPILE_ENV, "fast please")
    with pytest.raises(ConfigError, match=f"{COMPILE_ENV}='fast please' is not allowed"):
        SpeedSettings.default(torch.device("cpu"))
    with pytest.raises(ValueError, match="compile: 'fast'"):
        compile_request("fast")
    assert SpeedSettings(attention="warp").problems() == [
        "attention: 'warp'; choose one of auto, flash, efficient, cudnn, math"
    ]
    assert SpeedSettings(compile_vae=True).problems() == ["compile_vae and cuda_graphs need compile"]


def _image(relighter: Relighter, subject: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.asarray(relighter.relight(subject, background, "sun", **SMALL).images[0], dtype=np.int16)


def test_fused_qkv_and_channels_last_are_put_in_place(weights_dir: Path) -> None:
    fast = Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(fused_qkv=True, channels_last=True))
    processors = list(fast.unet.unet.attn_processors.values())
    assert processors and all(isinstance(p, FusedAttnProcessor2_0) for p in processors)
    assert fast.unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fast.unet.parameters())  # the fused weights frozen too


def test_attention_backend_is_applied(weights_dir: Path, relighter: Relighter, subject_array, background_array):
    math = Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(attention="math"))
    diff = np.abs(_image(math, subject_array, background_array) - _image(relighter, subject_array, background_array))
    assert diff.mean() <= 0.05
    q = torch.randn(1, 2, 8, 4)
    usual = torch._C._get_sdp_priority_order()
    with attention_backend("efficient"):  # first in line; the CPU has no such kernel, so the next one serves
        assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.EFFICIENT_ATTENTION)
        assert sorted(torch._C._get_sdp_priority_order()) == sorted(usual)
        assert torch.isfinite(torch.nn.functional.scaled_dot_product_attention(q, q, q)).all()
    assert torch._C._get_sdp_priority_order() == usual


def test_compile_cache_folders_and_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = cache_key(torch.device("cpu"))
    assert key.startswith("cpu-torch") and "/" not in key
    cpu = torch.device("cpu")
    one, both = (CompileCache(tmp_path, cpu, SpeedSettings(compile=True, compile_vae=v)) for v in (False, True))
    assert one.folder == both.folder == tmp_path / "compile-cache" / key  # Inductor's caches: shared
    assert one.artifacts != both.artifacts and one.artifacts.parent == one.folder  # the bundles: one per setting
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "compile-cache").write_text("not a folder")  # as unwritable as a read-only mount, even for root
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert CompileCache(weights, torch.device("cpu"), SpeedSettings(compile=True)).activate() is False
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ


def test_the_hosted_cuda_dtypes_run_on_the_cpu_with_the_cuda_defaults(
    weights_dir: Path, subject_array, background_array, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What CUDA runs (UNet and text encoder float16, VAE bfloat16, RMBG float32, fused QKV and
    channels_last), run with the CPU's half-precision kernels: no dtype seam breaks."""
    import iclight.pipeline.loading

    monkeypatch.setattr(iclight.pipeline.loading, "dtypes_for", lambda device: iclight.pipeline.loading.CUDA_DTYPES)
    mask = np.where(subject_array.mean(axis=2) > 90, 255, 0).astype(np.uint8)  # the matting is RMBG's float32
    options = SMALL | {"highres_scale": 1.0, "mask": mask}
    images = []
    for speed in (SpeedSettings(), SpeedSettings(fused_qkv=True, channels_last=True)):
        half = Relighter.load(weights_dir, device="cpu", use_prepared=False, speed=speed)
        assert (half.unet.dtype, half.vae.dtype, half.prompts.text_encoder.dtype) == (
            torch.float16,
            torch.bfloat16,
            torch.float16,
        )
        assert next(half.rmbg.parameters()).dtype == torch.float32
        images.append(np.asarray(half.relight(subject_array, background_array, "sun", **options).images[0], np.int16))
    normal = half.relight(subject_array, background_array, "sun", compute_normal=True, **options).images
    assert len(normal) == 9 and all(np.asarray(x).std() > 0 for x in normal)
    assert images[0].std() > 0
    assert np.abs(images[1] - images[0]).mean() <= 1.0  # the CUDA defaults against eager, in half precision


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def test_graphs_boot_warms_up_at_defaults_and_counts_runs_without_graphs(caplog: pytest.LogCaptureFixture) -> None:
    """ICLIGHT_COMPILE=graphs: Inductor falls back to plain compiled code without a word (here
    because this is the CPU), so the boot counts it and says so."""
    tiny = _Tiny()
    tiny.compile(mode="reduce-overhead", dynamic=True)

    class Relighting:  # what Relighter.warm_up calls
        default_loras = ()
        unets = ("fbc",)

        def relight(self, *args, **kwargs) -> None:
            sizes.append((kwargs["width"], kwargs["height"], kwargs["highres_scale"]))
            tiny(torch.randn(kwargs["width"] // 64, 8))

    sizes = []
    settings = SpeedSettings(compile=True, cuda_graphs=True)
    report = boot_compiled(settings, torch.device("cpu"), None, lambda: Relighter.warm_up(Relighting()))
    assert report["cuda_graph_skips"] == 1 and report["compile_s"] > 0 and report["warm_cache"] is False
    assert sizes == [(512, 640, 1.5)]  # warmed up (kernels tuned, graphs recorded) at the hosted defaults
    assert "without CUDA graphs (never on the CPU)" in caplog.text


class _Scaled(torch.nn.Module):
    """A layer with a setting its compiled code reads (as a LoRA's scale, an attention processor)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.scale = torch.nn.Linear(8, 8), 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def test_compiled_code_serves_what_it_warmed_up_and_says_once_why_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the warm-up nothing compiles: a call whose guards fail runs eager, the first of its
    reason logged (a deployment's stance was `eager_on_recompile`, which said nothing)."""
    layer = _Scaled()
    settings = SpeedSettings(compile=True, compile_backend="aot_eager")
    compiled = Compiled(layer, "a tiny layer", **options(settings))
    boot_compiled(settings, torch.device("cpu"), None, lambda: compiled(torch.randn(3, 8)), (compiled,))
    with caplog.at_level(logging.WARNING, logger="iclight"):
        for batch in (1, 2, 5):  # one graph for every batch, 1 too
            assert torch.equal(compiled(torch.ones(batch, 8)), layer(torch.ones(batch, 8)))
        layer.scale = 2.0  # what the warm-up did not run
        for _ in range(2):
            assert torch.equal(compiled(torch.ones(2, 8), computation=("scaled",)), layer(torch.ones(2, 8)))
    assert compiled.stats.compiled == 3 and compiled.stats.eager == 2
    warnings = [r.getMessage() for r in caplog.records if "runs eager" in r.getMessage()]
    assert len(warnings) == 1 and "a tiny layer" in warnings[0] and "scale" in compiled.stats.reasons[0]


COMPILE_CHILD = """
import json, sys, torch
from pathlib import Path
from torch._dynamo.utils import counters
from iclight.models.compiled import Compiled, boot_compiled, options
from iclight.models.speed import SpeedSettings
settings = SpeedSettings(compile=True)
layer = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU())
compiled = Compiled(layer, "a tiny layer", **options(settings))
warm_up = lambda: compiled(torch.randn(4, 8))
report = boot_compiled(settings, torch.device("cpu"), Path(sys.argv[1]), warm_up, (compiled,))
hits, misses = (int(counters["inductor"][f"fxgraph_cache_{k}"]) for k in ("hit", "miss"))
print(json.dumps(report | {"hits": hits, "misses": misses}))
"""


def test_inductor_writes_its_cache_beside_the_weights_and_a_fresh_process_loads_it(tmp_path: Path) -> None:
    """What `iclight weights prepare --compile` leaves for every replica: a cold boot compiles with
    Inductor and saves; the next process loads it (a tiny module stands in for the UNet)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICLIGHT_", "TORCHINDUCTOR_"))}
    env |= {"PYTHONPATH": str(ROOT), "TORCHINDUCTOR_VEC_ISA_OK": "0"}

    def boot() -> dict:
        run = subprocess.run(
            [sys.executable, "-c", COMPILE_CHILD, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
        )
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads(run.stdout.strip().splitlines()[-1])

    cold, warm = boot(), boot()
    assert cold["warm_cache"] is False and cold["misses"] >= 1
    assert warm["warm_cache"] is True and warm["hits"] >= 1 and warm["misses"] == 0
    assert any((tmp_path / "compile-cache").glob("*/artifacts-*.bin"))
