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

from ..core import options as O
from ..core.lora import Lora
from ..core.spec import Encoding, RelightSpec
from ..core.validation import InputError
from ..imaging.images import encode_image
from ..store.fetch import HashCache, sha256_of

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


def parameters(spec: RelightSpec, encoded: Encoding, matting: str) -> dict[str, Any]:
    """Every setting of a relight as a recipe keeps it: the spec's, the output's, and the matting
    model that was used (the relighter's own where the relight named none)."""
    found = spec.record() | {"output_format": encoded.format, "output_quality": encoded.quality}
    return found | {"matting": spec.matting or matting}


def lora_record(lora: Lora) -> dict[str, Any]:
    """A LoRA as a recipe keeps it: its path, its sha256 and its scale."""
    path = Path(lora.path)
    return {"path": lora.path, "sha256": HashCache(path.parent).sha256(path.name), "scale": lora.scale}


def models_record(relighter, spec: RelightSpec) -> dict[str, Any]:
    """What a recipe keeps of the models beyond the weights folder: the base model's files and
    the LoRAs the relight used, each with its sha256."""
    base = relighter.base_model
    base = None if base is None else {"path": str(base.path), "files": base.sha256()}
    return {"base_model": base, "loras": [lora_record(lora) for lora in relighter.loras_of(spec)]}


def check_models(models: dict[str, Any], base_model: Path | None) -> None:
    """An InputError naming the base model or LoRA file a recipe needs that is missing or differs."""
    from ..store.basemodel import resolve

    recorded = (models.get("base_model") or {}).get("files", {})
    if recorded:
        found = resolve(base_model) if base_model is not None and Path(base_model).exists() else None
        now = found.sha256() if found else {}
        for file, digest in recorded.items():
            if now.get(file) != digest:
                state = "is missing" if file not in now else "differs from the recipe's (sha256)"
                raise InputError(f"base_model: {file} {state}")
    for lora in models.get("loras") or []:
        if not Path(lora["path"]).is_file():
            raise InputError(f"loras: {lora['path']} is missing")
        if lora_record(Lora(lora["path"], lora["scale"]))["sha256"] != lora["sha256"]:
            raise InputError(f"loras: {lora['path']} differs from the recipe's (sha256)")


def recipe_for(relighter, spec: RelightSpec, encoded: Encoding, seed: int, images: dict[str, Any]) -> dict[str, Any]:
    """A relight's recipe (its first image's): every setting, the seed, the sha256 of `images` (the
    door's own: the subject or a sequence's video, the background) and of every file option, of the
    weights and the models, and the versions."""
    inputs = input_records(images | {name: getattr(spec, name) for name in O.RELIGHT_FILES})
    settings = parameters(spec, encoded, relighter.matting)
    recipe = make_recipe(settings, seed, 0, inputs, relighter.weights_hashes(), str(relighter.device))
    return recipe | {"models": models_record(relighter, spec)}


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
