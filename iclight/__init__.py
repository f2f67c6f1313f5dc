"""IC-Light background-conditioned relighting: `from iclight import Relighter`.

`import iclight` stays cheap: torch and diffusers load when `Relighter` or a result type is
first used; `Light` and `Fill` (a designed light) need neither.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Fill", "Light", "RelightResult", "Relighter", "SequenceResult", "__version__"]

if TYPE_CHECKING:
    from .core.light import Fill, Light
    from .pipeline import Relighter, RelightResult, SequenceResult

# Where each public name lives, imported on first use (PEP 562).
_LAZY = {
    "Relighter": "iclight.pipeline.relighter",
    "RelightResult": "iclight.pipeline.results",
    "SequenceResult": "iclight.pipeline.results",
    "Light": "iclight.core.light",
    "Fill": "iclight.core.light",
}


def _not_torchvision_fallback(record: logging.LogRecord) -> bool:
    # transformers says so once per image processor that diffusers imports; this package uses
    # none of them and needs no torchvision, so the notice is noise a user can do nothing about.
    return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_not_torchvision_fallback)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iclight' has no attribute {name!r}")
