"""`make gpu-quick`: what a GPU deployment runs, checked and timed in one short run.

    python -m benchmarks.gpuquick OUT_DIR [--reference DIR] [--device cuda|cpu] [--time-limit S] [--skip SECTIONS]
    python -m benchmarks.gpuquick --table OUT_DIR/gpu-quick.json

Two sections, OUT_DIR/gpu-quick.json saved after each part of each:

  matrix    every speed setting of a deployment (fused QKV, the UNet's graphs, the CUDA defaults,
            channels_last, compiled as ICLIGHT_COMPILE=1, compiled with a LoRA served to every
            relight) through every feature that reaches the UNet (a shared batch, every sampler,
            light_start, clip_skip 2, HDRI, compute_normal, the fc model's four, LoRAs A, B, none,
            A and B, consistent light attention with and without a LoRA), each against plain eager,
            on tiny stand-ins (`matrix.py`); and BiRefNet in half precision against float32
  defaults  full-size stand-ins at the hosted defaults: setup; 1 image; 4 images; 4 clients
            sharing one batch; a LoRA; a 16-frame sequence with consistent light attention; best
            of 2 after a warm-up, each with the hosted code's time beside ours where it has the
            feature (`--reference`: the hosted code exported by `make reference`)

On CUDA it runs in the hosted dtypes with CUDA graph capture and Inductor. On the CPU (no CUDA,
or `--device cpu`) the same code runs on tiny stand-ins at small sizes, the graph capture and the
compiler emulated (`make test` does: `tests/models/test_deployment.py`). `--time-limit S` skips the
matrix rows that would start when fewer seconds are left than the defaults section needs, and
the defaults' cases that would start after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iclight.core.spec import relight_spec
from iclight.models.speed import SpeedSettings
from iclight.models.timing import cuda_memory, sync
from iclight.pipeline import Relighter, standins
from iclight.pipeline.loading import resolve_device

from . import matrix
from .common import best_of, free, gpu_seconds, inputs, machine, stand_ins, with_alpha
from .hosted import Hosted
from .progress import Progress, Sections
from .sections import unet_graphs

log = logging.getLogger("iclight")

REPORT_FILE = "gpu-quick.json"
SECTIONS = ("matrix", "defaults")
DEFAULTS = dict(width=512, height=640, steps=25, highres_scale=1.5)
SMALL = dict(width=256, height=256, steps=2, highres_scale=1.5)
FRAMES, WINDOW = {"cuda": 16, "cpu": 6}, {"cuda": 8, "cpu": 3}  # the CPU mode checks the code paths
# Seconds the defaults section needs after the matrix (the stand-ins written, the cases timed; an H100's figures):
DEFAULTS_NEED = {"cuda": 150.0, "cpu": 0.0}


@dataclass
class Report(Sections):
    """gpu-quick's report (gpu-quick.json)."""

    matrix: list[dict[str, Any]] = field(default_factory=list)
    half_matting: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


def run_matrix(weights: Path, device: torch.device, progress: Progress, folder: Path) -> None:
    """The matrix, a row (a setting) at a time, saved after each."""
    report = progress.report
    report.weights["matrix"] = stand_ins(weights, "tiny", device)
    given = matrix.Inputs.make(weights, folder)
    eager = matrix.reference(weights, device, given)
    need = DEFAULTS_NEED[device.type] if "defaults" not in progress.skip else 0.0
    for setting in matrix.settings(device):
        left = progress.left()
        if left is not None and left < need:
            report.skipped[f"matrix: {setting.name}"] = "out of time (--time-limit)"
            continue
        try:
            rows = matrix.run_setting(setting, weights, device, given, eager)
        except Exception as e:  # one setting that fails to load or run must not cost the others
            report.errors[f"matrix: {setting.name}"] = f"{type(e).__name__}: {e}"[-2000:]
            continue
        report.matrix += [asdict(row) | {"within": row.within} for row in rows]
        progress.save()
    report.half_matting = matrix.half_matting(weights, device, given)


@dataclass(frozen=True)
class Case:
    """One timed case of the defaults section: ours, and the hosted code's way of doing the same."""

    name: str
    images: int
    hosted: dict[str, Any] | None  # the hosted inputs for one prediction of it (None: it has no such feature)
    hosted_runs: int = 1  # predictions the hosted code needs for it, one after another


def cases(size: dict[str, Any], frames: int) -> list[Case]:
    return [
        Case("1 image", 1, dict(size)),
        Case("4 images", 4, dict(size, number_of_images=4)),
        Case("4 clients sharing a batch", 4, dict(size), hosted_runs=4),
        Case("a LoRA", 1, None),
        Case(f"{frames}-frame sequence, consistent light", frames, dict(size), hosted_runs=frames),
    ]


