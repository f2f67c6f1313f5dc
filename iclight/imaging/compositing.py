"""Post-relighting extras: restore the subject's fine detail, or keep the real background.

Both work in the geometry of the conditioning: the subject, its matte and the
background are brought to the output size with the same resize-and-centre-crop the
model saw, so nothing is stretched when aspect ratios differ.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..core import constants as C
from .images import resize_and_center_crop


def fit_matte(matte: np.ndarray, width: int, height: int) -> np.ndarray:
    """An HxW matte in [0, 1] brought to (width, height) like the conditioning; HxWx1."""
    m8 = (matte * 255.0).clip(0, 255).round().astype(np.uint8)
    return resize_and_center_crop(m8, width, height).astype(np.float32)[..., None] / 255.0


def low_pass(image: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a uint8 RGB image, as float32."""
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)), np.float32)


def detail_radius(width: int, height: int) -> float:
    return max(1.0, max(width, height) / 256.0)


def transfer_detail(
    result: np.ndarray, subject: np.ndarray, matte: np.ndarray, strength: float = 1.0, radius: float | None = None
) -> np.ndarray:
    """Inside the matte, swap the result's high frequencies for the subject's.

    `strength` 0 leaves the result as it is, 1 keeps all of the subject's detail.
    Outside the matte nothing changes.
    """
    h, w = result.shape[:2]
    radius = radius or detail_radius(w, h)
    src = resize_and_center_crop(subject, w, h)
    res = result.astype(np.float32)
    m = fit_matte(matte, w, h)
    high_src = src.astype(np.float32) - low_pass(src, radius)
    high_res = res - low_pass(result, radius)
    out = res + strength * m * (high_src - high_res)
    return np.where(m > 0, out.clip(0, 255).round(), res).astype(np.uint8)


def keep_background(result: np.ndarray, background: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """The relit subject over the supplied background's own pixels, through the matte."""
    h, w = result.shape[:2]
    bg = resize_and_center_crop(background, w, h)
    m = fit_matte(matte, w, h)
    out = result.astype(np.float32) * m + bg.astype(np.float32) * (1.0 - m)
    return np.where(m > 0, out.clip(0, 255).round(), bg).astype(np.uint8)


def on_grey(image: np.ndarray, matte: np.ndarray, sigma: float = C.RELIGHT_SIGMA) -> np.ndarray:
    """The subject composited on neutral grey through its matte."""
    result = C.GREY + (image.astype(np.float32) - C.GREY + sigma) * matte
    return result.clip(0, 255).astype(np.uint8)
