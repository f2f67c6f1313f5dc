"""The pipeline: the `Relighter` (loaded models), one run's passes, sequences."""

from .relighter import Relighter
from .results import GPUOutOfMemoryError, RelightResult, SequenceResult, Stopped

__all__ = ["GPUOutOfMemoryError", "RelightResult", "Relighter", "SequenceResult", "Stopped"]
