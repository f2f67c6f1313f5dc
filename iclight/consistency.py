"""Consistent light attention (CLA, from Light-A-Video): in chosen self-attention layers, each
frame's attention output is mixed with its attention over the keys and values averaged across the
frames of its classifier-free-guidance half, `(1 - gamma) * own + gamma * averaged`. Frames then
agree on where the light falls without a video model; CLA touches attention only, so it carries
over to the background-conditioned UNet unchanged.

It is a diffusers attention processor, set on the chosen layers for one diffusion (`applied`) and
taken off after: relights outside a sequence never see it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

# Light-A-Video's layers: the self-attention (`attn1`) of every up block but the last, the one at
# the highest resolution (on SD1.5: up blocks 1 and 2; block 0 has no attention).
DEFAULT_LAYERS = "up-but-last"


def layers(unet: torch.nn.Module, rule: str = DEFAULT_LAYERS) -> list[str]:
    """The names of the attention modules `rule` chooses: `up-but-last`, or a regular expression
    matched against module names (for example `up_blocks\\.[12]\\..*attn1$`)."""
    names = [name for name, module in unet.named_modules() if isinstance(module, Attention)]
    if rule == DEFAULT_LAYERS:
        last = len(unet.up_blocks) - 1
        pattern = re.compile(rf"^up_blocks\.(?!{last}\.)\d+\..*\.attn1$")
    else:
        pattern = re.compile(rule)
    return [name for name in names if pattern.search(name)]


class ConsistentLightAttention:
    """The attention of `attn1` with CLA's mix, for a batch of `2 * frames` (the unconditional
    half, then the conditional one, as diffusers' classifier-free guidance lays it out)."""

    def __init__(self, gamma: float, original) -> None:
        self.gamma = gamma
        self.original = original  # the processor it replaced, which does gamma 0 bit for bit

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, **kwargs):
        if self.gamma == 0 or encoder_hidden_states is not None or hidden_states.shape[0] % 2:
            return self.original(attn, hidden_states, encoder_hidden_states, **kwargs)
        return mixed(attn, hidden_states, self.gamma)


def mixed(attn: Attention, hidden_states: torch.Tensor, gamma: float) -> torch.Tensor:
    """Self-attention with CLA's mix (no mask: self-attention in the UNet has none)."""
    residual, shape = hidden_states, hidden_states.shape
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    batch, heads = hidden_states.shape[0], attn.heads
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
        q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    q, k, v = (t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    own = F.scaled_dot_product_attention(q, k, v)
    shared_k, shared_v = (_half_mean(t) for t in (k, v))
    out = (1 - gamma) * own + gamma * F.scaled_dot_product_attention(q, shared_k, shared_v)
    out = out.transpose(1, 2).reshape(batch, -1, heads * q.shape[-1]).to(q.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if len(shape) == 4:
        out = out.transpose(-1, -2).reshape(shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _half_mean(t: torch.Tensor) -> torch.Tensor:
    """Each CFG half's mean over its frames, for every frame of that half."""
    halves = t.reshape(2, -1, *t.shape[1:])
    return halves.mean(dim=1, keepdim=True).expand_as(halves).reshape(t.shape)


@contextmanager
def applied(unet: torch.nn.Module, gamma: float, rule: str = DEFAULT_LAYERS) -> Iterator[list[str]]:
    """CLA at `gamma` on the layers `rule` chooses, for the duration; nothing at gamma 0."""
    chosen = layers(unet, rule) if gamma > 0 else []
    modules = dict(unet.named_modules())
    originals = {name: modules[name].processor for name in chosen}
    try:
        for name in chosen:
            modules[name].set_processor(ConsistentLightAttention(gamma, originals[name]))
        yield chosen
    finally:
        for name, processor in originals.items():
            modules[name].set_processor(processor)
