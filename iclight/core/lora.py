"""A LoRA as a relight asks for it: a `.safetensors` file and the scale it is applied at.
(`models/loras.py` loads them into the UNet and the text encoder.)"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .validation import InputError


@dataclass(frozen=True)
class Lora:
    """A LoRA file and the scale it is applied at."""

    path: str
    scale: float = 1.0

    @classmethod
    def of(cls, value: Any) -> Lora:
        """From a Lora, "FILE[:SCALE]", (FILE, SCALE) or {"path": FILE, "scale": SCALE}; an
        InputError naming `loras` otherwise."""
        if isinstance(value, Lora):
            path, scale = value.path, value.scale
        elif isinstance(value, str | Path):
            text = str(value)
            head, _, tail = text.rpartition(":")
            path, scale = (head, tail) if head and _number(tail) else (text, 1.0)
        elif isinstance(value, dict) and "path" in value:
            path, scale = value["path"], value.get("scale", 1.0)
        elif isinstance(value, tuple | list) and len(value) == 2:
            path, scale = value
        else:
            raise InputError(f"loras: {value!r} is not a LoRA; give FILE, FILE:SCALE or (FILE, SCALE)")
        if isinstance(scale, bool) or not _number(scale) or not math.isfinite(float(scale)):
            raise InputError(f"loras: the scale {scale!r} of {path} is not a finite number")
        return cls(str(Path(str(path)).expanduser()), float(scale))

    def check(self) -> Lora:
        path = Path(self.path)
        if path.suffix.lower() != ".safetensors":
            raise InputError(f"loras: {path} is not a .safetensors file (a pickle can run code)")
        if not path.is_file():
            raise InputError(f"loras: {path} does not exist")
        return self

    def record(self) -> dict[str, Any]:
        """How a job and a recipe's parameters keep it."""
        return {"path": self.path, "scale": self.scale}


def _number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def parse(values: Any, folder: Path | None = None) -> tuple[Lora, ...] | None:
    """None (the relighter's defaults), or every LoRA of a list, checked; relative paths are
    relative to `folder` where given (a manifest's)."""
    if values is None:
        return None
    if isinstance(values, str | Path | Lora | dict):
        values = [values]
    if not isinstance(values, list | tuple):
        raise InputError(f"loras: expected a list of LoRAs, got {type(values).__name__}")
    found = [Lora.of(v) for v in values]
    if folder is not None:
        found = [Lora(str(folder / lo.path), lo.scale) if not Path(lo.path).is_absolute() else lo for lo in found]
    return tuple(lora.check() for lora in found)