def run_defaults(
    root: Path, device: torch.device, progress: Progress, images: tuple[Path, Path], reference: Path | None
) -> None:
    """The hosted defaults (small sizes on the CPU) on stand-ins of the deployment's size, with our
    defaults (fused QKV and CUDA graphs on CUDA); each case saved as it ends. On the CPU our subject
    brings its own alpha: the real-shaped matting model would take most of the time there."""
    report, cuda = progress.report, device.type == "cuda"
    size, frames, window = (DEFAULTS if cuda else SMALL), FRAMES[device.type], WINDOW[device.type]
    report.weights["defaults"] = stand_ins(root, "full" if cuda else "tiny", device)
    lora = standins.write_lora(root, root / "gpu-quick-lora.safetensors", seed=3)
    start = time.perf_counter()
    with cuda_memory(device) as footprint:
        ours = Relighter.load(root, device=str(device), speed=SpeedSettings.default(device, "off"))
        sync(device)
    report.setup = {"ours_s": time.perf_counter() - start, "settings": ours.speed.label}
    report.setup["ours_cuda_gb"] = footprint.get("added_cuda_gb")
    hosted = _hosted(reference, root, device, images, progress)
    if not cuda:
        images = (with_alpha(images[0], root), images[1])
    repeat = 2 if cuda else 1  # the CPU mode checks the code paths; its timings are not the point
    runs = {
        "1 image": lambda: best_of(ours, size, images, repeat, warm_up=cuda),
        "4 images": lambda: best_of(ours, dict(size, number_of_images=4), images, repeat, warm_up=cuda),
        "4 clients sharing a batch": lambda: _timed(device, lambda: _clients(ours, size, images), repeat),
        "a LoRA": lambda: best_of(ours, dict(size, loras=[str(lora)]), images, repeat, warm_up=cuda),
    }

    def sequence() -> dict[str, Any]:
        return _timed(device, lambda: _sequence(ours, size, images, frames, window), repeat)

    for case in cases(size, frames):
        if progress.out_of_time():
            report.skipped[f"defaults: {case.name}"] = "out of time (--time-limit)"
            continue
        best = runs[case.name]() if case.name in runs else sequence()
        entry = {"ours_s": best["predict_s"], "per_image_s": best["predict_s"] / case.images}
        if "stages_s" in best:
            entry["gpu_per_image_s"] = gpu_seconds(best) / case.images
        if best.get("peak_cuda_gb") is not None:
            entry["peak_cuda_gb"] = best["peak_cuda_gb"]
        if hosted is not None and case.hosted is not None:
            entry |= _hosted_times(hosted, case, report.defaults)
        report.defaults[case.name] = entry
        progress.save()
    report.setup["unet_graphs"] = unet_graphs(ours)


def _hosted(
    reference: Path | None, root: Path, device: torch.device, images: tuple[Path, Path], progress: Progress
) -> Hosted | None:
    if reference is None:
        progress.report.setup["hosted"] = "no --reference: the hosted code is not part of this repository"
        return None
    try:
        hosted = Hosted(reference, root, device, images)
    except Exception as e:  # the hosted code's own figures are lost, not ours
        progress.report.errors["hosted setup"] = f"{type(e).__name__}: {e}"[-2000:]
        return None
    progress.report.setup["hosted_s"] = hosted.setup_s
    return hosted


def _hosted_times(hosted: Hosted, case: Case, done: dict[str, Any]) -> dict[str, Any]:
    """The hosted code's time for `case`: measured where it is one prediction; where it takes
    several one after another (it shares no batches and has no sequences), its 1-image time
    times that many, measured above."""
    if case.hosted_runs == 1:
        hosted.run(case.hosted)  # warm-up
        seconds = min(hosted.run(case.hosted)["predict_s"] for _ in range(2))
        return {"hosted_s": seconds, "hosted_how": "measured, best of 2"}
    one = done.get("1 image", {}).get("hosted_s")
    if one is None:
        return {}
    return {"hosted_s": one * case.hosted_runs, "hosted_how": f"{case.hosted_runs} x its 1-image time"}


def _timed(device: torch.device, fn, repeat: int) -> dict[str, Any]:
    """The best of `repeat` runs of `fn` (after a warm-up on CUDA): seconds and peak CUDA memory."""
    if device.type == "cuda":
        fn()
    found = []
    for _ in range(repeat):
        sync(device)
        with cuda_memory(device) as memory:
            start = time.perf_counter()
            fn()
            sync(device)
        found.append({"predict_s": time.perf_counter() - start, "peak_cuda_gb": memory.get("peak_cuda_gb")})
    return min(found, key=lambda r: r["predict_s"])


def _clients(ours: Relighter, size: dict[str, Any], images: tuple[Path, Path]) -> None:
    """Four requests of their own prompts and seeds in one diffusion batch, as the server shares them."""
    prompts = ("sunshine from window", "neon light", "golden hour", "soft studio light")
    specs = [relight_spec(images[0], images[1], p, seed=k, **size) for k, p in enumerate(prompts)]
    for result in ours.run_shared(specs):
        if isinstance(result, Exception):
            raise result


