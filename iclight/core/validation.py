"""The checks of single values, each with a message that starts with the input's name; the
hosted inputs against their contract in `constants`. `spec.py` composes them at the door.

The Cog server validates only when `cog build` has bundled a schema, so the predictor's
inputs go through these too.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from . import constants as C


class InputError(ValueError):
    """A bad input value; the message starts with the input's name."""


def random_seed(bits: int = 32) -> int:
    """A random seed of `bits` bits (the hosted models': `constants.SEED_BITS`), for a request that gives none."""
    return int.from_bytes(os.urandom(bits // 8), "big")


def number(
    name: str, value: Any, low: float | None = None, high: float | None = None, above_low: bool = False
) -> float:
    """A finite number from `low` (above it, with `above_low`) to `high`, as a float, or an
    InputError naming the setting and the range."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: {value!r} is not a number")
    below = low is not None and (value <= low if above_low else value < low)
    if below or (high is not None and value > high):
        allowed = f"{'above ' if above_low else ''}{_num(low)} {'up ' if above_low else ''}to {_num(high)}"
        raise InputError(f"{name}: {value!r} is out of range; allowed {allowed}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    """True or false (a manifest's JSON, a web control), or an InputError naming the setting."""
    if not isinstance(value, bool):
        raise InputError(f"{name}: expected true or false, got {value!r}")
    return value


def whole(name: str, value: Any, low: int, high: int | None = None) -> int:
    """A whole number from `low` (to `high`), or an InputError naming the setting."""
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"{low} to {high}" if high is not None else f"a whole number, at least {low}"
        raise InputError(f"{name}: {value!r} is out of range; allowed {allowed}")
    return value


def choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """One of `choices`, or an InputError naming the setting and listing them."""
    if value not in choices:
        raise InputError(f"{name}: {value!r} is not allowed; choose one of {list(choices)}")
    return value


def pattern(name: str, value: Any, names: tuple[str, ...] = ()) -> str:
    """One of `names`, or a regular expression that compiles; else an InputError naming the setting."""
    if not isinstance(value, str) or not value:
        raise InputError(f"{name}: expected a name or a regular expression, got {value!r}")
    if value in names:
        return value
    try:
        re.compile(value)
    except re.error as e:
        raise InputError(f"{name}: {value!r} is not a regular expression ({e})") from None
    return value


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
