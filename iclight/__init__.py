"""IC-Light background-conditioned relighting: `from iclight import Relighter`.

`import iclight` stays cheap: torch and diffusers load when `Relighter` or `RelightResult`
is first used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["RelightResult", "Relighter", "__version__"]

if TYPE_CHECKING:
    from .pipeline import Relighter, RelightResult


def _not_torchvision_fallback(record: logging.LogRecord) -> bool:
    # transformers says so once per image processor that diffusers imports; this package uses
    # none of them and needs no torchvision, so the notice is noise a user can do nothing about.
    return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_not_torchvision_fallback)


def __getattr__(name: str) -> Any:
    if name in ("Relighter", "RelightResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'iclight' has no attribute {name!r}")
