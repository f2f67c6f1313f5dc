"""Our predictors' pixels equal the hosted models' on the stored cases (tests/data/parity/, fc's in
fc/): the hosted code's images for the same deterministic weights, inputs and seed, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.parity import run
from benchmarks.parity import weights as parity_weights

FC_CONV_IN = [0.0537408, 0.0341562, 0.1617041]  # the fc offset's first values, fixed by name alone


@pytest.fixture(scope="module")
def parity_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parity_weights.ensure(tmp_path_factory.mktemp("parity") / "weights")


def test_the_weights_are_those_the_hosted_pixels_were_made_with(parity_weights_dir: Path) -> None:
    """A few tensors' values fixed by name alone: any change to the generator shows here."""
    from safetensors import safe_open

    with safe_open(str(parity_weights_dir / "iclight_sd15_fbc.safetensors"), "pt") as f:
        conv_in = f.get_tensor("conv_in.weight")
    assert tuple(conv_in.shape) == (32, 12, 3, 3)
    assert conv_in.flatten()[:3].tolist() == pytest.approx([-0.0100081, -0.0761193, 0.1659686], abs=1e-6)
    with safe_open(str(parity_weights_dir / "iclight_sd15_fc.safetensors"), "pt") as f:
        conv_in = f.get_tensor("conv_in.weight")
    assert tuple(conv_in.shape) == (32, 8, 3, 3)
    assert conv_in.flatten()[:3].tolist() == pytest.approx(FC_CONV_IN, abs=1e-6)
    vocab = json.loads((parity_weights_dir / "realistic-vision-v51/tokenizer/vocab.json").read_text())
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407


def test_the_stored_case_matches_the_hosted_pixels(parity_weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLIGHT_WEIGHTS_DIR", str(parity_weights_dir))
    monkeypatch.setenv("ICLIGHT_DEVICE", "cpu")
    cases = json.loads(run.CASES.read_text())
    expected = run.load_npz(run.EXPECTED, cases)
    ours = run.run_ours(cases, run.IMAGES)
    held, worst, lines = run.compare(expected, ours)
    assert held == len(cases), lines
    assert worst < 0.01 and all(len(ours[name]) == len(images) for name, images in expected.items())
    assert not np.array_equal(ours["basic"][0], np.zeros_like(ours["basic"][0]))


def test_the_stored_fc_cases_match_the_hosted_fc_pixels(
    parity_weights_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cog-fc.yaml's predictor against the hosted fc code's images: a light as the first pass's start,
    and no light (from noise) with two images."""
    monkeypatch.setenv("ICLIGHT_WEIGHTS_DIR", str(parity_weights_dir))
    monkeypatch.setenv("ICLIGHT_DEVICE", "cpu")
    cases = json.loads(run.FC_CASES.read_text())
    expected = run.load_npz(run.FC_CASES.parent, cases)
    held, worst, lines = run.compare(expected, run.run_ours(cases, run.IMAGES, "cog-fc.yaml"))
    assert held == len(cases) == 2, lines
    assert worst < 0.01
