"""What the web app's live previews cost a relight: the same relight with and without them.

    python -m benchmarks.previews WEIGHTS [--steps 25] [--repeat 3]

WEIGHTS is written with tiny stand-ins if it has none."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from iclight.core.hooks import Hooks
from iclight.core.spec import relight_spec
from iclight.pipeline import Relighter
from iclight.pipeline.standins import write_weights
from iclight.store import layout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if not (args.weights / layout.OFFSET_FILE).is_file():
        write_weights(args.weights, "tiny", matting_models=())
    relighter = Relighter.load(args.weights, device="cpu", matting_choice="none")
    subject, mask = np.full((320, 256, 3), 180, np.uint8), np.full((320, 256), 255, np.uint8)
    spec = relight_spec(subject, None, "x", mask=mask, steps=args.steps, seed=1, light_source="Left Light")
    shown: list = []

    def once(hooks: Hooks) -> float:
        start = time.perf_counter()
        relighter.run(spec, hooks)
        return time.perf_counter() - start

    plain, previewed = Hooks(step_progress=False), Hooks(previews=shown.append, step_progress=False)
    once(plain)  # warm-up
    times = {"without": [], "with": []}
    for _ in range(args.repeat):  # interleaved, so that a slower moment of the machine hits both
        times["without"].append(once(plain))
        times["with"].append(once(previewed))
    best = {k: min(v) for k, v in times.items()}
    found = {"steps": args.steps, "previews_per_relight": len(shown) // args.repeat, "best_s": best}
    found["cost_percent"] = 100 * (best["with"] - best["without"]) / best["without"]
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
