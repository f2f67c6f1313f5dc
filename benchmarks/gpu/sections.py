"""gpu-check's sections that measure one loaded relighter: parity with the hosted code, speed,
memory over many predictions, and big requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from iclight.models.cudagraphs import UNetGraphs
from iclight.pipeline import GPUOutOfMemoryError, Relighter

from ..bench import predict_once
from .common import best_of, difference, free, gpu_seconds, host_syncs, non_finite
from .hosted import Hosted
from .plan import HOSTED_IMAGE, PARITY_MEAN, PARITY_P99, Plan
from .progress import Progress


def parity(ours: Relighter, hosted: Hosted | None, plan: Plan, images: tuple[Path, Path], out: Path) -> dict[str, Any]:
    """Per case and image, ours against the hosted code; each run also warms its case up for
    `speed` and counts our host syncs. The hosted code's first image goes to OUT/hosted.png."""
    if hosted is None:
        return {"skipped": "no --reference: the hosted code is not part of this repository"}
    found: dict[str, Any] = {}
    for name, case in plan.cases.items():
        with non_finite(ours.unet, ours.vae.decoder) as ours_bad, host_syncs(ours.device) as syncs:
            mine = predict_once(ours, case, ours.device, images, keep_images=True)["images"]
        with non_finite(hosted.ref.unet, hosted.ref.vae.decoder) as theirs_bad:
            theirs = hosted.run(case)["images"]
        if name == plan.sweep_case:
            Image.fromarray(theirs[0]).save(out / HOSTED_IMAGE)
        per_image = [difference(a, b) for a, b in zip(mine, theirs, strict=True)]
        found[name] = {
            "images": per_image,
            "non_finite": {"ours": ours_bad[0], "hosted": theirs_bad[0]},
            "ok": all(d["mean"] <= PARITY_MEAN and d["p99"] <= PARITY_P99 for d in per_image)
            and ours_bad[0] == theirs_bad[0] == 0,
            "host_syncs": syncs,
        }
    return found


def speed(ours: Relighter, hosted: Hosted | None, plan: Plan, images: tuple[Path, Path], progress: Progress) -> None:
    """Best of `plan.repeat` per case, ours and the hosted code's, into the report as each case
    ends; the cases that parity ran are warm already, with our host syncs counted."""
    found, warmed = progress.report.speed, progress.report.parity
    for name, case in plan.cases.items():
        if name in warmed:
            syncs = warmed[name]["host_syncs"]
        else:
            with host_syncs(ours.device) as syncs:
                predict_once(ours, case, ours.device, images)  # warm-up, counting the host syncs
        best = best_of(ours, case, images, plan.repeat, warm_up=False)
        n = 1 if case.get("compute_normal") else case.get("number_of_images", 1)
        entry = {"ours_s": best["predict_s"], "ours_per_image_s": best["predict_s"] / n, "stages_s": best["stages_s"]}
        entry["gpu_per_image_s"] = gpu_seconds(best) / n
        entry |= {"peak_cuda_gb": best["peak_cuda_gb"], "working_cuda_gb": best["working_cuda_gb"]}
        entry["host_syncs"] = syncs
        found[name] = entry
        progress.save()
        if hosted:
            if name not in warmed:
                hosted.run(case)  # warm-up
            theirs = min((hosted.run(case) for _ in range(plan.repeat)), key=lambda r: r["predict_s"])
            entry |= {"hosted_s": theirs["predict_s"], "speedup": theirs["predict_s"] / entry["ours_s"]}
            entry["hosted_working_cuda_gb"] = theirs.get("working_cuda_gb")


def memory(ours: Relighter, plan: Plan, images: tuple[Path, Path]) -> dict[str, Any]:
    """The allocated memory after each of `in_a_row` predictions (CUDA), else the resident set."""
    import resource

    samples = []
    for i in range(plan.in_a_row):
        predict_once(ours, {**plan.flat, "seed": i}, ours.device, images)
        if ours.device.type == "cuda":
            samples.append(torch.cuda.memory_allocated(ours.device) / 1e9)
        else:
            samples.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)
    growth = samples[-1] - samples[0]
    what = "allocated CUDA GB" if ours.device.type == "cuda" else "peak resident GB"
    return {"measure": what, "samples": samples, "growth_gb": growth, "flat": growth <= 0.05 * max(samples[0], 0.1)}


def big(ours: Relighter, plan: Plan, images: tuple[Path, Path]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, case in plan.big.items():
        entry: dict[str, Any]
        try:
            run = predict_once(ours, case, ours.device, images)
            entry = {"status": "completed", "seconds": run["predict_s"], "peak_cuda_gb": run["peak_cuda_gb"]}
        except GPUOutOfMemoryError as e:
            entry = {"status": "out of memory", "error": str(e)}
        free()
        after = predict_once(ours, plan.cases["1 image"], ours.device, images)
        entry["next_prediction_s"] = after["predict_s"]
        found[name] = entry
    return found


def unet_graphs(relighter: Relighter) -> dict[str, int] | None:
    """How the eager UNet's CUDA graphs fared (recorded, replays, eager calls, failed), if on."""
    fast = relighter.unet.fast
    return fast.summary() if isinstance(fast, UNetGraphs) else None
