"""What a caller hooks into one run, beside the relight itself (`Relighter.run`'s argument)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Hooks:
    """Asked between denoising steps whether to stop (True ends the diffusion with `Stopped`: the
    server, when every request of a batch was canceled); handed a preview of the latents every few
    steps (the web app: `models.previews.Preview`); whether diffusers shows its per-step progress
    bars (a batch shows its own, per job); told of each sequence frame as it is done (frames done,
    of how many)."""

    stop: Callable[[], bool] | None = None
    previews: Callable[[Any], None] | None = None
    step_progress: bool = True
    frames_done: Callable[[int, int], None] | None = None


NO_HOOKS = Hooks()
QUIET = Hooks(step_progress=False)
