"""Image I/O and the pixel conventions of IC-Light (all exact, to keep parity)."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.spec import ImageLike
from ..core.validation import InputError

__all__ = ["ImageLike"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# The most pixels `resize_and_center_crop` makes before it crops (about 100 MB of RGB): beyond it
# the image is an extreme strip, and only the part that stays is resampled.
LARGEST_INTERMEDIATE = 32_000_000


class ImageInputError(InputError):
    """An input image that cannot be used; the message names the input."""


def load_image(source: ImageLike, name: str = "image") -> np.ndarray:
    """Any image Pillow opens, EXIF-oriented, first frame, as an RGB uint8 array."""
    return load_image_and_alpha(source, name)[0]


def load_image_and_alpha(source: ImageLike, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """The RGB image and, when it has a real one (not fully opaque), its own alpha in [0, 1]. Any
    size the hosted model takes, from one pixel: what is made of it is resized as it resizes it."""
    return _load(source, name)


def _load(source: ImageLike, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source, name)
        alpha = _unit(source[..., 3]) if source.ndim == 3 and source.shape[2] == 4 else None
        return rgb, _real(alpha)
    if isinstance(source, Image.Image):
        return _from_pil(source, name)
    if not isinstance(source, str | os.PathLike):
        raise ImageInputError(f"{name}: expected a file path, a PIL image or an array, got {type(source).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                img.seek(0)
                return _from_pil(img, name)
    except FileNotFoundError as e:
        raise ImageInputError(f"{name}: file not found: {source}") from e
    except IsADirectoryError as e:
        raise ImageInputError(f"{name}: {source} is a folder, not an image file") from e
    except UnidentifiedImageError as e:
        raise ImageInputError(f"{name}: not an image file that Pillow can open") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageInputError(f"{name}: image too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageInputError(f"{name}: image file is damaged or truncated ({e})") from e


# Modes with an alpha band (LAB's "A" band is a colour); the premultiplied ones, which Pillow
# converts to RGB only through their straight form.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
PREMULTIPLIED = {"RGBa": "RGBA", "La": "LA"}


def _from_pil(img: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        img = ImageOps.exif_transpose(img)
        img = img.convert(PREMULTIPLIED[img.mode]) if img.mode in PREMULTIPLIED else img
        alpha = None
        if img.mode in ALPHA_MODES or "transparency" in img.info:
            alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
        return np.asarray(_to_rgb(img)), _real(alpha)
    except (ValueError, OSError) as e:
        raise ImageInputError(f"{name}: a {img.mode} image that Pillow cannot convert to RGB ({e})") from e


def _real(alpha: np.ndarray | None) -> np.ndarray | None:
    return alpha if alpha is not None and alpha.min() < 1.0 else None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits rather than let Pillow clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    return img.convert("RGB")


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ImageInputError(f"{name}: expected an array of numbers, got dtype {arr.dtype}")
    if arr.shape[0] * arr.shape[1] > 2 * Image.MAX_IMAGE_PIXELS:  # where Pillow refuses a file
        raise ImageInputError(f"{name}: image too large ({arr.shape[1]}x{arr.shape[0]} pixels)")
    arr = _unit_to_uint8(arr) if arr.dtype != np.uint8 else arr
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _unit_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Floats in [0, 1], booleans, 16-bit integers in [0, 65535], other integers in [0, 255]; NaN is 0."""
    return (_unit(arr) * 255.0).astype(np.uint8)


def _unit(arr: np.ndarray) -> np.ndarray:
    """An array's values in [0, 1] as float32, by its dtype's convention (see `_unit_to_uint8`)."""
    if arr.dtype.kind == "f":
        return np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0).clip(0, 1)
    if arr.dtype.kind == "b":
        return arr.astype(np.float32)
    peak = 65535.0 if arr.dtype.itemsize >= 2 and arr.dtype.kind == "u" and arr.dtype != np.uint8 else 255.0
    return (arr.astype(np.float64).clip(0, peak) / peak).astype(np.float32)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def resize_and_center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scaled to cover width x height, then its centre: the hosted code's order (its pixels). Where
    that would make an intermediate image over `LARGEST_INTERMEDIATE` pixels (a 1x5,000 strip made
    512 px wide is 2.6 million px tall), only the part that stays is resampled, at the same scale."""
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    rw, rh = round(w * scale), round(h * scale)
    box = ((rw - width) / 2, (rh - height) / 2, (rw + width) / 2, (rh + height) / 2)
    if rw * rh > LARGEST_INTERMEDIATE:
        x0, y0 = round(box[0]), round(box[1])  # where Pillow's crop puts the box
        source = (x0 * w / rw, y0 * h / rh, (x0 + width) * w / rw, (y0 + height) * h / rh)
        return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS, box=source))
    resized = Image.fromarray(image).resize((rw, rh), Image.LANCZOS)
    return np.asarray(resized.crop(box))


def unit_to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255.0).clip(0, 255).astype(np.uint8)


def signed_to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


def save_images(images: list[np.ndarray] | list[Image.Image], fmt: str, quality: int, folder: Path) -> list[Path]:
    """Write images as `folder/output_N.FMT`, encoded side by side: Pillow's encoders release the
    GIL, and the bytes are the same as one after the other."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"output_{i}.{fmt}" for i in range(len(images))]
    with ThreadPoolExecutor(max_workers=max(1, min(len(images), os.cpu_count() or 1))) as pool:
        list(pool.map(lambda pair: save_image(*pair, fmt, quality), zip(images, paths, strict=True)))
    return paths


def save_image(
    image: np.ndarray | Image.Image, path: str | os.PathLike | IO[bytes], fmt: str, quality: int, **extra
) -> None:
    pil_format = {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]
    options = {} if fmt == "png" else {"quality": quality, "optimize": True}
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img.save(path, format=pil_format, **options, **extra)


def encode_image(image: np.ndarray | Image.Image, fmt: str, quality: int, **extra) -> bytes:
    """`save_image` into bytes."""
    buf = io.BytesIO()
    save_image(image, buf, fmt, quality, **extra)
    return buf.getvalue()


def fit_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask (HxW in [0, 1]) at the subject's size: resized where it has the subject's aspect ratio
    (within a pixel), else an InputError naming both sizes."""
    mh, mw = mask.shape
    if (mw, mh) == (width, height):
        return mask
    if abs(mw * height / mh - width) > 1:
        raise InputError(
            f"mask: size {mw}x{mh} differs from the subject's {width}x{height} and so does its aspect ratio; "
            "give a mask of the subject's size or shape"
        )
    return np.asarray(Image.fromarray(mask, mode="F").resize((width, height), Image.BILINEAR)).clip(0, 1)
