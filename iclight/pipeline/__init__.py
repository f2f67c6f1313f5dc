"""The pipeline: the `Relighter` (loaded models), one run's passes, sequences. Its names load on
first use (PEP 562): a sequence's plan needs no torch."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .relighter import Relighter
    from .results import GPUOutOfMemoryError, RelightResult, SequenceResult, Stopped

__all__ = ["GPUOutOfMemoryError", "RelightResult", "Relighter", "SequenceResult", "Stopped"]
_WHERE = {"Relighter": ".relighter"} | dict.fromkeys(
    ("GPUOutOfMemoryError", "RelightResult", "SequenceResult", "Stopped"), ".results"
)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module 'iclight.pipeline' has no attribute {name!r}")
