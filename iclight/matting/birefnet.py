"""BiRefNet (MIT licence): the general model (Swin-L) and its lite variant (Swin-T), in plain torch.

The module tree's names and shapes are those of the published checkpoints
(`ZhengPeng7/BiRefNet`, `ZhengPeng7/BiRefNet_lite`), so they load strictly; the key list is
recorded in `tests/data/birefnet_state_dict.json`. The trained heads that only serve training
(multi-scale supervision, gradient predictions) are kept so the checkpoint loads, and never run:
a forward computes the final matte alone. The deformable convolution is written with
`grid_sample`, so nothing here needs torchvision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from .swin import VARIANTS, Swin

INPUT_SIZE = 1024  # BiRefNet's inference size, square
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _up(x: torch.Tensor, like: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    size = like if isinstance(like, tuple) else like.shape[2:]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


# -- the Swin Transformer backbone ---------------------------------------------------------------


SAMPLE_ELEMENTS = 1 << 25  # elements of sampled input held at once by a deformable convolution


def deform_conv2d(
    x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, padding: int
) -> torch.Tensor:
    """Modulated deformable convolution (DCNv2), stride and dilation 1, one offset group.

    Tap k of the kernel reads the input bilinearly at p + p_k + (offset[2k], offset[2k + 1])
    (zero outside), scaled by mask[k]; `torchvision.ops.deform_conv2d`'s layout and meaning.
    Taps are sampled in chunks so a 7x7 kernel at 1/4 of 1024x1024 stays within memory.
    """
    b, c, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    taps = kh * kw
    ky, kx = torch.meshgrid(torch.arange(kh, device=x.device), torch.arange(kw, device=x.device), indexing="ij")
    base_y = (torch.arange(ho, device=x.device) - padding)[None, :, None] + ky.reshape(-1, 1, 1)  # (taps, ho, 1)
    base_x = (torch.arange(wo, device=x.device) - padding)[None, None, :] + kx.reshape(-1, 1, 1)  # (taps, 1, wo)
    # Positions and sampling in float32 whatever the model's dtype: in half precision a position
    # is up to half a pixel off at 256 pixels, and the CPU's bfloat16 grid_sample has read
    # uninitialised memory (NaN in the matte) after other work in the same process.
    source = x.float()
    off = offset.float().view(b, taps, 2, ho, wo)
    flat_weight = weight.reshape(out_ch, c, taps)
    out = x.new_zeros(b, out_ch, ho, wo)
    step = max(1, SAMPLE_ELEMENTS // max(1, b * c * ho * wo))
    for t0 in range(0, taps, step):
        t = slice(t0, min(taps, t0 + step))
        ys = base_y[t] + off[:, t, 0]
        xs = base_x[t] + off[:, t, 1]
        # align_corners=False: pixel i sits at (2i + 1) / n - 1, which also works when n is 1.
        grid = torch.stack(((2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1), -1)  # (b, k, ho, wo, 2)
        k = grid.shape[1]
        sampled = F.grid_sample(
            source, grid.view(b, k * ho, wo, 2), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        sampled = (sampled.view(b, c, k, ho, wo) * mask[:, None, t].float()).to(x.dtype)
        out += torch.einsum("ock,bckhw->bohw", flat_weight[:, :, t], sampled)
    return out


class DeformableConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.padding = k // 2
        self.offset_conv = nn.Conv2d(cin, 2 * k * k, k, padding=self.padding)
        self.modulator_conv = nn.Conv2d(cin, k * k, k, padding=self.padding)
        self.regular_conv = nn.Conv2d(cin, cout, k, padding=self.padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(x, self.offset_conv(x), mask, self.regular_conv.weight, self.padding)


class DeformableBranch(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.atrous_conv = DeformableConv2d(cin, cout, k)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPPDeformable(nn.Module):
    """Deformable atrous pyramid: a 1x1 branch, 1x1, 3x3 and 7x7 deformable branches, and the
    image's mean, fused by a 1x1 convolution."""

    def __init__(self, channels: int, branch: int = 256) -> None:
        super().__init__()
        self.aspp1 = DeformableBranch(channels, branch, 1)
        self.aspp_deforms = nn.ModuleList(DeformableBranch(channels, branch, k) for k in (1, 3, 7))
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU()
        )
        self.conv1 = nn.Conv2d(5 * branch, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.aspp1(x)
        mean = self.global_avg_pool(x).expand(-1, -1, *first.shape[2:])
        fused = torch.cat((first, *(branch(x) for branch in self.aspp_deforms), mean), 1)
        return F.relu(self.bn1(self.conv1(fused)))


class DecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, inter: int = 64) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cin, inter, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter)
        self.dec_att = ASPPDeformable(inter)
        self.conv_out = nn.Conv2d(inter, cout, 3, padding=1)
        self.bn_out = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_out(self.conv_out(self.dec_att(F.relu(self.bn_in(self.conv_in(x))))))


class ImageConvs(nn.Module):
    """Two plain convolutions that bring the image's patches into the decoder."""

    def __init__(self, cin: int, cout: int, inter: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inter, 3, padding=1)
        self.conv_out = nn.Conv2d(inter, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv1(x))


