"""The samplers a relight may use: the hosted one by default, and the common deterministic and
ancestral ones, each diffusers' own scheduler over SD1.5's noise schedule."""

from __future__ import annotations

from typing import Any

from . import constants as C
from .validation import InputError

HOSTED = "dpmpp-2m-sde-karras"
# The hosted model's noise schedule, which every sampler shares: linear betas from 0.00085 to
# 0.012 (IC-Light's own code leaves diffusers' default `linear`, not SD1.5's `scaled_linear`).
SCHEDULE = {k: C.SCHEDULER_CONFIG[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "steps_offset")}
SCHEDULE |= {"beta_schedule": "linear"}
# name -> (diffusers' scheduler class, its settings beyond SCHEDULE), as ComfyUI and A1111 users
# name them. Classes by name: the command line checks a sampler without importing diffusers.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    HOSTED: ("SharedScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "dpmpp-2m-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
}
# Draw fresh noise at every step from one generator: requests with them share no diffusion batch
# (the hosted sampler draws it member by member: `sharing.py`).
STOCHASTIC = frozenset({"euler-a"})


def check(name: Any) -> str:
    if name not in SAMPLERS:
        raise InputError(f"sampler: {name!r} is not allowed; choose one of {list(SAMPLERS)}")
    return name


def make(name: str):
    """A fresh scheduler for `name`; `members` is what a shared batch sets (`sharing.py`)."""
    import diffusers

    from . import sharing

    cls_name, settings = SAMPLERS[check(name)]
    cls = sharing.SharedScheduler if name == HOSTED else getattr(diffusers, cls_name)
    config = C.SCHEDULER_CONFIG if name == HOSTED else SCHEDULE | settings
    scheduler = cls(**config)
    scheduler.members = None
    return scheduler
