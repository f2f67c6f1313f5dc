"""What the model choices cost (docs/models.md): seconds per image for each sampler at the steps
a user would pick for it, the time to switch LoRAs, and loading a single-file checkpoint against
the diffusers folder it was made from.

    python -m benchmarks.models WEIGHTS [--size tiny|full] [--device cpu]

WEIGHTS is written with stand-ins of `--size` if it has none (`full`: SD1.5's shapes, 7.7 GB)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from iclight.models import samplers
from iclight.pipeline import Relighter
from iclight.pipeline.standins import write_lora, write_single_file, write_weights
from iclight.store import layout

# The steps users run each sampler at: the hosted 25; 20 for the 2M, Euler and DDIM family; UniPC
# converges in fewer.
STEPS = {"dpmpp-2m-sde-karras": 25, "dpmpp-2m-karras": 20, "euler": 20, "euler-a": 20, "unipc": 12, "ddim": 20}
CASE = dict(width=512, height=640, highres_scale=1.5, light_source="Left Light", seed=1)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path)
    p.add_argument("--size", choices=["tiny", "full"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-samplers", action="store_true", help="only the loading and the LoRA switch")
    args = p.parse_args(argv)
    if not (args.weights / layout.OFFSET_FILE).is_file():
        write_weights(args.weights, args.size, matting_models=())
    found: dict = {"size": args.size, "device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        single = write_single_file(args.weights, Path(tmp) / "single.safetensors")
        folder = timed(
            lambda: Relighter.load(args.weights, device=args.device, use_prepared=False, matting_choice="none")
        )
        one = timed(lambda: Relighter.load(args.weights, device=args.device, matting_choice="none", base_model=single))
        found["load_s"] = {"diffusers folder": folder, "single file": one}
        relighter = Relighter.load(args.weights, device=args.device, matting_choice="none")
        loras = [write_lora(args.weights, Path(tmp) / f"lora{i}.safetensors", seed=i) for i in range(2)]
        subject, mask = np.full((64, 64, 3), 180, np.uint8), np.full((64, 64), 255, np.uint8)
        quick = dict(CASE, steps=1, highres_scale=1.0, width=256, height=256)

        def relight(loras_: list, **options) -> None:
            relighter.relight(subject, None, "x", mask=mask, loras=loras_, **quick | options)

        from iclight.core.lora import Lora

        first = [timed(lambda lo=lo: relighter.adapters.activate((Lora(str(lo)),))) for lo in loras]
        switches = [timed(lambda i=i: relighter.adapters.activate((Lora(str(loras[i % 2])),))) for i in range(6)]
        turns = iter(range(100))
        found["lora_s"] = {
            "load a LoRA file (first use)": max(first),
            "switch between loaded LoRAs": min(switches),
            "1-step relight, no LoRA": timed(lambda: relight([]), 3),
            "1-step relight, a LoRA switched in": timed(lambda: relight([str(loras[next(turns) % 2])]), 3),
        }
        if not args.skip_samplers:
            found["sampler_s_per_image"] = {
                name: timed(lambda n=name: relight([], **CASE, sampler=n, steps=STEPS[n]), 2)
                for name in samplers.SAMPLERS
            }
            found["sampler_steps"] = STEPS
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
