from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from safetensors.torch import save_file

from iclight.imaging.compositing import on_grey
from iclight.matting.rmbg import MOST_BLOCKS, BriaRMBG, estimate_matte, feed_size


def test_state_dict_matches_published_checkpoint() -> None:
    spec = json.loads((DATA / "rmbg14_state_dict.json").read_text())
    ours = {k: (list(v.shape), str(v.dtype)) for k, v in BriaRMBG().state_dict().items()}
    assert ours == {k: (shape, dtype) for k, (shape, dtype) in spec.items()}


def test_loads_strictly_and_rejects_a_wrong_checkpoint(tmp_path: Path) -> None:
    sd = BriaRMBG().state_dict()
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(good))
    model = BriaRMBG.from_file(good)
    assert not model.training
    sd.pop("side6.bias")
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(bad))
    with pytest.raises(RuntimeError, match="side6.bias"):
        BriaRMBG.from_file(bad)


@pytest.fixture(scope="module")
def model(weights_dir: Path) -> BriaRMBG:
    return BriaRMBG.from_file(weights_dir / "RMBG-1.4" / "model.safetensors")


def test_matte_is_a_probability_at_input_size(model: BriaRMBG) -> None:
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 70, 90))  # odd sizes exercise ceil-mode pooling
    assert out.shape == (1, 1, 70, 90)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_estimate_matte_shape(model: BriaRMBG, subject_array: np.ndarray) -> None:
    matte = estimate_matte(model, subject_array)
    assert matte.shape == (*subject_array.shape[:2], 1) and matte.dtype == np.float32


def test_on_grey() -> None:
    img = np.array([[[0, 127, 255]]], np.uint8)
    assert on_grey(img, np.zeros((1, 1, 1), np.float32)).tolist() == [[[127, 127, 127]]]
    assert on_grey(img, np.ones((1, 1, 1), np.float32)).tolist() == [[[0, 127, 255]]]
    assert on_grey(img, np.ones((1, 1, 1), np.float32), sigma=16).tolist() == [[[16, 143, 255]]]
    assert on_grey(img, np.full((1, 1, 1), 0.5, np.float32)).tolist() == [[[63, 127, 191]]]


@pytest.mark.parametrize("size", [(1024, 1024), (512, 640), (1, 1), (3000, 7), (7, 3000), (4032, 3024), (17, 9001)])
def test_the_matting_net_sees_the_hosted_sizes(size: tuple[int, int]) -> None:
    w, h = size
    k = (256 / (w * h)) ** 0.5  # the hosted rule: about 256 blocks of 64x64 px
    assert feed_size(w, h) == (64 * round(w * k), 64 * round(h * k))


@pytest.mark.parametrize("size", [(5000, 1), (1, 1_000_000), (1_000_000, 3)])
def test_a_strip_the_hosted_rule_cannot_size_is_fed_no_more_than_the_hosted_code_ever_is(size) -> None:
    """The hosted rule rounds such a strip's short side to nothing; along it, it would grow without
    bound (1x1,000,000: 64x1,024,000 px)."""
    w, h = feed_size(*size)
    assert min(w, h) == 64 and max(w, h) <= 64 * MOST_BLOCKS == 64 * 512
