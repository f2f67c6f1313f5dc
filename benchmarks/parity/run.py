"""Parity with the hosted model: our Cog predictor's pixels against the hosted code's.

    python -m benchmarks.parity.run check [--weights DIR]     (make parity)
    python -m benchmarks.parity.run wide [--weights DIR] [--work DIR]   (make parity-wide)

`check` runs the stored case (`tests/data/parity/cases.json`, the hosted pixels beside it as
data) through our predictor as Cog's worker drives it: `setup()`, then `run()` with every
input given. `wide` runs the hosted code itself (`.ref/`, git-ignored: see `make reference`)
and ours over the cases of `benchmarks/parity/cases.py`. Both on the CPU in float32, on the
deterministic tiny weights of `benchmarks/parity/weights.py`; a case holds when every image's
mean absolute difference is at most 0.5 grey levels and its 99th percentile at most 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from . import cases as wide_cases
from . import weights as parity_weights

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "data" / "parity" / "cases.json"
EXPECTED = CASES.parent
IMAGES = ROOT / "examples"
REFERENCE = ROOT / ".ref"
MEAN, P99 = 0.5, 2.0
DEFAULT_WEIGHTS = Path(tempfile.gettempdir()) / "iclight-parity-weights"


def predictor():
    """The predictor that cog.yaml names, set up on the CPU with `ICLIGHT_WEIGHTS_DIR`'s weights."""
    module, cls = yaml.safe_load((ROOT / "cog.yaml").read_text())["run"].split(":")
    sys.path.insert(0, str(ROOT))
    p = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), cls)()
    p.setup()
    return p


def run_ours(cases: list[dict], images: Path) -> dict[str, list[np.ndarray]]:
    """Every case through our predictor (weights and device from the environment), the outputs
    decoded from the PNG files it returns."""
    from cog import Path as CogPath

    p = predictor()
    found = {}
    for case in cases:
        inputs = {k: v for k, v in case.items() if k != "name"} | {"output_format": "png", "output_quality": 80}
        inputs |= {k: CogPath(images / case[k]) for k in ("subject_image", "background_image")}
        found[case["name"]] = [np.asarray(Image.open(str(f)).convert("RGB")) for f in p.run(**inputs)]
    return found


def load_npz(folder: Path, cases: list[dict]) -> dict[str, list[np.ndarray]]:
    found = {}
    for case in cases:
        with np.load(folder / f"{case['name']}.npz") as npz:
            found[case["name"]] = [npz[f"out_{i}"] for i in range(len(npz.files))]
    return found


def compare(expected: dict[str, list[np.ndarray]], actual: dict[str, list[np.ndarray]]) -> tuple[int, float, list]:
    """(cases within tolerance, the worst mean difference, one line per case)."""
    held, worst, lines = 0, 0.0, []
    for name, want in expected.items():
        got = actual.get(name, [])
        problems = [] if len(got) == len(want) else [f"{len(got)} images, expected {len(want)}"]
        for i, (a, b) in enumerate(zip(want, got, strict=False)):
            if a.shape != b.shape:
                problems.append(f"image {i}: shape {b.shape}, expected {a.shape}")
                continue
            d = np.abs(a.astype(np.int16) - b.astype(np.int16))
            mean, p99 = float(d.mean()), float(np.percentile(d, 99))
            worst = max(worst, mean)
            if mean > MEAN or p99 > P99:
                problems.append(f"image {i}: mean {mean:.3f}, p99 {p99:.1f}")
        held += not problems
        lines.append(f"{name}: {'differs: ' + '; '.join(problems) if problems else 'same'}")
    return held, worst, lines


def report(expected: dict, actual: dict) -> int:
    held, worst, lines = compare(expected, actual)
    print("\n".join(lines))
    print(f"parity {held}/{len(expected)} cases within tolerance; worst mean diff {worst:.3f} grey levels")
    return 0 if held == len(expected) else 1


def _on_the_cpu(weights: Path) -> None:
    os.environ.update(ICLIGHT_WEIGHTS_DIR=str(parity_weights.ensure(weights)), ICLIGHT_DEVICE="cpu")


def check(weights: Path) -> int:
    cases = json.loads(CASES.read_text())
    _on_the_cpu(weights)
    return report(load_npz(EXPECTED, cases), run_ours(cases, IMAGES))


def wide(weights: Path, work: Path) -> int:
    if not (REFERENCE / "ref_predict.py").is_file() or not (REFERENCE / "ref_run.py").is_file():
        print(f"{REFERENCE}: needs ref_predict.py, briarmbg.py and ref_run.py (make reference)", file=sys.stderr)
        return 2
    cases = wide_cases.cases(json.loads(CASES.read_text())[0])
    (work / "images").mkdir(parents=True, exist_ok=True)
    for case in cases[:1]:
        for key in ("subject_image", "background_image"):
            shutil.copyfile(IMAGES / case[key], work / "images" / case[key])
    (work / "cases.json").write_text(json.dumps(cases, indent=1))
    _on_the_cpu(weights)
    hosted = [sys.executable, str(REFERENCE / "ref_run.py"), str(REFERENCE), str(weights), str(work / "cases.json")]
    with open(work / "hosted.log", "w") as log:
        subprocess.run([*hosted, str(work / "hosted")], check=True, stdout=log)
    return report(load_npz(work / "hosted", cases), run_ours(cases, work / "images"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity.run", description=__doc__)
    p.add_argument("what", choices=["check", "wide"])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"(default {DEFAULT_WEIGHTS})")
    p.add_argument("--work", type=Path, default=None, help="wide: a folder for the cases and images")
    args = p.parse_args(argv)
    if args.what == "check":
        return check(args.weights)
    return wide(args.weights, args.work or Path(tempfile.mkdtemp(prefix="iclight-parity-")))


if __name__ == "__main__":
    sys.exit(main())
