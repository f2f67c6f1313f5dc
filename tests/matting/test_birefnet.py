"""BiRefNet in plain torch: the published checkpoints' layout, strict loading, the deformable
convolution against its definition, and parity with BiRefNet's own code where it is exported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file, save_file

from benchmarks import birefnet_ref
from iclight.matting import mattes as matting
from iclight.matting.birefnet import BiRefNet, deform_conv2d, estimate_matte
from iclight.pipeline import standins
from iclight.store import layout

PUBLISHED = json.loads((ROOT / "tests" / "data" / "birefnet_state_dict.json").read_text())


@pytest.mark.parametrize("variant, tensors", [("birefnet", 754), ("birefnet-lite", 586)])
def test_the_module_tree_is_the_published_layout(variant: str, tensors: int) -> None:
    ours = {k: list(v.shape) for k, v in BiRefNet(variant).state_dict().items()}
    assert ours == PUBLISHED[variant]
    assert len(ours) == tensors


def test_the_general_model_size() -> None:
    values = sum(int(np.prod(s)) for s in PUBLISHED["birefnet"].values())
    assert round(values / 1e6, 1) == 220.7


def test_a_stand_in_checkpoint_loads_strictly(weights_dir: Path, tmp_path: Path) -> None:
    path = weights_dir / layout.BIREFNET_LITE_FILE
    model = BiRefNet.from_file(path, "birefnet-lite")
    state = load_file(str(path))
    assert {k: list(v.shape) for k, v in state.items()} == PUBLISHED["birefnet-lite"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # Buffers that follow from the shapes alone may be left out of a file; nothing else may.
    derived = {k: v for k, v in state.items() if not k.endswith(("relative_position_index", "num_batches_tracked"))}
    save_file(derived, str(tmp_path / "lean.safetensors"))
    BiRefNet.from_file(tmp_path / "lean.safetensors", "birefnet-lite")
    del derived["decoder.gdt_convs_pred_2.0.weight"]  # a training head: still part of the checkpoint
    save_file(derived, str(tmp_path / "short.safetensors"))
    with pytest.raises(RuntimeError, match="gdt_convs_pred_2"):
        BiRefNet.from_file(tmp_path / "short.safetensors", "birefnet-lite")
    with pytest.raises(RuntimeError, match="size mismatch"):
        BiRefNet.from_file(path, "birefnet")


def test_the_general_stand_in_loads_strictly(tmp_path: Path) -> None:
    path = standins.write_matting(tmp_path, matting.BIREFNET)
    assert path == tmp_path / layout.BIREFNET_FILE
    model = BiRefNet.from_file(path, "birefnet")
    assert sum(p.numel() for p in model.parameters()) > 220e6


@pytest.mark.parametrize("k, size, scale", [(1, (5, 7), 3.0), (3, (6, 5), 1.5), (7, (9, 8), 4.0)])
def test_deformable_convolution_against_its_definition(k: int, size: tuple[int, int], scale: float) -> None:
    """Offsets of several pixels, many of them reaching outside the input (where it reads zero)."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 4, *size, generator=g)
    offset = torch.randn(2, 2 * k * k, *size, generator=g) * scale
    mask = torch.rand(2, k * k, *size, generator=g) * 2
    weight = torch.randn(3, 4, k, k, generator=g)
    ours = deform_conv2d(x, offset, mask, weight, k // 2)
    want = birefnet_ref.deform_conv2d_definition(x, offset, weight, padding=k // 2, mask=mask)
    assert ours.shape == want.shape == (2, 3, *size)
    assert (ours - want).abs().max().item() < 1e-4
    zero = deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), weight, k // 2)
    assert torch.allclose(zero, torch.nn.functional.conv2d(x, weight, padding=k // 2), atol=1e-4)


def test_deformable_convolution_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Taps sampled a few at a time (as at 1024x1024) give the same result as all at once."""
    import iclight.matting.birefnet as B

    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(1, 4, 8, 8, generator=g), torch.randn(2, 4, 7, 7, generator=g)
    offset, mask = torch.randn(1, 98, 8, 8, generator=g), torch.rand(1, 49, 8, 8, generator=g)
    whole = deform_conv2d(x, offset, mask, weight, 3)
    monkeypatch.setattr(B, "SAMPLE_ELEMENTS", 4 * 64 * 5)
    assert torch.allclose(deform_conv2d(x, offset, mask, weight, 3), whole, atol=1e-5)


def test_deformable_convolution_in_half_precision_samples_where_float32_does() -> None:
    """A deployment runs BiRefNet in float16 (bfloat16 on the CPU): the positions it samples at
    stay float32, or they are up to half a pixel off at this size (the CPU's bfloat16 sampling
    also read uninitialised memory, NaN in the matte)."""
    generator = torch.Generator().manual_seed(0)
    x, offset = torch.randn(1, 8, 96, 96, generator=generator), torch.randn(1, 18, 96, 96, generator=generator) * 3
    mask, weight = torch.rand(1, 9, 96, 96, generator=generator), torch.randn(4, 8, 3, 3, generator=generator) * 0.2
    half = [t.bfloat16() for t in (x, offset, mask, weight)]
    got = deform_conv2d(*half, 1)
    assert got.dtype == torch.bfloat16
    want = deform_conv2d(*(t.float() for t in half), 1)  # the same values, in float32
    assert (got.float() - want).abs().max() < 0.05


def test_the_matte(weights_dir: Path) -> None:
    model = BiRefNet.from_file(weights_dir / layout.BIREFNET_LITE_FILE, "birefnet-lite")
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    matte = estimate_matte(model, image, size=64)
    assert matte.shape == (40, 56, 1) and matte.dtype == np.float32
    assert 0 <= matte.min() < matte.max() <= 1


needs_reference = pytest.mark.skipif(
    not birefnet_ref.available(), reason="BiRefNet's own code is not exported (make reference-birefnet)"
)


@needs_reference
@pytest.mark.parametrize("variant, size", [("birefnet-lite", 320), ("birefnet", 128)])
def test_parity_with_birefnets_own_code(variant: str, size: int) -> None:
    """The same random weights and input through BiRefNet's code and ours (float32, CPU)."""
    assert birefnet_ref.parity(variant, size) < 1e-4


@needs_reference
def test_the_recorded_layout_is_birefnets_own() -> None:
    for variant in PUBLISHED:
        assert birefnet_ref.layout_of(birefnet_ref.reference_model(variant)) == PUBLISHED[variant]
