"""`python -m iclight.gpucheck --device cpu --quick`: the GPU check, end to end on the CPU, so
that it cannot rot between the sessions that have a GPU. It includes torch.compile with
Inductor: `weights prepare --compile` writes the cache, then a fresh boot loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu-check")
    weights = tmp_path_factory.mktemp("gpucheck-weights")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICLIGHT_", "TORCHINDUCTOR_"))}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "iclight.gpucheck", str(out), "--device", "cpu", "--quick", "--weights", str(weights)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "gpu-check.json").read_text()), run.stdout


def test_every_section_ran(report) -> None:
    data, printed = report
    assert data["mode"] == "quick" and data["machine"]["device"] == "cpu"
    assert data["weights"]["size"] == "tiny" and data["setup"]["ours_s"] > 0
    assert "no --reference" in data["parity"]["skipped"]
    assert set(data["speed"]) == {"1 image", "4 images, Left Light", "compute_normal"}
    assert all(s["ours_s"] > 0 and "background removal" in s["stages_s"] for s in data["speed"].values())
    assert data["memory"]["flat"] and len(data["memory"]["samples"]) == 5
    assert all(b["status"] == "completed" and b["next_prediction_s"] > 0 for b in data["big"].values())
    for part in ("parity with the hosted code", "speed (best of runs)", "big requests", "eager", "compile"):
        assert part in printed


def test_settings_against_eager(report) -> None:
    rows = {r["setting"]: r for r in report[0]["settings"]}
    assert {"eager", "fused_qkv", "channels_last", "attention=math"} <= rows.keys()
    for row in rows.values():
        assert "error" not in row, row
        assert row["within_tolerance"] and row["gain"] > 0


def test_compile_cache_is_written_then_loaded(report) -> None:
    boots = report[0]["compile"]
    cold = boots["cold (weights prepare --compile)"]
    warm = boots["warm"]
    assert cold["ok"], cold
    assert warm["warm_cache"] is True and warm["fx_cache_hits"] >= 1 and warm["fx_cache_misses"] == 0
    assert warm["graphs"] == 1  # one dynamic graph for both passes and four sizes
    assert warm["vs_eager"]["mean"] <= 1.0
    assert warm["boot_s"] < cold["wall_s"]


def test_host_syncs_are_counted_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting itself (CUDA's sync debug mode is stood in for: this is a CPU build)."""
    import types
    import warnings

    import torch

    from iclight.gpucheck import host_syncs

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def pipe(syncs: int):
        def call(**kwargs):
            for _ in range(syncs):
                warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
            return "latents"

        return call

    t2i, i2i = pipe(1), pipe(3)
    fake = types.SimpleNamespace(device=torch.device("cuda"), t2i=t2i, i2i=i2i)
    with host_syncs(fake) as counts:
        assert fake.t2i(prompt="x") == "latents" and fake.i2i() == "latents" and fake.i2i() == "latents"
    assert counts == {"low-res pass": 1, "high-res pass": 6}
    assert fake.t2i is t2i and fake.i2i is i2i and modes == ["warn", "default"] * 3
