"""The IC-Light fbc UNet: SD1.5 with a 12-channel `conv_in` and merged offset weights."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from torch import nn

from . import constants as C


@torch.no_grad()
def widen_conv_in(unet: UNet2DConditionModel, in_channels: int = C.UNET_IN_CHANNELS) -> None:
    """Give `conv_in` extra input channels that start at zero; the config still says 4,
    which is what the pipelines must see to size their latents."""
    old = unet.conv_in
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    new.weight.zero_()
    new.weight[:, : old.in_channels].copy_(old.weight)
    new.bias = old.bias
    unet.conv_in = new


@torch.no_grad()
def merge_offset(unet: UNet2DConditionModel, offset_path: str | Path) -> None:
    """Add the IC-Light offset to every UNet tensor in place, one tensor at a time.

    Strict: the offset must have exactly the widened UNet's keys and shapes.
    """
    params = unet.state_dict(keep_vars=True)
    with safe_open(str(offset_path), framework="pt", device="cpu") as f:
        keys = set(f.keys())
        if keys != set(params):
            missing, extra = sorted(set(params) - keys), sorted(keys - set(params))
            raise ValueError(
                f"{offset_path}: offset keys do not match the UNet "
                f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
            )
        for key, target in params.items():
            delta = f.get_tensor(key)
            if delta.shape != target.shape:
                raise ValueError(f"{offset_path}: {key} has shape {tuple(delta.shape)}, expected {tuple(target.shape)}")
            target.data.add_(delta.to(device=target.device, dtype=target.dtype))


class ConditionedUNet(nn.Module):
    """Feeds the UNet its noisy latent joined with the 8-channel fg/bg condition.

    The condition travels in `cross_attention_kwargs["concat_conds"]`, so the stock
    diffusers pipelines drive it unchanged and no state is kept between calls.
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        super().__init__()
        self.unet = unet

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, **kwargs):
        extra = dict(kwargs.pop("cross_attention_kwargs", None) or {})
        cond = extra.pop("concat_conds").to(sample)
        cond = cond.expand(sample.shape[0], -1, -1, -1)  # one condition serves the whole batch
        sample = torch.cat([sample, cond], dim=1)
        return self.unet(sample, timestep, encoder_hidden_states, cross_attention_kwargs=extra or None, **kwargs)
