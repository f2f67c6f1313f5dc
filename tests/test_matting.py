"""The matting choice: rmbg-1.4 (the hosted model's), or none, with which a deployment boots and
relights without the RMBG file (and so without non-commercial weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cogserver import cog_server, image_uri, predict
from PIL import Image

from iclight import cli, layout
from iclight.pipeline import Relighter
from iclight.validation import InputError

SMALL = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=5)


@pytest.fixture(scope="module")
def without_rmbg(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("no-rmbg") / "weights"
    shutil.copytree(weights_dir, root, ignore=shutil.ignore_patterns("RMBG-1.4", ".hashes.json"))
    assert not (root / layout.RMBG_FILE).exists()
    return root


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLIGHT_OFFLINE", "1")


def _mask(subject: np.ndarray) -> np.ndarray:
    mask = np.zeros(subject.shape[:2], np.uint8)
    mask[20:100, 20:80] = 255
    return mask


def test_none_boots_and_relights_without_the_rmbg_file(
    without_rmbg: Path, offline, monkeypatch: pytest.MonkeyPatch, relighter, subject_array, background_array
) -> None:
    monkeypatch.setenv("ICLIGHT_MATTING", "none")
    lean = Relighter.load(without_rmbg, device="cpu")
    assert lean.rmbg is None and lean.matting == "none"
    assert layout.RMBG_FILE not in lean.weight_files
    mask = _mask(subject_array)
    got = lean.relight(subject_array, background_array, "sun", mask=mask, **SMALL).images[0]
    want = relighter.relight(subject_array, background_array, "sun", mask=mask, **SMALL).images[0]
    assert np.array_equal(np.asarray(got), np.asarray(want))  # the same model but the matting
    with pytest.raises(InputError, match="matting: 'none' needs a mask, or a subject with an alpha channel"):
        lean.relight(subject_array, background_array, "sun", **SMALL)
    with pytest.raises(InputError, match=r"matting: 'rmbg-1.4' is not loaded .* ICLIGHT_MATTING=rmbg-1.4"):
        lean.relight(subject_array, background_array, "sun", matting="rmbg-1.4", **SMALL)


def test_the_default_needs_the_rmbg_file(without_rmbg: Path, offline) -> None:
    with pytest.raises(layout.MissingWeightsError, match="RMBG-1.4/model.safetensors"):
        Relighter.load(without_rmbg, device="cpu")


def test_a_relight_may_ask_for_none(relighter, subject_array, background_array) -> None:
    with pytest.raises(InputError, match="matting: 'none' needs a mask"):
        relighter.relight(subject_array, background_array, "sun", matting="none", **SMALL)
    rgba = np.dstack([subject_array, _mask(subject_array)])
    assert relighter.relight(rgba, background_array, "sun", matting="none", **SMALL).images
    with pytest.raises(InputError, match=r"matting: 'birefnet' is not allowed; choose one of \['rmbg-1.4', 'none'\]"):
        relighter.relight(subject_array, background_array, "sun", matting="birefnet", **SMALL)


def test_the_command_line_with_none(without_rmbg: Path, offline, image_files, tmp_path: Path, subject_array) -> None:
    subject, background = image_files
    mask = tmp_path / "mask.png"
    Image.fromarray(_mask(subject_array)).save(mask)
    sizes = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1", "--seed", "5"]
    common = [str(subject), str(background), "--prompt", "sun", *sizes, "--weights", str(without_rmbg)]
    out = tmp_path / "out"
    assert (
        cli.main(["relight", *common, "--matting", "none", "--mask", str(mask), "--device", "cpu", "-o", str(out)]) == 0
    )
    recipe = json.loads((out / "subject-5-0.json").read_text())
    assert recipe["parameters"]["matting"] == "none"
    assert cli.main(["relight", *common, "--matting", "none", "--device", "cpu", "-o", str(out)]) == 2


@pytest.mark.server
def test_a_server_without_non_commercial_weights(without_rmbg: Path, tmp_path: Path, subject_array) -> None:
    """ICLIGHT_MATTING=none: the server boots with no RMBG file and relights a subject with alpha."""
    rgba = Image.fromarray(np.dstack([subject_array, _mask(subject_array)]))
    background = Image.new("RGB", (160, 120), (90, 120, 200))
    env = {"ICLIGHT_MATTING": "none", "ICLIGHT_OFFLINE": "1", "ICLIGHT_OUTPUT_DIR": str(tmp_path / "out")}
    with cog_server(without_rmbg, tmp_path, **env) as url:
        inputs = dict(prompt="sun", width=256, height=256, steps=2, highres_scale=1.0, seed=1, output_format="png")
        ok = predict(url, subject_image=image_uri(rgba), background_image=image_uri(background), **inputs)
        opaque = predict(
            url, subject_image=image_uri(rgba.convert("RGB")), background_image=image_uri(background), **inputs
        )
    assert ok["status"] == "succeeded", ok.get("error")
    assert opaque["status"] == "failed" and "matting: 'none' needs a mask" in opaque["error"]
