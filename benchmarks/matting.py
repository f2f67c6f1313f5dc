"""Seconds and peak memory of one matte for each matting choice.

    python -m benchmarks.matting [--weights DIR] [--device cpu|cuda] [--out FILE.json]

Each choice runs in a fresh process (so its peak memory is its own): the model is loaded from
the weights folder (real-shaped stand-ins are written there when a file is missing), one matte
warms it up, then the median of `--repeat` mattes of a 1024x768 photo-sized image is reported.
On the CPU the peak is the process's resident set above what it held before loading; on CUDA,
torch's peak allocation.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHOICES = ("rmbg-1.4", "birefnet-lite", "birefnet")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(choice: str, root: Path, device_name: str, repeat: int) -> dict:
    import torch

    from iclight.matting import mattes as matting
    from iclight.pipeline.loading import dtypes_for, resolve_device

    device = resolve_device(device_name)
    image = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    before = _rss_mb()
    start = time.perf_counter()
    matter = matting.load(choice, root, device, dtypes_for(device).matting)
    load_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    matter.estimate(image)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        matter.estimate(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb() - before
    return {
        "choice": choice,
        "device": str(device),
        "dtype": str(next(matter.model.parameters()).dtype).removeprefix("torch."),
        "load_s": round(load_s, 2),
        "matte_s": round(statistics.median(times), 3),
        "peak_mb": round(peak),
        "peak_is": "cuda max_memory_allocated" if device.type == "cuda" else "resident set above the pre-load level",
    }


def _ensure(root: Path, choice: str) -> None:
    from iclight.matting import mattes as matting
    from iclight.pipeline import standins

    if not (root / matting.FILES[choice][0]).is_file():
        standins.write_matting(root, choice)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.matting", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=Path(tempfile.gettempdir()) / "iclight-matting-weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--choices", nargs="+", choices=CHOICES, default=list(CHOICES))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--one", choices=CHOICES, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.weights, args.device, args.repeat)))
        return 0
    rows = []
    for choice in args.choices:
        _ensure(args.weights, choice)
        cmd = [sys.executable, "-m", "benchmarks.matting", "--one", choice, "--weights", str(args.weights)]
        cmd += ["--device", args.device, "--repeat", str(args.repeat)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        line = f"{choice:14s} {r['device']} {r['dtype']:8s} load {r['load_s']:6.2f} s"
        print(f"{line}  matte {r['matte_s']:7.3f} s  peak {r['peak_mb']} MB")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
