from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from standins import offset_for, tiny_unet

from iclight.unet import ConditionedUNet, merge_offset, widen_conv_in


@pytest.fixture
def unet():
    torch.manual_seed(0)
    return tiny_unet().eval()


def _call(unet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return unet(x, 10, torch.randn(x.shape[0], 77, 32, generator=torch.Generator().manual_seed(1))).sample


def test_widened_conv_ignores_zero_condition(unet) -> None:
    x = torch.randn(1, 4, 16, 16)
    before = _call(unet, x)
    widen_conv_in(unet)
    assert unet.conv_in.in_channels == 12 and unet.config.in_channels == 4
    after = _call(unet, torch.cat([x, torch.zeros(1, 8, 16, 16)], 1))
    assert torch.allclose(before, after, atol=1e-6)


def test_merge_adds_every_tensor(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)
    widen_conv_in(unet)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    path = tmp_path / "offset.safetensors"
    save_file(offset, str(path))
    merge_offset(unet, path)
    for k, v in unet.state_dict().items():
        assert torch.equal(v, before[k] + offset[k]), k


def test_merge_is_strict(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)
    widen_conv_in(unet)
    offset.pop("conv_out.bias")
    offset["extra.weight"] = torch.zeros(1)
    path = tmp_path / "offset.safetensors"
    save_file(offset, str(path))
    with pytest.raises(ValueError, match="missing \\['conv_out.bias'\\].*unexpected \\['extra.weight'\\]"):
        merge_offset(unet, path)


def test_merge_rejects_wrong_shape(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)  # conv_in is 12 wide: the UNet must be widened first
    path = tmp_path / "offset.safetensors"
    save_file(offset, str(path))
    with pytest.raises(ValueError, match="conv_in.weight has shape"):
        merge_offset(unet, path)


def test_conditioned_unet_joins_condition_for_the_whole_batch(unet) -> None:
    widen_conv_in(unet)
    wrapped = ConditionedUNet(unet)
    x, cond = torch.randn(3, 4, 16, 16), torch.randn(1, 8, 16, 16)
    text = torch.randn(3, 77, 32)
    with torch.no_grad():
        out = wrapped(x, 10, text, cross_attention_kwargs={"concat_conds": cond}, return_dict=False)[0]
        ref = unet(torch.cat([x, cond.expand(3, -1, -1, -1)], 1), 10, text).sample
    assert torch.equal(out, ref)
    assert wrapped.config.in_channels == 4 and wrapped.dtype == torch.float32
