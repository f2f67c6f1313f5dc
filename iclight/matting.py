"""Which model cuts the subject out when a relight brings neither a mask nor an alpha channel.

- `rmbg-1.4`: BriaRMBG-1.4, as the hosted model does (its pixels). Its weights are licensed for
  non-commercial use only.
- `none`: no matting model at all: every relight brings its own mask, or a subject with a real
  alpha channel. A deployment that chooses it boots without the RMBG file, so it carries no
  non-commercial weights.

The deployment-wide choice is `ICLIGHT_MATTING`; a relight may ask for `none` on its own.
"""

from __future__ import annotations

from . import layout
from .validation import InputError

RMBG = "rmbg-1.4"
NONE = "none"
CHOICES = (RMBG, NONE)
FILES: dict[str, tuple[str, ...]] = {RMBG: (layout.RMBG_FILE,), NONE: ()}


def check(choice: str) -> str:
    """`choice`, or an InputError naming the setting."""
    if choice not in CHOICES:
        raise InputError(f"matting: {choice!r} is not allowed; choose one of {list(CHOICES)}")
    return choice


def not_needed(choice: str) -> tuple[str, ...]:
    """The weight files of the matting models that `choice` does not load."""
    return tuple(f for other, files in FILES.items() if other != choice for f in files)


def unavailable(asked: str, loaded: str) -> InputError:
    return InputError(
        f"matting: {asked!r} is not loaded (this relighter was loaded with {loaded!r}); "
        f"load it with ICLIGHT_MATTING={asked} or Relighter.load(matting={asked!r})"
    )


def needs_a_matte() -> InputError:
    return InputError("matting: 'none' needs a mask, or a subject with an alpha channel")
