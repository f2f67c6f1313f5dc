"""Colour fidelity: the relit subject keeps its own colours (chroma) and takes the new light's
lightness, so a red product stays red under warm light.

It works in CIELAB (D65), through Pillow's colour management (LittleCMS): L* is lightness,
a* and b* are chroma, and a perceptual space keeps a hue from drifting as its chroma is moved.
Inside the matte the result's a* and b* move towards the subject's by `strength`, its L* stays;
outside the matte nothing changes. The subject and matte are brought to the output's size with
the conditioning's resize-and-centre-crop, as detail transfer does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageCms

from .compositing import fit_matte
from .images import resize_and_center_crop

_SRGB = ImageCms.createProfile("sRGB")
_LAB = ImageCms.createProfile("LAB", colorTemp=6500)
TO_LAB = ImageCms.buildTransform(_SRGB, _LAB, "RGB", "LAB")
TO_RGB = ImageCms.buildTransform(_LAB, _SRGB, "LAB", "RGB")


def to_lab(image: np.ndarray) -> np.ndarray:
    """uint8 RGB to Pillow's 8-bit LAB (L* scaled to 0..255, a* and b* offset by 128)."""
    return np.asarray(ImageCms.applyTransform(Image.fromarray(image), TO_LAB))


def to_rgb(lab: np.ndarray) -> np.ndarray:
    return np.asarray(ImageCms.applyTransform(Image.fromarray(lab, "LAB"), TO_RGB))


def keep_colors(result: np.ndarray, subject: np.ndarray, matte: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """The result with the subject's chroma inside the matte, by `strength` (0 changes nothing)."""
    if strength <= 0:
        return result
    h, w = result.shape[:2]
    m = fit_matte(matte, w, h) * float(strength)
    lab = to_lab(result)
    target = np.concatenate([lab[..., :1], to_lab(resize_and_center_crop(subject, w, h))[..., 1:]], axis=-1)
    recoloured = to_rgb(np.ascontiguousarray(target)).astype(np.float32)
    out = result.astype(np.float32) + m * (recoloured - result.astype(np.float32))
    return np.where(m > 0, out.clip(0, 255).round(), result).astype(np.uint8)
