"""What serving each IC-Light model costs at boot: seconds and peak memory for fbc alone, fc alone
and both in one process (the SD1.5 text encoder, VAE and matting loaded once, one UNet per model).

    python -m iclight.standins WEIGHTS --size full --matting rmbg-1.4   # SD1.5's real shapes, both offsets
    python -m benchmarks.served WEIGHTS [--device cpu] [--prepared] [--out served.json]

Each boot runs in a fresh process, so that its peak resident memory is its own (on CUDA, the peak
GPU memory is read too). `--prepared` writes the prepared UNets first and boots from them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from iclight.core import constants as C

CHILD = """
import json, resource, sys, time
import torch
from iclight import Relighter
weights, device, model, prepared = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
start = time.perf_counter()
relighter = Relighter.load(weights, device=device, model=model, use_prepared=prepared)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
found = {"model": model, "boot_s": round(seconds, 2), "peak_rss_gb": peak}
if torch.cuda.is_available() and device.startswith("cuda"):
    found["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
print("RESULT " + json.dumps(found))
"""


def boot(weights: Path, device: str, model: str, prepared: bool) -> dict:
    """One boot of `model` (fbc, fc or both) in a fresh process."""
    argv = [sys.executable, "-c", CHILD, str(weights), device, model, "1" if prepared else "0"]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"booting {model} failed: {run.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.served", description=__doc__)
    p.add_argument("weights", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--prepared", action="store_true", help="boot from prepared UNets (written first)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.prepared:
        from iclight import cli

        cli.main(["weights", "prepare", str(args.weights), "--model", C.BOTH])
    rows = [boot(args.weights, args.device, model, args.prepared) for model in (*C.MODELS, C.BOTH)]
    for row in rows:
        gpu = f", peak CUDA {row['peak_cuda_gb']:.2f} GB" if "peak_cuda_gb" in row else ""
        print(f"{row['model']:>4}: boot {row['boot_s']:.2f} s, peak RSS {row['peak_rss_gb']:.2f} GB{gpu}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
