from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from iclight.models.unet import ConditionedUNet, empty_unet, merged_state, widen_conv_in
from iclight.pipeline.standins import offset_for, tiny_unet


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


def _files(unet, tmp_path: Path, offset: dict) -> tuple[Path, Path]:
    base, off = tmp_path / "base.safetensors", tmp_path / "offset.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(base))
    save_file(offset, str(off))
    return base, off


def test_merge_adds_every_tensor_and_widens(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)
    base, off = _files(unet, tmp_path, offset)
    original = unet.state_dict()
    merged = merged_state(base, off)
    assert set(merged) == set(original)
    conv = merged["conv_in.weight"]
    assert conv.shape[1] == 12
    assert torch.equal(conv[:, :4], original["conv_in.weight"] + offset["conv_in.weight"][:, :4])
    assert torch.equal(conv[:, 4:], offset["conv_in.weight"][:, 4:])  # zeros + offset
    for k, v in merged.items():
        if k != "conv_in.weight":
            assert torch.equal(v, original[k] + offset[k]), k


def test_merge_reads_in_small_mapped_windows(unet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import iclight.models.unet as U

    base, off = _files(unet, tmp_path, offset_for(unet))
    full = merged_state(base, off)
    opened = []

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    real_open = U.safe_open
    monkeypatch.setattr(U, "safe_open", counting_open)
    monkeypatch.setattr(U, "MAPPED_WINDOW", 4096)  # reopen the offset file after every tensor or so
    small = merged_state(base, off)
    assert opened.count(str(off)) > len(full) // 4
    assert all(torch.equal(full[k], small[k]) for k in full)


def test_merged_state_loads_strictly_into_the_widened_unet(unet, tmp_path: Path) -> None:
    base, off = _files(unet, tmp_path, offset_for(unet))
    unet.save_config(tmp_path)
    empty = empty_unet(tmp_path)
    assert empty.conv_in.in_channels == 12 and empty.config.in_channels == 4
    empty.load_state_dict(merged_state(base, off), strict=True, assign=True)
    assert not any(p.is_meta for p in empty.parameters())


def test_merge_casts_once_after_adding(unet, tmp_path: Path) -> None:
    base, off = _files(unet, tmp_path, offset_for(unet))
    full, half = merged_state(base, off), merged_state(base, off, dtype=torch.float16)
    assert all(torch.equal(full[k].half(), half[k]) for k in full)


def test_merge_is_strict(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)
    offset.pop("conv_out.bias")
    offset["extra.weight"] = torch.zeros(1)
    base, off = _files(unet, tmp_path, offset)
    with pytest.raises(ValueError, match="missing \\['conv_out.bias'\\].*unexpected \\['extra.weight'\\]"):
        merged_state(base, off)


def test_merge_rejects_wrong_shape(unet, tmp_path: Path) -> None:
    offset = offset_for(unet)
    offset["conv_out.weight"] = torch.zeros(1, 2, 3)
    base, off = _files(unet, tmp_path, offset)
    with pytest.raises(ValueError, match="conv_out.weight has shape"):
        merged_state(base, off)


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
