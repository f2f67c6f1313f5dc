"""Which model cuts the subject out when a relight brings neither a mask nor an alpha channel.

- `rmbg-1.4`: BriaRMBG-1.4, as the hosted model does (its pixels). Its weights are licensed for
  non-commercial use only.
- `birefnet`: BiRefNet's general model (Swin-L backbone, MIT licence): commercial use is allowed.
- `birefnet-lite`: BiRefNet's lite model (Swin-T backbone, MIT licence): about three times faster.
- `none`: no matting model at all: every relight brings its own mask, or a subject with a real
  alpha channel.

The deployment-wide choice is `ICLIGHT_MATTING`; only its weights are fetched and loaded at
boot, so a deployment that chooses BiRefNet or none carries no non-commercial weights. A relight
may ask for another choice; its model is then loaded on first use.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core import constants as C
from ..core.validation import InputError
from ..store import fetch, layout

if TYPE_CHECKING:  # loaded with a model: the command line checks `--matting` without torch
    import torch

CHOICES = C.MATTING_CHOICES
RMBG, BIREFNET, BIREFNET_LITE, NONE = CHOICES
FILES: dict[str, tuple[str, ...]] = {
    RMBG: (layout.RMBG_FILE,),
    BIREFNET: (layout.BIREFNET_FILE,),
    BIREFNET_LITE: (layout.BIREFNET_LITE_FILE,),
    NONE: (),
}
# The choices whose every weight file may be used commercially (with IC-Light's and SD1.5's).
COMMERCIAL = (BIREFNET, BIREFNET_LITE, NONE)


def not_needed(*choices: str) -> tuple[str, ...]:
    """The weight files of the matting models that none of `choices` loads."""
    return tuple(f for other, files in FILES.items() if other not in choices for f in files)


def needs_a_matte() -> InputError:
    return InputError("matting: 'none' needs a mask, or a subject with an alpha channel")


@dataclass
class Matter:
    """One loaded matting model and how it makes a matte."""

    choice: str
    model: torch.nn.Module

    def estimate(self, image: np.ndarray) -> np.ndarray:
        """The subject's alpha matte, HxWx1 floats in [0, 1]."""
        if self.choice == RMBG:
            from .rmbg import estimate_matte
        else:
            from .birefnet import estimate_matte
        return estimate_matte(self.model, image)


def load(choice: str, root: Path, device: torch.device, dtype: torch.dtype | None = None) -> Matter:
    """`choice`'s model from the weights folder `root` (its files must be present). BiRefNet runs
    in `dtype` (float16 on CUDA; default float32), RMBG-1.4 always in float32, as the hosted model does."""
    if choice == RMBG:
        from .rmbg import BriaRMBG

        return Matter(choice, BriaRMBG.from_file(root / layout.RMBG_FILE, device))
    import torch

    from .birefnet import BiRefNet

    return Matter(choice, BiRefNet.from_file(root / FILES[choice][0], choice, device, dtype or torch.float32))


class MatteCache:
    """The last mattes made, by choice and image content: a catalogue relights one subject over
    many backgrounds and prompts, and its matte need not be estimated again each time."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._mattes: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    @staticmethod
    def key(choice: str, image: np.ndarray) -> tuple[str, str]:
        digest = hashlib.blake2b(image.tobytes(), digest_size=16)
        digest.update(repr(image.shape).encode())
        return choice, digest.hexdigest()

    def get(self, key: tuple[str, str]) -> np.ndarray | None:
        matte = self._mattes.get(key)
        if matte is None:
            return None
        self._mattes.move_to_end(key)
        return matte.copy()  # a caller's changes stay its own

    def put(self, key: tuple[str, str], matte: np.ndarray) -> None:
        self._mattes[key] = matte
        while self._mattes and sum(m.nbytes for m in self._mattes.values()) > self.max_bytes:
            self._mattes.popitem(last=False)


class Mattes:
    """A relighter's matting: the configured model (loaded at boot), others loaded on first use
    through `loader`, and the last mattes made."""

    def __init__(self, default: str, loaded: dict[str, Matter], loader: Callable[[str], Matter] | None = None) -> None:
        self.default = default
        self.loaded = dict(loaded)
        self.loader = loader
        self.cache = MatteCache()
        self._lock = threading.Lock()

    def model(self, choice: str) -> torch.nn.Module | None:
        matter = self.loaded.get(choice)
        return matter.model if matter else None

    def estimate(self, image: np.ndarray, choice: str | None = None) -> np.ndarray:
        """`image`'s matte (HxWx1) by `choice` (default: the configured one)."""
        choice = choice or self.default
        if choice == NONE:
            raise needs_a_matte()
        key = MatteCache.key(choice, image)
        with self._lock:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            matter = self.loaded.get(choice)
            if matter is None:
                if self.loader is None:
                    raise InputError(f"matting: {choice!r} is not loaded and this relighter loads no other model")
                try:
                    matter = self.loaded[choice] = self.loader(choice)
                except (layout.MissingWeightsError, fetch.FetchError) as e:
                    raise InputError(f"matting: {choice!r} is not available here ({e})") from e
        matte = matter.estimate(image)
        with self._lock:
            self.cache.put(key, matte)
        return matte.copy()
