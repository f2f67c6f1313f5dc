"""BriaRMBG-1.4 background removal: an IS-Net style nested U-Net, plus the matting step.

The module tree reproduces the published checkpoint's parameter names, so its
`model.safetensors` loads strictly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ..core import constants as C
from ..imaging.images import resize
from ..imaging.tensors import to_tensor


def _up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class ConvBnRelu(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block of depth `depth`: pooled (RSU-L) or, with `dilated`, RSU-4F."""

    def __init__(self, depth: int, in_ch: int, mid: int, out_ch: int, dilated: bool = False) -> None:
        super().__init__()
        self.depth, self.dilated = depth, dilated
        self.rebnconvin = ConvBnRelu(in_ch, out_ch)
        enc_dil = [2 ** (i - 1) for i in range(1, depth + 1)] if dilated else [1] * (depth - 1) + [2]
        for i in range(1, depth + 1):
            self.add_module(f"rebnconv{i}", ConvBnRelu(out_ch if i == 1 else mid, mid, enc_dil[i - 1]))
        for i in range(depth - 1, 0, -1):
            self.add_module(f"rebnconv{i}d", ConvBnRelu(2 * mid, out_ch if i == 1 else mid, enc_dil[i - 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hin = self.rebnconvin(x)
        feats = [self.rebnconv1(hin)]
        for i in range(2, self.depth + 1):
            prev = feats[-1]
            if not self.dilated and i < self.depth:
                prev = _pool(prev)
            feats.append(getattr(self, f"rebnconv{i}")(prev))
        h = feats[-1]
        for i in range(self.depth - 1, 0, -1):
            skip = feats[i - 1]
            if not self.dilated and h.shape[2:] != skip.shape[2:]:
                h = _up_to(h, skip)
            h = getattr(self, f"rebnconv{i}d")(torch.cat((h, skip), 1))
        return h + hin


class BriaRMBG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.stage1 = RSU(7, 64, 32, 64)
        self.stage2 = RSU(6, 64, 32, 128)
        self.stage3 = RSU(5, 128, 64, 256)
        self.stage4 = RSU(4, 256, 128, 512)
        self.stage5 = RSU(4, 512, 256, 512, dilated=True)
        self.stage6 = RSU(4, 512, 256, 512, dilated=True)
        self.stage5d = RSU(4, 1024, 256, 512, dilated=True)
        self.stage4d = RSU(4, 1024, 128, 256)
        self.stage3d = RSU(5, 512, 64, 128)
        self.stage2d = RSU(6, 256, 32, 64)
        self.stage1d = RSU(7, 128, 16, 64)
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The alpha matte (first side output, sigmoid), at the input's size.

        Only the first side output is computed: the other five are trained heads the
        matting step never reads.
        """
        skips = []
        h = self.conv_in(x)
        for name in ("stage1", "stage2", "stage3", "stage4", "stage5"):
            h = getattr(self, name)(h)
            skips.append(h)
            h = _pool(h)
        h = self.stage6(h)
        for name, skip in zip(("stage5d", "stage4d", "stage3d", "stage2d", "stage1d"), reversed(skips), strict=True):
            h = getattr(self, name)(torch.cat((_up_to(h, skip), skip), 1))
        return torch.sigmoid(_up_to(self.side1(h), x))

    @classmethod
    def from_file(cls, path: str, device: torch.device | str = "cpu") -> BriaRMBG:
        model = cls()
        model.load_state_dict(load_file(str(path), device=str(device)), strict=True)
        return model.to(device).eval().requires_grad_(False)


# The most 64 px blocks the hosted rule gives a side: its other side then rounds to one block from 0.5.
MOST_BLOCKS = round(C.RMBG_AREA / 0.5)


def feed_size(width: int, height: int) -> tuple[int, int]:
    """The size the matting net sees: the hosted sizes (64 px blocks, about RMBG_AREA of them). A
    strip whose short side the hosted rule rounds to nothing (the hosted code then fails) gets one
    block there and at most MOST_BLOCKS along, so no strip is fed more than the hosted code ever is."""
    k = (C.RMBG_AREA / float(width * height)) ** 0.5
    blocks = [min(max(1, round(side * k)), MOST_BLOCKS) for side in (width, height)]
    return 64 * blocks[0], 64 * blocks[1]


@torch.inference_mode()
def estimate_matte(model: BriaRMBG, image: np.ndarray) -> np.ndarray:
    """The subject's alpha matte, HxWx1 floats in [0, 1]."""
    h, w = image.shape[:2]
    feed = resize(image, *feed_size(w, h))
    param = next(model.parameters())
    alpha = model(to_tensor([feed]).to(device=param.device, dtype=param.dtype))
    alpha = F.interpolate(alpha, size=(h, w), mode="bilinear", align_corners=False)
    return alpha.movedim(1, -1)[0].float().cpu().numpy().clip(0, 1)
