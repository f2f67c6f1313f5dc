"""Parity with the hosted models: our Cog predictors' pixels against the hosted code's.

    python -m benchmarks.parity.run check [--weights DIR]     (make parity)
    python -m benchmarks.parity.run wide [--weights DIR] [--work DIR]   (make parity-wide)

`check` runs the stored cases (`tests/data/parity/cases.json` for fbc, `fc/cases.json` for fc,
the hosted pixels beside them as data) through our predictors as Cog's worker drives them:
`setup()`, then `run()` with every input given; one line for each model. `wide` runs the hosted
code itself (`.ref/` and `.ref/fc/`, git-ignored: see `make reference`) and ours over the cases
of `benchmarks/parity/cases.py`. Both on the CPU in float32, on the deterministic tiny weights of
`benchmarks/parity/weights.py`; a case holds when every image's mean absolute difference is at
most 0.5 grey levels and its 99th percentile at most 2.
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
from . import fc_hosted
from . import weights as parity_weights

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "data" / "parity" / "cases.json"
EXPECTED = CASES.parent
FC_CASES = EXPECTED / "fc" / "cases.json"
CONFIGS = {"": "cog.yaml", "fc ": "cog-fc.yaml"}  # each model's report line, and its predictor
IMAGES = ROOT / "examples"
REFERENCE = ROOT / ".ref"
MEAN, P99 = 0.5, 2.0
DEFAULT_WEIGHTS = parity_weights.DEFAULT


def predictor(config: str = "cog.yaml"):
    """The predictor that `config` names, set up on the CPU with `ICLIGHT_WEIGHTS_DIR`'s weights."""
    module, cls = yaml.safe_load((ROOT / config).read_text())["run"].split(":")
    sys.path.insert(0, str(ROOT))
    p = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), cls)()
    p.setup()
    return p


def run_ours(cases: list[dict], images: Path, config: str = "cog.yaml") -> dict[str, list[np.ndarray]]:
    """Every case through `config`'s predictor (weights and device from the environment), the
    outputs decoded from the PNG files it returns."""
    from cog import Path as CogPath

    p = predictor(config)
    found = {}
    for case in cases:
        inputs = {k: v for k, v in case.items() if k != "name"} | {"output_format": "png", "output_quality": 80}
        inputs |= {k: CogPath(images / case[k]) for k in ("subject_image", "background_image") if k in case}
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


def report(expected: dict, actual: dict, model: str = "") -> int:
    held, worst, lines = compare(expected, actual)
    print("\n".join(lines))
    print(f"parity {model}{held}/{len(expected)} cases within tolerance; worst mean diff {worst:.3f} grey levels")
    return 0 if held == len(expected) else 1


def _on_the_cpu(weights: Path) -> None:
    os.environ.update(ICLIGHT_WEIGHTS_DIR=str(parity_weights.ensure(weights)), ICLIGHT_DEVICE="cpu")


def check(weights: Path) -> int:
    _on_the_cpu(weights)
    failed = 0
    for (model, config), path in zip(CONFIGS.items(), (CASES, FC_CASES), strict=True):
        cases = json.loads(path.read_text())
        failed |= report(load_npz(path.parent, cases), run_ours(cases, IMAGES, config), model)
    return failed


def wide(weights: Path, work: Path) -> int:
    if not (REFERENCE / "ref_predict.py").is_file() or not (REFERENCE / "ref_run.py").is_file():
        print(f"{REFERENCE}: needs ref_predict.py, briarmbg.py and ref_run.py (make reference)", file=sys.stderr)
        return 2
    if not fc_hosted.available():
        print(f"{fc_hosted.REFERENCE}: needs the hosted fc code (make reference-fc)", file=sys.stderr)
        return 2
    cases = wide_cases.cases(json.loads(CASES.read_text())[0])
    fc = wide_cases.fc_cases(json.loads(FC_CASES.read_text())[0])
    (work / "images").mkdir(parents=True, exist_ok=True)
    for key in ("subject_image", "background_image"):
        shutil.copyfile(IMAGES / cases[0][key], work / "images" / cases[0][key])
    (work / "cases.json").write_text(json.dumps(cases, indent=1))
    _on_the_cpu(weights)
    hosted = [sys.executable, str(REFERENCE / "ref_run.py"), str(REFERENCE), str(weights), str(work / "cases.json")]
    with open(work / "hosted.log", "w") as log:
        subprocess.run([*hosted, str(work / "hosted")], check=True, stdout=log)
    failed = report(load_npz(work / "hosted", cases), run_ours(cases, work / "images"))
    fc_hosted.run(fc, work / "images", work / "hosted-fc", weights)
    return failed | report(load_npz(work / "hosted-fc", fc), run_ours(fc, work / "images", "cog-fc.yaml"), "fc ")


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
