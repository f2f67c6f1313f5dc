"""gpu-check's compiled boots: `ICLIGHT_COMPILE` as a deployment boots it, each boot a fresh
process (`python -m benchmarks.gpucheck --child-boot`), cold and then warm, against eager."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from iclight.core import config
from iclight.models.compiled import CACHE_DIR
from iclight.models.speed import SpeedSettings
from iclight.models.timing import sync
from iclight.pipeline import Relighter
from iclight.pipeline.loading import resolve_device

from ..bench import predict_once
from .common import best_of, difference, free, gpu_seconds, inputs, with_alpha
from .plan import COMPILE_ENV, EAGER_IMAGE, Plan
from .progress import Progress

log = logging.getLogger("iclight")


def compiled_boots(
    root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path, progress: Progress
) -> None:
    """ICLIGHT_COMPILE=1 as a deployment boots, each boot a fresh process and measured: first with
    no cache (it compiles and writes the cache beside the weights, as `weights prepare --compile`
    does), then with it (warm). The cold boot measures too: on an H100 it took minutes, and a
    time limit may leave the warm boot no time to run."""
    cache = root / CACHE_DIR
    if cache.is_dir():
        import shutil

        shutil.rmtree(cache)
    found = progress.report.compile
    found["cold"] = boot(root, device, plan, images, out, progress, "1")
    progress.save()
    found["warm"] = boot(root, device, plan, images, out, progress, "1")


def eager_reference(root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path) -> None:
    """The sweep case's first image from eager float16, which the compiled boots are compared with,
    where the settings section did not write it (a run that measures only compiling)."""
    relighter = Relighter.load(root, device=str(device), speed=SpeedSettings())
    try:
        run = predict_once(relighter, plan.cases[plan.sweep_case], device, images, keep_images=True)
        run["images"][0].save(out / EAGER_IMAGE)
    finally:
        relighter = None
        free()


def boot(
    root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path, progress: Progress, request: str
) -> dict[str, Any]:
    if not progress.out_of_time() and not (out / EAGER_IMAGE).is_file():
        eager_reference(root, device, plan, images, out)
    cmd = [sys.executable, "-m", "benchmarks.gpucheck", str(out), "--child-boot", "--weights", str(root)]
    cmd += ["--device", str(device)] + (["--quick"] if plan.size == "tiny" else [])
    run = _child(cmd, {**_child_env(device), COMPILE_ENV: request}, progress)
    if not isinstance(run, str):
        return run
    found = json.loads(run.strip().splitlines()[-1])
    if (out / EAGER_IMAGE).is_file():
        found["vs_eager"] = difference(Image.open(found["image"]), Image.open(out / EAGER_IMAGE))
    return found


def _child_env(device: torch.device) -> dict[str, str]:
    env = {**os.environ, config.DEVICE.name: str(device)}
    if device.type == "cpu":
        # Inductor's scalar C++ kernels: on a 2-core x86 CPU the vectorised ones took the cold
        # boot from 38 to 65 s to compile, and the CPU mode checks that compiling works, not speed.
        env.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")
    return env


def _child(cmd: list[str], env: dict[str, str], progress: Progress) -> str | dict[str, str]:
    """A child process's standard output, or what went wrong; stopped at the time limit."""
    if progress.out_of_time():
        return {"skipped": "out of time (--time-limit)"}
    left = progress.left()
    timeout = 1800 if left is None else max(left, 1.0)
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        stopped, said = f"stopped after {timeout:.0f} s (--time-limit or 30 min)", _last_lines(e.stderr)
        return {"error": f"{stopped}; it had said: {said}" if said else stopped}
    return run.stdout if run.returncode == 0 else {"error": run.stderr[-2000:]}


def _last_lines(output: str | bytes | None, count: int = 3) -> str:
    """The end of what a stopped child printed (subprocess leaves it as bytes even in text mode)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line.strip()[:80] for line in (output or "").splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def child_boot(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    device = resolve_device(args.device)
    log.info("booting with %s=%s", COMPILE_ENV, config.COMPILE.read())
    start = time.perf_counter()
    relighter = Relighter.load(args.weights, device=str(device))  # compiled as ICLIGHT_COMPILE says
    sync(device)
    booted = time.perf_counter() - start
    log.info("booted in %.1f s", booted)
    images = inputs(args.out)
    if plan.matted:
        images = (with_alpha(images[0], args.out), images[1])
    case = plan.cases[plan.sweep_case]
    best = best_of(relighter, case, images, plan.repeat, warm_up=False)  # the boot warmed up
    log.info("%s: best %.2f s", plan.sweep_case, best["predict_s"])
    one = best
    if plan.sweep_case != "1 image":
        one = best_of(relighter, plan.cases["1 image"], images, plan.repeat, warm_up=False)
        log.info("1 image: best %.2f s", one["predict_s"])
    # Other sizes must not compile again (one dynamic graph serves every width x height).
    for width, height in ((320, 448), (448, 320), (512, 512)):
        predict_once(relighter, {**plan.cases["1 image"], "width": width, "height": height}, device, images)
        log.info("%dx%d done", width, height)
    path = (
        args.out
        / f"compiled-{relighter.speed.key()}-{'warm' if relighter.compile_report['warm_cache'] else 'cold'}.png"
    )
    best["images"][0].save(path)
    return {
        "setting": relighter.speed.label,
        "boot_s": booted,
        **relighter.compile_report,
        "predict_s": best["predict_s"],
        "per_image_s": best["predict_s"] / len(best["images"]),
        "gpu_per_image_s": gpu_seconds(best) / len(best["images"]),
        "one_image_s": one["predict_s"],
        "one_image_gpu_s": gpu_seconds(one),
        "stages_s": best["stages_s"],
        "peak_cuda_gb": best["peak_cuda_gb"],
        # after the other sizes: CUDA graphs keep a memory pool per recorded shape
        "reserved_cuda_gb": torch.cuda.memory_reserved(device) / 1e9 if device.type == "cuda" else None,
        "image": str(path),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "fx_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fx_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"]),
    }
