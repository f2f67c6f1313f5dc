"""What a GPU deployment runs, run here: `make gpu-quick`'s CPU mode (`benchmarks/gpu/quick.py`),
once for the module. Its matrix puts every speed setting of a deployment through every feature that
reaches the UNet, each against plain eager (`benchmarks/gpu/matrix.py`); its defaults section times
the hosted defaults' cases. The same code runs on CUDA in float16 with real graph capture and
Inductor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpuquick
from benchmarks.gpu import matrix
from benchmarks.gpu.quick import FRAMES as ALL_FRAMES

CPU = torch.device("cpu")
CASES = [
    (setting.name, feature)
    for setting in matrix.settings(CPU)
    for feature in matrix.FEATURES
    if setting.features is None or feature in setting.features
]
BOOT_LORAS = {s.name for s in matrix.settings(CPU) if s.boot_loras}
FRAMES = ALL_FRAMES["cpu"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gpu-quick")
    weights = tmp_path_factory.mktemp("gpu-quick-weights")
    assert gpuquick.main([str(out), "--device", "cpu", "--weights", str(weights)]) == 0
    return json.loads((out / "gpu-quick.json").read_text())


@pytest.fixture(scope="module")
def rows(report: dict) -> dict[tuple[str, str], dict]:
    return {(row["setting"], row["feature"]): row for row in report["matrix"]}


def test_the_run_is_complete_and_prints(report: dict, tmp_path: Path, capsys) -> None:
    assert report["mode"] == "cpu" and not report["errors"] and not report["skipped"]
    assert list(report["sections_s"]) == ["matrix", "defaults"]
    path = tmp_path / "gpu-quick.json"
    path.write_text(json.dumps(report))
    assert gpuquick.main([str(path), "--table"]) == 0
    printed = capsys.readouterr().out
    assert "compiled (ICLIGHT_COMPILE=1)" in printed and f"{FRAMES}-frame sequence" in printed


@pytest.mark.parametrize(("setting", "feature"), CASES)
def test_every_feature_under_every_setting_gives_the_eager_pixels(rows, setting: str, feature: str) -> None:
    """Within a grey level of eager (exactly, where the setting runs the same kernels), and served
    as the setting promises: graphs replayed for every call, compiled code for every call the
    warm-up covered; a LoRA or an attention the warm-up did not run goes eager, counted."""
    row = rows[(setting, feature)]
    assert row["max_diff"] <= row["tolerance"], row
    served = row["served"]
    if served["kind"] == "graphs":
        assert served["replays"] > 0 and served["eager"] == served["failed"] == 0, served
    elif served["kind"] == "compiled":
        warmed = feature not in matrix.NOT_WARMED
        if warmed:
            assert served["compiled"] > 0 and served["eager"] == 0, served
        elif setting in BOOT_LORAS:  # LoRA A (and none) compiled, B and A with B eager
            assert served["compiled"] > 0 and served["eager"] > 0, served
        else:
            assert served["compiled"] == 0 and served["eager"] > 0, served


@pytest.mark.parametrize("setting", sorted({s for s, _ in CASES}))
def test_a_fall_back_to_eager_says_why_once(rows, setting: str) -> None:
    own = [row["served"] for (s, _), row in rows.items() if s == setting]
    if own[0]["kind"] != "compiled":
        return
    reasons = [reason for served in own for reason in served["reasons"]]
    assert bool(reasons) == any(served["eager"] for served in own)
    assert all(reasons)


def test_birefnet_in_half_precision_mattes_as_in_float32(report: dict) -> None:
    half = report["half_matting"]
    assert half["dtype"] == "bfloat16" and half["finite"], half
    assert half["matte_mean_diff"] < 0.005 and half["matte_max_diff"] < 0.05
    assert half["relit_mean_diff"] < 0.5


def test_the_hosted_defaults_cases_ran(report: dict) -> None:
    cases = report["defaults"]
    names = ["1 image", "4 images", "4 clients sharing a batch", "a LoRA", f"{FRAMES}-frame sequence, consistent light"]
    assert list(cases) == names
    assert all(case["ours_s"] > 0 and case["per_image_s"] > 0 for case in cases.values())
    assert report["setup"]["settings"] == "eager" and "no --reference" in report["setup"]["hosted"]
