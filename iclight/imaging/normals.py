"""Normal maps from four relightings (left, right, bottom, top), IC-Light's photometric trick."""

from __future__ import annotations

import numpy as np

from ..core import constants as C
from .images import resize_and_center_crop, signed_to_uint8


def ratio(image: np.ndarray, ambient: np.ndarray) -> np.ndarray:
    return (image + C.NORMAL_EPS) / (ambient + C.NORMAL_EPS) - 1.0


def normal_map(left: np.ndarray, right: np.ndarray, bottom: np.ndarray, top: np.ndarray, matte: np.ndarray) -> list:
    """Nine uint8 images: normal, the four ratio images, then the four relightings.

    `left` .. `top` are HxWx3 floats in [0, 1]; `matte` is the subject's HxWx1 matte
    at the input's size.
    """
    lights = [left, right, bottom, top]
    ambient = (left + right + bottom + top) / 4.0
    h, w = ambient.shape[:2]
    matte8 = (matte[..., 0] * 255.0).clip(0, 255).astype(np.uint8)
    m = resize_and_center_crop(matte8, w, h).astype(np.float32)[..., None] / 255.0

    ratios = [ratio(x, ambient) for x in lights]
    r_left, r_right, r_bottom, r_top = ratios
    u = np.mean((r_right - r_left) * 0.5, axis=2)
    v = np.mean((r_top - r_bottom) * 0.5, axis=2)
    z = (1.0 - u**2.0 - v**2.0).clip(0, 1e5) ** C.NORMAL_Z_POWER
    normal = np.stack([u, v, z], axis=2)
    normal /= np.sum(normal**2.0, axis=2, keepdims=True) ** 0.5
    flat = np.stack([np.zeros_like(z), np.zeros_like(z), np.ones_like(z)], axis=2)
    normal = normal * m + flat * (1 - m)

    results = [normal, *ratios, *(x * 2.0 - 1.0 for x in lights)]
    return [signed_to_uint8(x) for x in results]