class Lateral(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _patches(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The image cut into a grid of patches the size of `like`, stacked along channels."""
    b, c, h, w = image.shape
    ph, pw = like.shape[2:]
    gh, gw = h // ph, w // pw
    stacked = image.view(b, c, gh, ph, gw, pw).permute(0, 1, 2, 4, 3, 5).reshape(b, c * gh * gw, ph, pw)
    return _up(stacked, like)


def _gate(channels: int, hidden: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU())


def _head(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, 1, 1))


class Decoder(nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        outs = [*widths[1:], widths[-1] // 2]
        image = [w // 8 for w in widths]
        # Image patches at each scale: a 32x32 grid at 1/32, 16x16 at 1/16, ..., the image itself.
        for n, (cin, cout) in enumerate(zip((3 * 1024, 3 * 256, 3 * 64, 3 * 16, 3), [image[0], *image], strict=True)):
            self.add_module(f"ipt_blk{5 - n}", ImageConvs(cin, cout))
        for n in range(4):
            self.add_module(f"decoder_block{4 - n}", DecoderBlock(widths[n] + image[max(0, n - 1)], outs[n]))
        self.conv_out1 = _head(outs[3] + image[3])
        for n in (4, 3, 2):
            self.add_module(f"lateral_block{n}", Lateral(widths[5 - n], outs[4 - n]))
        for n in (4, 3, 2):  # trained heads: conv_ms_spvn_* and gdt_convs_pred_* serve training only
            self.add_module(f"conv_ms_spvn_{n}", nn.Conv2d(outs[4 - n], 1, 1))
            self.add_module(f"gdt_convs_{n}", _gate(outs[4 - n]))
            self.add_module(f"gdt_convs_pred_{n}", _head(16))
            self.add_module(f"gdt_convs_attn_{n}", _head(16))

    def _gated(self, n: int, x: torch.Tensor) -> torch.Tensor:
        p = getattr(self, f"decoder_block{n}")(x)
        attention = getattr(self, f"gdt_convs_attn_{n}")(getattr(self, f"gdt_convs_{n}")(p))
        return p * attention.sigmoid()

    def forward(
        self, x: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor
    ) -> torch.Tensor:
        p = self._gated(4, torch.cat((x4, self.ipt_blk5(_patches(x, x4))), 1))
        for n, skip in ((3, x3), (2, x2)):
            p = _up(p, skip) + getattr(self, f"lateral_block{n + 1}")(skip)
            p = self._gated(n, torch.cat((p, getattr(self, f"ipt_blk{n + 1}")(_patches(x, p))), 1))
        p = _up(p, x1) + self.lateral_block2(x1)
        p = self.decoder_block1(torch.cat((p, self.ipt_blk2(_patches(x, p))), 1))
        p = _up(p, x)
        return self.conv_out1(torch.cat((p, self.ipt_blk1(_patches(x, p))), 1))


class BiRefNet(nn.Module):
    """The matte's logits for a normalised image batch whose sides are multiples of 32."""

    def __init__(self, variant: str = "birefnet") -> None:
        super().__init__()
        self.variant = variant
        self.bb = Swin(VARIANTS[variant])
        widths = [2 * w for w in reversed(self.bb.widths)]  # each stage with its half-size pass beside it
        self.squeeze_module = nn.Sequential(DecoderBlock(widths[0] + sum(widths[1:]), widths[0]))
        self.decoder = Decoder(widths)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[2:]
        half = self.bb(_up(x, (h // 2, w // 2)))
        x1, x2, x3, x4 = (torch.cat((f, _up(g, f)), 1) for f, g in zip(self.bb(x), half, strict=True))
        x4 = torch.cat((_up(x1, x4), _up(x2, x4), _up(x3, x4), x4), 1)
        return [x1, x2, x3, self.squeeze_module(x4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The matte in [0, 1], (B, 1, H, W)."""
        return self.decoder(x, *self.encode(x)).sigmoid()

    @classmethod
    def from_file(
        cls, path: str | Path, variant: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> BiRefNet:
        """A published checkpoint, loaded strictly. Buffers derived from the shapes alone (the
        window index, batch-norm counters) are taken from the model where a file leaves them out."""
        model = cls(variant)
        state = load_file(str(path))
        own = model.state_dict()
        derived = ("relative_position_index", "num_batches_tracked")
        state |= {k: v for k, v in own.items() if k not in state and k.endswith(derived)}
        model.load_state_dict(state, strict=True)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def to_batch(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """An RGB uint8 image as BiRefNet's input: resized to size x size (bilinear), normalised."""
    feed = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    batch = torch.from_numpy(feed).permute(2, 0, 1)[None]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (batch - mean) / std


@torch.inference_mode()
def estimate_matte(model: BiRefNet, image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The subject's alpha matte, HxWx1 floats in [0, 1], back at the image's size (bilinear)."""
    h, w = image.shape[:2]
    param = next(model.parameters())
    matte = model(to_batch(image, size).to(device=param.device, dtype=param.dtype)).float()
    matte = F.interpolate(matte, size=(h, w), mode="bilinear", align_corners=False)
    return matte.movedim(1, -1)[0].cpu().numpy().clip(0, 1)
