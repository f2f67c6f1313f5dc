"""The Swin Transformer backbone of BiRefNet (`birefnet.py`): windowed self-attention over
patches, shifted every other block, four stages; the variants' sizes in `VARIANTS`. Module names
and shapes are those of the published checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinSpec:
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    window: int


VARIANTS = {
    "birefnet": SwinSpec(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    "birefnet-lite": SwinSpec(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
}


def _windows(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) to (B * windows, ws * ws, C), windows in row order within each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _unwindow(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    c = x.shape[-1]
    x = x.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def _relative_index(ws: int) -> torch.Tensor:
    """For each pair of positions in a window, the row of their offset in the bias table."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack((ys.flatten(), xs.flatten()))
    rel = (coords[:, :, None] - coords[:, None, :]) + (ws - 1)
    return rel[0] * (2 * ws - 1) + rel[1]


def _shift_mask(hp: int, wp: int, ws: int, shift: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(windows, N, N): 0 where two positions came from the same region before the cyclic shift, else -inf."""
    bounds = lambda n: (0, n - ws, n - shift, n)  # noqa: E731
    regions = torch.zeros(hp, wp, device=device)
    hb, wb = bounds(hp), bounds(wp)
    for i in range(3):
        for j in range(3):
            regions[hb[i] : hb[i + 1], wb[j] : wb[j + 1]] = 3 * i + j
    labels = _windows(regions[None, :, :, None], ws)[..., 0]
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, dtype=dtype, device=device).masked_fill(differ, float("-inf"))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", _relative_index(ws))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        bias = bias.permute(2, 0, 1)[None].to(q.dtype)
        if mask is not None:
            bias = bias + mask[:, None].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int, shift: int) -> None:
        super().__init__()
        self.ws, self.shift = ws, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        ws = self.ws
        y = self.norm1(x).view(b, h, w, c)
        # Padding tokens are zeros after the norm; they take part in attention, as trained.
        y = F.pad(y, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
            mask = mask.repeat(b, 1, 1)
        y = self.attn(_windows(y, ws), mask if self.shift else None)
        y = _unwindow(y, ws, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y[:, :h, :w].reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat((x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]), -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, ws: int, merge: bool) -> None:
        super().__init__()
        self.ws = ws
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, ws, ws // 2 if i % 2 else 0) for i in range(depth))
        self.downsample = PatchMerging(dim) if merge else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stage's output at (h, w), and the next stage's input."""
        ws = self.ws
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        mask = _shift_mask(hp, wp, ws, ws // 2, x.dtype, x.device)
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x, (self.downsample(x, h, w) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x = self.proj(F.pad(x, (0, -w % 4, 0, -h % 4)))
        b, c, hh, ww = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, hh, ww)


class Swin(nn.Module):
    def __init__(self, spec: SwinSpec) -> None:
        super().__init__()
        self.widths = [spec.embed_dim * 2**i for i in range(len(spec.depths))]
        self.patch_embed = PatchEmbed(spec.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dim, depth, heads, spec.window, i < len(spec.depths) - 1)
            for i, (dim, depth, heads) in enumerate(zip(self.widths, spec.depths, spec.heads, strict=True))
        )
        for i, dim in enumerate(self.widths):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' features, (B, C, H, W) at 1/4, 1/8, 1/16 and 1/32 of the input."""
        x = self.patch_embed(x)
        h, w = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        features = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            features.append(out.view(-1, h, w, self.widths[i]).permute(0, 3, 1, 2).contiguous())
            h, w = (h + 1) // 2, (w + 1) // 2
        return features
