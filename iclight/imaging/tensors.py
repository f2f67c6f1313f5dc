"""Pixels to tensors and back, by IC-Light's conventions (exact, to keep parity). torch is
imported when first used: the command line starts without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC images to a float NCHW batch; /127 so that the grey 127 is exactly 0."""
    import torch

    batch = torch.from_numpy(np.stack(images, axis=0)).float() / 127.0 - 1.0
    return batch.movedim(-1, 1)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """Decoded images in [-1, 1] to uint8 HWC (the rule used between the passes)."""
    y = images.movedim(1, -1) * 127.5 + 127.5
    y = y.detach().float().cpu().numpy().clip(0, 255).astype(np.uint8)
    return list(y)


def to_unit(images: torch.Tensor) -> list[np.ndarray]:
    """Decoded images in [-1, 1] to float HWC in [0, 1] (final results)."""
    y = images.movedim(1, -1) * 0.5 + 0.5
    return list(y.detach().float().cpu().numpy().clip(0, 1).astype(np.float32))