def _sequence(ours: Relighter, size: dict[str, Any], images: tuple[Path, Path], frames: int, window: int) -> None:
    """A pan across the subject with its masks (the matting is timed above), relit with consistent
    light attention in windows."""
    subject = np.asarray(Image.open(images[0]).convert("RGB"))
    h, w = subject.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 2.5)) ** 2 < 1, 255, 0).astype(np.uint8)
    pan = [np.roll(subject, 4 * k, axis=1) for k in range(frames)]
    masks = [np.roll(mask, 4 * k, axis=1) for k in range(frames)]
    options = size | {"window": window, "consistency": 0.5, "seed": 5, "masks": masks}
    ours.relight_sequence(pan, images[1], "sunshine from window", **options)


def table(r: Report) -> str:
    m = r.machine
    lines = [f"gpu-quick on {m.get('gpu', m.get('device'))}, torch {m.get('torch')}, {r.seconds:.0f} s"]
    if r.matrix:
        lines += ["", f"{'matrix: setting':<44} {'feature':<22} {'max':>4} {'mean':>6}  served"]
    for row in r.matrix:
        s = row["served"]
        what = s["kind"] if s["kind"] == "eager" else _served(s)
        flag = "" if row["within"] else "  > tolerance"
        diff = f"{row['max_diff']:>4.0f} {row['mean_diff']:>6.3f}"
        lines.append(f"  {row['setting']:<42} {row['feature']:<22} {diff}  {what}{flag}")
    if r.half_matting:
        lines.append(f"half-precision BiRefNet: {r.half_matting}")
    if r.defaults:
        lines += ["", f"{'hosted defaults':<36} {'ours s':>8} {'s/image':>8} {'hosted s':>9}  how"]
    for name, d in r.defaults.items():
        hosted = f"{d['hosted_s']:>9.2f}  {d['hosted_how']}" if "hosted_s" in d else f"{'-':>9}"
        lines.append(f"  {name:<34} {d['ours_s']:>8.2f} {d['per_image_s']:>8.2f} {hosted}")
    lines += [f"skipped: {name} ({why})" for name, why in r.skipped.items()]
    lines += [f"FAILED: {name}: {error.strip().splitlines()[-1]}" for name, error in r.errors.items()]
    return "\n".join(lines)


def _served(s: dict[str, Any]) -> str:
    if s["kind"] == "graphs":
        return f"graphs: {s['recorded']} recorded, {s['replays']} replays, {s['eager']} eager, {s['failed']} failed"
    return f"compiled: {s['compiled']} calls, {s['eager']} eager" + (" (reason logged)" if s["reasons"] else "")


def run(args: argparse.Namespace) -> Report:
    device = resolve_device(args.device)
    report = Report("cuda" if device.type == "cuda" else "cpu", machine(device))
    args.out.mkdir(parents=True, exist_ok=True)
    progress = Progress(report, args.out, args.time_limit, args.skip, REPORT_FILE)
    if progress.wants("matrix"):
        with progress.section("matrix"), tempfile.TemporaryDirectory(prefix="iclight-matrix-") as folder:
            run_matrix(args.weights / "tiny", device, progress, Path(folder))
    free()
    if progress.wants("defaults"):
        with progress.section("defaults"):
            size = "full" if device.type == "cuda" else "tiny"
            run_defaults(args.weights / size, device, progress, inputs(args.out), args.reference)
    progress.save()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpuquick", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path, help="folder for gpu-quick.json")
    p.add_argument("--device", default="auto", help="cuda (default where available) or cpu")
    p.add_argument("--reference", type=Path, default=None, help="folder with the hosted code (make reference)")
    p.add_argument("--weights", type=Path, default=None, help="where the stand-ins go (default: a temp folder)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="seconds for the whole run")
    p.add_argument("--table", action="store_true", help="print the table of OUT (a gpu-quick.json)")
    p.add_argument(
        "--skip", type=lambda v: set(v.split(",")), default=set(), metavar="SECTIONS", help="matrix and/or defaults"
    )
    args = p.parse_args(argv)
    if args.table:
        print(table(Report(**json.loads(args.out.read_text()))))
        return 0
    if args.skip - set(SECTIONS):
        p.error(f"--skip: {', '.join(sorted(args.skip - set(SECTIONS)))}; choose from {', '.join(SECTIONS)}")
    if args.reference is not None and not (args.reference / "ref_run.py").is_file():
        p.error(f"--reference {args.reference}: no ref_run.py there (make reference)")
    args.weights = args.weights or Path(tempfile.gettempdir()) / "iclight-gpuquick-weights"
    report = run(args)
    print(table(report))
    print(f"wrote {args.out / REPORT_FILE}")
    return 1 if report.errors or any(not row["within"] for row in report.matrix) else 0


if __name__ == "__main__":
    sys.exit(main())
