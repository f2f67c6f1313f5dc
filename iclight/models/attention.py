"""Consistent light attention (CLA, from Light-A-Video): in chosen self-attention layers, each
frame's attention output is mixed with its attention over the keys and values averaged across the
frames of its group, `(1 - gamma) * own + gamma * averaged`. A group is one half of the batch with
classifier-free guidance (the unconditional frames, then the conditional ones), the whole batch
without it (`cfg` 1). Frames then agree on where the light falls without a video model; CLA
touches attention only, so it carries over to the background-conditioned UNet unchanged.

It is a diffusers attention processor. A sequence's run puts it on the chosen layers for the
length of one diffusion (`ConditionedUNet.attention`) and takes it off after: relights outside a
sequence never see it, and the UNet's CUDA graphs are keyed on the processors in place."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from ..core.options import DEFAULT_LAYERS
from ..core.validation import InputError
from .fusion import is_fused


def layers(unet: torch.nn.Module, rule: str = DEFAULT_LAYERS) -> tuple[str, ...]:
    """The names of the self-attention modules `rule` chooses: `up-but-last` (Light-A-Video's: every
    up block's `attn1` but the last block's, the one at the highest resolution; on SD1.5 up blocks 1
    and 2), or a regular expression matched against module names (`up_blocks\\.[12]\\..*attn1$`).
    An InputError naming `layers` where it chooses none: consistency would do nothing."""
    names = [name for name, module in unet.named_modules() if isinstance(module, Attention)]
    if rule == DEFAULT_LAYERS:
        last = len(unet.up_blocks) - 1
        pattern = re.compile(rf"^up_blocks\.(?!{last}\.)\d+\..*\.attn1$")
    else:
        pattern = re.compile(rule)
    chosen = tuple(name for name in names if pattern.search(name))
    if not chosen:
        some = ", ".join(n for n in names if n.endswith("attn1")) or "none"
        raise InputError(f"layers: {rule!r} chooses no attention layer of this UNet; its self-attention layers: {some}")
    return chosen


@dataclass(frozen=True)
class Consistency:
    """CLA for one diffusion: the mix, the chosen layers, and the groups of the batch (2 with
    classifier-free guidance, 1 without)."""

    gamma: float
    layers: tuple[str, ...]
    groups: int

    def processors(self, unet: torch.nn.Module) -> dict[str, ConsistentLightAttention]:
        """The processors to put on the chosen layers, each over the one it replaces."""
        modules = dict(unet.named_modules())
        return {
            name: ConsistentLightAttention(self.gamma, modules[name].processor, self.groups) for name in self.layers
        }


class ConsistentLightAttention:
    """The attention of `attn1` with CLA's mix over `groups` groups of frames (diffusers' layout
    with guidance: the unconditional half, then the conditional one)."""

    def __init__(self, gamma: float, original, groups: int = 2) -> None:
        self.gamma, self.groups = gamma, groups
        self.original = original  # the processor it replaced, which does gamma 0 bit for bit

    @property
    def cache_key(self) -> tuple:
        """What changes its computation (a cached CUDA graph of the UNet is keyed on it)."""
        return ("cla", self.gamma, self.groups, type(self.original).__qualname__)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, **kwargs):
        if self.gamma == 0 or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, **kwargs)
        return mixed(attn, hidden_states, self.gamma, self.groups, is_fused(self.original))


def mixed(
    attn: Attention, hidden_states: torch.Tensor, gamma: float, groups: int = 2, fused: bool = False
) -> torch.Tensor:
    """Self-attention with CLA's mix (no mask: self-attention in the UNet has none); `fused`: the
    projections through `to_qkv`, as the processor it replaced does (a fused UNet keeps `to_qkv`
    only while its fused processors are in place: LoRAs unfuse it)."""
    residual, shape = hidden_states, hidden_states.shape
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    batch, heads = hidden_states.shape[0], attn.heads
    if fused:
        q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    q, k, v = (t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    own = F.scaled_dot_product_attention(q, k, v)
    shared_k, shared_v = (_group_mean(t, groups) for t in (k, v))
    out = (1 - gamma) * own + gamma * F.scaled_dot_product_attention(q, shared_k, shared_v)
    out = out.transpose(1, 2).reshape(batch, -1, heads * q.shape[-1]).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if len(shape) == 4:
        out = out.transpose(-1, -2).reshape(shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _group_mean(t: torch.Tensor, groups: int) -> torch.Tensor:
    """Each group's mean over its frames, for every frame of that group."""
    if t.shape[0] % groups:
        raise ValueError(f"consistent light attention: a batch of {t.shape[0]} cannot be split into {groups} groups")
    split = t.reshape(groups, -1, *t.shape[1:])
    return split.mean(dim=1, keepdim=True).expand_as(split).reshape(t.shape)
