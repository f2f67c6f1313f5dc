"""Fused QKV projections (one matrix product for query, key and value), a state with an undo:
fused by the speed settings, unfused for LoRAs, which target the separate projections. What is
live is read off the processors in place, never off a flag."""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0
from torch import nn

FUSED = (FusedAttnProcessor2_0,)  # the processors that use the fused projections


def has_lora_layers(unet: nn.Module) -> bool:
    """Whether LoRA adapters (peft) wrap any of the UNet's layers."""
    return any(hasattr(m, "lora_A") for m in unet.modules())


def fuse_qkv(model: nn.Module) -> None:
    """One projection for query, key and value (diffusers' `fuse_qkv_projections`), its new
    weights frozen like the rest."""
    model.fuse_qkv_projections()
    model.requires_grad_(False)


@torch.no_grad()
def unfuse_qkv(unet: nn.Module) -> bool:
    """Back to separate projections wherever a fused processor is in place (LoRAs target the
    separate ones); True where any was. Decided from the processors themselves: diffusers'
    `unfuse_qkv_projections` restores its saved processors once and leaves `fused_projections` set."""
    found = False
    for module in unet.modules():
        if isinstance(module, Attention) and isinstance(module.processor, FUSED):
            module.set_processor(AttnProcessor2_0())
            for name in ("to_qkv", "to_kv"):
                if hasattr(module, name):
                    delattr(module, name)
            module.fused_projections = False
            found = True
    return found


def is_fused(processor: object) -> bool:
    """Whether an attention processor projects through the fused `to_qkv` (or `to_kv`)."""
    return isinstance(processor, FUSED)
