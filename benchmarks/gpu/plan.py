"""What gpu-check runs: its plans (full-size at the hosted defaults on a GPU, tiny on the CPU), the
cases, the tolerances, and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iclight.core import config
from iclight.core import constants as C

from .progress import Sections

COMPILE_ENV = config.COMPILE.name

PARITY_MEAN, PARITY_P99 = 1.0, 4.0  # grey levels, per image
SETTING_MEAN = 1.0  # a setting stays on by default only within this of eager float16
HOSTED_IMAGE, EAGER_IMAGE = "hosted.png", "eager.png"  # the sweep case's first image
DEFAULTS = dict(width=512, height=640, steps=25, highres_scale=1.5)
# Boots after the others, each a fresh process sharing the compile section's Inductor cache (the
# UNet's graph and kernels) but not its artifacts: section -> (name, ICLIGHT_COMPILE).
EXTRA_BOOTS = {
    "compile-graphs": ("CUDA graphs", "graphs"),
    "compile-vae": ("with the VAE", "all"),
}
SKIPPABLE = ("parity", "speed", "memory", "settings", "compile", "big", *EXTRA_BOOTS)  # in the order they run


@dataclass(frozen=True)
class Plan:
    size: str
    cases: dict[str, dict]
    big: dict[str, dict]
    flat: dict  # the case repeated for the memory check
    repeat: int  # timed runs of each speed case, after a warm-up (parity's run, where it ran)
    # Timed runs of each setting, after a warm-up. One was enough on an H200 (under 0.5% apart), but on
    # an H100 two rows running the same kernels (eager, and the UNet's graphs, which leave 4 images
    # eager) took 4.41 and 4.93 s, one run each.
    sweep_repeat: int = 2
    # What the settings and the compiled boots run: 4 images keep the GPU busy, where one image
    # mostly waits on kernel launches and hides what a setting costs (channels_last did).
    sweep_case: str = "4 images, Left Light"
    in_a_row: int = 20
    matted: bool = False  # after the speed cases, a subject with its own alpha (no background removal)
    extra_boots: tuple[str, ...] = tuple(EXTRA_BOOTS)
    attention: tuple[str, ...] = ("flash", "efficient", "cudnn")


def parity_cases(base: dict) -> dict[str, dict]:
    """The cases that parity and speed measure: one image, four with Left Light, compute_normal."""
    return {
        "1 image": dict(base),
        "4 images, Left Light": dict(base, number_of_images=4, light_source=C.LEFT_LIGHT),
        "compute_normal": dict(base, compute_normal=True),
    }


FULL = Plan(
    "full",
    cases=parity_cases(DEFAULTS),
    big={
        "1024x1024, highres 3": dict(DEFAULTS, width=1024, height=1024, highres_scale=3.0),
        "12 images": dict(DEFAULTS, number_of_images=12),
    },
    flat=dict(DEFAULTS, steps=8),
    repeat=3,
)
SMALL = dict(width=256, height=256, steps=2, highres_scale=1.5)
QUICK = Plan(
    "tiny",
    cases=parity_cases(SMALL),
    big={
        "384x384, highres 3": dict(SMALL, width=384, height=384, highres_scale=3.0),
        "12 images": dict(SMALL, number_of_images=12, highres_scale=1.0),
    },
    flat=dict(SMALL, highres_scale=1.0),
    repeat=1,  # the CPU mode checks that every section works; its timings are not the point
    sweep_repeat=1,
    in_a_row=5,
    sweep_case="1 image",  # the CPU's test run stays short
    matted=True,
    extra_boots=(),  # on the CPU, `all` adds 75 s (the VAE compiling) to `make test`
    attention=("math",),
)


@dataclass
class Report(Sections):
    """gpu-check's report (gpu-check.json)."""

    weights: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    big: dict[str, Any] = field(default_factory=dict)
    settings: list[dict[str, Any]] = field(default_factory=list)
    sweep_case: str = "1 image"  # what the settings rows and the compiled boots ran
    compile: dict[str, Any] = field(default_factory=dict)
