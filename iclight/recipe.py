"""Every output carries its recipe: parameters, seed, input and weight hashes, versions.

The recipe goes into a JSON sidecar and into the image itself (a PNG text chunk, or
the EXIF ImageDescription of a JPEG or WebP), so any image can be made again exactly.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from .fetch import sha256_of
from .imaging import encode_image

RECIPE_KEY = "iclight-recipe"
EXIF_DESCRIPTION = 0x010E
PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "numpy", "pillow")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def file_record(path: str | os.PathLike | None) -> dict[str, str] | None:
    if path is None:
        return None
    p = Path(path).resolve()
    return {"path": str(p), "sha256": sha256_of(p)}


def input_records(files: dict[str, str | os.PathLike | None]) -> dict[str, dict[str, str] | None]:
    """Path and sha256 of each input file (None where an input was not given)."""
    return {name: file_record(path) for name, path in files.items()}


def make_recipe(
    parameters: dict[str, Any],
    seed: int,
    index: int,
    inputs: dict[str, dict[str, str] | None],
    weights: dict[str, str],
    device: str,
) -> dict[str, Any]:
    return {
        "recipe": 1,
        "parameters": {**parameters, "seed": seed},
        "index": index,
        "inputs": inputs,
        "weights": weights,
        "device": device,
        "versions": versions(),
    }


def encode_with_recipe(image: Image.Image, fmt: str, quality: int, recipe: dict[str, Any]) -> bytes:
    """The encoded image, carrying its recipe (PNG text, or EXIF ImageDescription)."""
    text = json.dumps(recipe, sort_keys=True)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text(RECIPE_KEY, text)
        extra: dict[str, Any] = {"pnginfo": info}
    else:
        exif = Image.Exif()
        exif[EXIF_DESCRIPTION] = text
        extra = {"exif": exif}
    return encode_image(image, fmt, quality, **extra)


def sidecar_text(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, indent=1, sort_keys=True)


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe from a sidecar JSON or from an image that carries one."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return json.loads(p.read_text())
    with Image.open(p) as img:
        text = img.text.get(RECIPE_KEY) if hasattr(img, "text") else None
        text = text or img.getexif().get(EXIF_DESCRIPTION)
    if not text:
        raise ValueError(f"{p}: carries no iclight recipe")
    return json.loads(text)
