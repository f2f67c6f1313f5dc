"""Checks every input against the contract in `constants`, with messages naming the input.

The Cog server validates only when `cog build` has bundled a schema, so the predictor,
the command line and the API all call this.
"""

from __future__ import annotations

import math
import os
from typing import Any

from . import constants as C


class InputError(ValueError):
    """A bad input value; the message starts with the input's name."""


def random_seed() -> int:
    """A full-range random seed (32 bits), for a request that gives none."""
    return int.from_bytes(os.urandom(C.RANDOM_SEED_BITS // 8), "big")


def fraction(name: str, value: Any) -> float:
    """A setting from 0 to 1 (detail_transfer, keep_colors, ...) as a float, or an InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InputError(f"{name}: {value!r} is out of range; allowed 0 to 1")
    return float(value)


def denoise(name: str, value: Any) -> float:
    """A denoise above 0 up to 1 (light_start) as a float, or an InputError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise InputError(f"{name}: {value!r} is out of range; allowed above 0 up to 1")
    return float(value)


def validate(values: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return the values coerced to their declared types, or raise `InputError`.

    Names in `optional` may be missing even where the hosted schema requires them
    (the Python API relights under a synthetic light without a background).
    """
    unknown = sorted(set(values) - set(C.INPUT_SPECS))
    if unknown:
        raise InputError(f"{unknown[0]}: unknown input; expected one of {list(C.INPUT_SPECS)}")
    out = {}
    for spec in C.INPUTS:
        value = values.get(spec.name, spec.default)
        out[spec.name] = check(spec, value, required=spec.required and spec.name not in optional)
    return out


def check(spec: C.InputSpec, value: Any, required: bool | None = None) -> Any:
    if value is None:  # not given: the default, where there is one
        if spec.required if required is None else required:
            raise InputError(f"{spec.name}: required, but no value was given")
        return spec.default
    value = _coerce(spec, value)
    if spec.choices is not None and value not in spec.choices:
        raise InputError(f"{spec.name}: {value!r} is not allowed; choose one of {list(spec.choices)}")
    if (spec.ge is not None and value < spec.ge) or (spec.le is not None and value > spec.le):
        raise InputError(f"{spec.name}: {value!r} is out of range; allowed {_num(spec.ge)} to {_num(spec.le)}")
    if spec.name == "seed" and not C.SEED_MIN <= value <= C.SEED_MAX:
        raise InputError(f"seed: {value} is out of range; allowed {C.SEED_MIN} to {C.SEED_MAX}")
    return value


def _coerce(spec: C.InputSpec, value: Any) -> Any:
    kind = spec.type
    if kind is object:  # files: the loader names what is wrong with them
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise InputError(f"{spec.name}: expected true or false, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise InputError(f"{spec.name}: expected a string, got {type(value).__name__}")
        return value
    if isinstance(value, bool):
        raise InputError(f"{spec.name}: expected a number, got a boolean")
    try:
        number = float(value) if kind is float else _to_int(value)
    except (TypeError, ValueError):
        wanted = "an integer" if kind is int else "a number"
        raise InputError(f"{spec.name}: expected {wanted}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise InputError(f"{spec.name}: expected a finite number, got {value!r}")
    return number


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(value)


def _num(x: float | None) -> str:
    return "any" if x is None else (str(int(x)) if float(x).is_integer() else str(x))
