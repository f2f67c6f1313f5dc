"""Image I/O and the pixel conventions of IC-Light (all exact, to keep parity)."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import constants as C
from .validation import InputError

if TYPE_CHECKING:  # the tensor helpers import it: the command line starts without torch
    import torch

ImageLike = str | os.PathLike | Image.Image | np.ndarray
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageInputError(InputError):
    """An input image that cannot be used; the message names the input."""


def load_image(source: ImageLike, name: str = "image") -> np.ndarray:
    """Any image Pillow opens, EXIF-oriented, first frame, as an RGB uint8 array."""
    return load_image_and_alpha(source, name)[0]


def load_image_and_alpha(source: ImageLike, name: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """The RGB image and, when it has a real one (not fully opaque), its own alpha in [0, 1]."""
    image, alpha = _load(source, name)
    check_size(image.shape[1], image.shape[0], name)
    return image, alpha


def check_size(width: int, height: int, name: str) -> None:
    """An ImageInputError unless both sides and the aspect ratio are within the limits in `constants`."""
    short, long = sorted((width, height))
    if short < C.IMAGE_MIN_SIDE or long > C.IMAGE_MAX_ASPECT * short:
        raise ImageInputError(
            f"{name}: {width}x{height} pixels cannot be relit; allowed at least {C.IMAGE_MIN_SIDE} px a side "
            f"and at most {C.IMAGE_MAX_ASPECT}:1 between the sides"
        )


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
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    rw, rh = round(w * scale), round(h * scale)
    resized = Image.fromarray(image).resize((rw, rh), Image.LANCZOS)
    box = ((rw - width) / 2, (rh - height) / 2, (rw + width) / 2, (rh + height) / 2)
    return np.asarray(resized.crop(box))


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


def unit_to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 255.0).clip(0, 255).astype(np.uint8)


def signed_to_uint8(image: np.ndarray) -> np.ndarray:
    return (image * 127.5 + 127.5).clip(0, 255).astype(np.uint8)


def light_background(light_source: str, width: int, height: int, uploaded: np.ndarray | None) -> np.ndarray:
    """The image that conditions the UNet for a light source (before resizing)."""
    if light_source == C.BACKGROUND_IMAGE:
        return _require(uploaded, light_source)
    if light_source == C.FLIPPED_BACKGROUND_IMAGE:
        return np.ascontiguousarray(np.fliplr(_require(uploaded, light_source)))
    if light_source == C.AMBIENT:
        return np.zeros((height, width, 3), dtype=np.uint8) + C.AMBIENT_GREY
    ramps = {
        C.LEFT_LIGHT: (C.LIGHT_BRIGHT, C.LIGHT_DARK, False),
        C.RIGHT_LIGHT: (C.LIGHT_DARK, C.LIGHT_BRIGHT, False),
        C.TOP_LIGHT: (C.LIGHT_BRIGHT, C.LIGHT_DARK, True),
        C.BOTTOM_LIGHT: (C.LIGHT_DARK, C.LIGHT_BRIGHT, True),
    }
    if light_source not in ramps:
        raise InputError(f"light_source: unknown value {light_source!r}; choose one of {list(C.LIGHT_SOURCES)}")
    start, stop, vertical = ramps[light_source]
    if vertical:
        plane = np.tile(np.linspace(start, stop, height)[:, None], (1, width))
    else:
        plane = np.tile(np.linspace(start, stop, width), (height, 1))
    return np.stack((plane,) * 3, axis=-1).astype(np.uint8)


def _require(image: np.ndarray | None, light_source: str) -> np.ndarray:
    if image is None:
        raise InputError(f"background_image: required when light_source is {light_source!r}")
    return image


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
