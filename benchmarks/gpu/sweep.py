"""gpu-check's settings section: each speed setting in a fresh relighter against eager."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from iclight.models.speed import SpeedSettings
from iclight.pipeline import Relighter

from .common import best_of, difference, free
from .plan import EAGER_IMAGE, SETTING_MEAN, Plan
from .progress import Progress
from .sections import unet_graphs


def sweep(
    root: Path,
    device: torch.device,
    plan: Plan,
    images: tuple[Path, Path],
    out: Path,
    progress: Progress,
    hosted: Path | None = None,
) -> None:
    """Each setting alone, then the defaults, each in a fresh relighter against eager (and
    against the hosted code's image of the same case, where parity ran), into the report. The
    UNet's CUDA graphs and eager also run 1 image: their gain is at launch-bound sizes."""
    configs = [SpeedSettings(), SpeedSettings(fused_qkv=True), SpeedSettings(channels_last=True)]
    configs += [SpeedSettings(attention=name) for name in plan.attention]
    if device.type == "cuda":
        configs.append(SpeedSettings(unet_graphs=True))
    configs.append(SpeedSettings.default(device, "off"))
    case, rows, eager, eager_one = plan.cases[plan.sweep_case], progress.report.settings, None, None
    for i, settings in enumerate(configs):
        label = f"defaults: {settings.label}" if i == len(configs) - 1 else settings.label
        if progress.out_of_time():
            rows.append({"setting": label, "skipped": "out of time (--time-limit)"})
            continue
        try:
            relighter = Relighter.load(root, device=str(device), speed=settings)
            best = best_of(relighter, case, images, plan.sweep_repeat)
            one = None
            if plan.sweep_case != "1 image" and (settings == SpeedSettings() or settings.unet_graphs):
                one = best_of(relighter, plan.cases["1 image"], images, plan.sweep_repeat)
            graphs = unet_graphs(relighter)
        except (RuntimeError, ValueError) as e:  # a backend this GPU or build lacks
            rows.append({"setting": label, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        finally:
            relighter = None
            free()
        eager = eager or best
        row = {"setting": label, "predict_s": best["predict_s"], "gain": eager["predict_s"] / best["predict_s"]}
        row["vs_eager"] = difference(best["images"][0], eager["images"][0])
        row["within_tolerance"] = row["vs_eager"]["mean"] <= SETTING_MEAN
        if graphs:
            row["unet_graphs"] = graphs
        if one is not None:
            eager_one = eager_one or one
            row |= {"one_image_s": one["predict_s"], "one_image_gain": eager_one["predict_s"] / one["predict_s"]}
            row["one_image_vs_eager"] = difference(one["images"][0], eager_one["images"][0])
        if hosted is not None and hosted.is_file():
            row["vs_hosted"] = difference(best["images"][0], Image.open(hosted))
        rows.append(row)
        progress.save()
        if settings == SpeedSettings():
            best["images"][0].save(out / EAGER_IMAGE)
