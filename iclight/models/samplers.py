"""The samplers a relight may use (`core/options.py` names them): the hosted one by default, and
the common deterministic and ancestral ones, each diffusers' own scheduler over SD1.5's noise
schedule. A run makes its own scheduler: nothing a run sets on it outlives the run."""

from __future__ import annotations

from typing import Any

import diffusers

from ..core import constants as C
from ..core.options import HOSTED_SAMPLER
from .sharing import SharedScheduler

# The hosted model's noise schedule, which every sampler shares: linear betas from 0.00085 to
# 0.012 (IC-Light's own code leaves diffusers' default `linear`, not SD1.5's `scaled_linear`).
SCHEDULE = {k: C.SCHEDULER_CONFIG[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "steps_offset")}
SCHEDULE |= {"beta_schedule": "linear"}
# name -> (diffusers' scheduler class, its settings beyond SCHEDULE), as ComfyUI and A1111 users name them.
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    HOSTED_SAMPLER: (SharedScheduler, {}),
    "dpmpp-2m-karras": (
        diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}
    ),
    "euler": (diffusers.EulerDiscreteScheduler, {}),
    "euler-a": (diffusers.EulerAncestralDiscreteScheduler, {}),
    "unipc": (diffusers.UniPCMultistepScheduler, {}),
    "ddim": (diffusers.DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": False}),
}  # fmt: skip


def make(name: str):
    """A fresh scheduler for `name`; `members` and `one_start` are what a shared batch gives it
    (`sharing.py`)."""
    cls, settings = SCHEDULERS[name]
    scheduler = cls(**(C.SCHEDULER_CONFIG if name == HOSTED_SAMPLER else SCHEDULE | settings))
    scheduler.members, scheduler.one_start = None, False
    return scheduler
