"""Benchmark: setup time, per-stage prediction time and peak memory, on stand-in weights.

    python -m benchmarks.bench WEIGHTS_DIR [--device cpu|cuda|auto] [--out DIR] [--no-baseline]
    python -m benchmarks.bench serving [...]     the serving mode: benchmarks/serving.py

WEIGHTS_DIR holds full-size stand-in weights (random values, real shapes):
    python -m iclight.standins /tmp/iclight-full --size full

Each configuration runs in a child process, so each peak resident set is its own:
  baseline         the hosted model's setup pattern: every part in float32, the whole
                   offset state dict plus a second merged copy of the UNet in memory
  ours-unprepared  this package, merging the offset at boot
  ours-prepared    this package, booting from `python -m iclight weights prepare`
It writes DIR/bench.json and DIR/bench.png (where the time goes) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from iclight.jobs.files import DONE_DIR
from iclight.store import layout

CPU_CASES = {"cpu-small": dict(width=256, height=320, steps=4, highres_scale=1.5, number_of_images=1)}
GPU_CASES = {
    "gpu-defaults-1": dict(width=512, height=640, steps=25, highres_scale=1.5, number_of_images=1),
    "gpu-defaults-4": dict(width=512, height=640, steps=25, highres_scale=1.5, number_of_images=4),
    "gpu-normal": dict(width=512, height=640, steps=25, highres_scale=1.5, compute_normal=True),
}
EXAMPLES = layout.REPO_ROOT / "examples"
CONFIGS = ("baseline", "ours-unprepared", "ours-prepared")
INTERLEAVED = "interleaved"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def hosted_style_components(root: Path, device):
    """Load the way the hosted model's code does: float32 everywhere, the whole offset
    state dict and a merged copy of the UNet held at once, merged at every boot."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file
    from transformers import CLIPTextModel, CLIPTokenizer

    from iclight.matting import mattes as matting
    from iclight.matting.rmbg import BriaRMBG
    from iclight.models.unet import widen_conv_in
    from iclight.pipeline.loading import Components, dtypes_for

    sd = root / layout.SD_DIR
    tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder", dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(sd / "vae", dtype=torch.float32)
    unet = UNet2DConditionModel.from_pretrained(sd / "unet", dtype=torch.float32)
    rmbg = BriaRMBG.from_file(root / layout.RMBG_FILE)
    widen_conv_in(unet)
    offset = load_file(str(root / layout.OFFSET_FILE))
    origin = unet.state_dict()
    merged = {k: origin[k] + offset[k] for k in origin}
    unet.load_state_dict(merged, strict=True)
    del offset, origin, merged
    dt = dtypes_for(device)
    text_encoder.to(device, dt.text)
    vae.to(device, dt.vae)
    unet.to(device, dt.unet)
    rmbg.to(device)
    return Components(tokenizer, text_encoder, vae, unet, {matting.RMBG: matting.Matter(matting.RMBG, rmbg)})


def predict_once(relighter, case: dict, device, inputs: tuple | None = None, keep_images: bool = False) -> dict:
    """One timed prediction (the examples unless `inputs` = (subject, background)), its images
    encoded as the case's output_format and output_quality say (the predictor's defaults
    otherwise): total and per-stage seconds, peak and working CUDA memory (`timing.cuda_memory`);
    with `keep_images`, the images too (under "images")."""
    from iclight.core import constants as C
    from iclight.imaging.images import save_images
    from iclight.models.timing import cuda_memory, sync

    case = dict(case)
    fmt, quality = (case.pop(name, C.default(name)) for name in ("output_format", "output_quality"))
    subject, background = inputs or (EXAMPLES / "astronaut.png", EXAMPLES / "coffee.png")
    sync(device)
    with cuda_memory(device) as memory:
        t = time.perf_counter()
        result = relighter.relight(subject, background, "sunshine from window", **{"seed": 12345, **case})
        sync(device)
        total = time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="iclight-bench-") as folder:
        save_images(result.images, fmt, quality, Path(folder))
    stages = {**result.timings, "image encoding": time.perf_counter() - t}
    out = {"predict_s": total + stages["image encoding"], "stages_s": stages}
    out |= {key: memory.get(key) for key in ("peak_cuda_gb", "working_cuda_gb")}
    if keep_images:
        out["images"] = result.images
    return out


def child(config: str, root: Path, device_name: str, cases: dict[str, dict], predict: bool, repeat: int) -> dict:
    start = time.perf_counter()

    from iclight.pipeline import Relighter
    from iclight.pipeline.loading import dtypes_for, prepared_path, resolve_device, write_prepared

    imported = time.perf_counter() - start
    device = resolve_device(device_name)
    if config == "ours-prepared" and not prepared_path(root, dtypes_for(device).unet).is_file():
        write_prepared(root, dtypes_for(device).unet)
    t = time.perf_counter()
    if config == "baseline":
        relighter = Relighter(hosted_style_components(root, device), device, root)
    else:
        relighter = Relighter.load(root, device=device_name, use_prepared=config == "ours-prepared")
    setup = time.perf_counter() - t
    out = {
        "config": config,
        "device": str(device),
        "import_s": imported,
        "setup_s": setup,
        "rss_after_setup_gb": peak_rss_gb(),
        "cases": {},
    }
    for name, case in cases.items() if predict else ():
        runs = [predict_once(relighter, case, device) for _ in range(repeat)]
        out["cases"][name] = {
            **min(runs, key=lambda r: r["predict_s"]),
            "all_predict_s": [r["predict_s"] for r in runs],
        }
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def warm_page_cache(root: Path) -> None:
    """Read every weight file once, so that each configuration starts from the same (warm) page cache."""
    for path in sorted(root.rglob("*.safetensors")):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def interleaved(root: Path, device_name: str, cases: dict[str, dict], repeat: int) -> dict:
    """Both relighters in one process, predictions alternating, so that drift in the
    machine's speed cannot favour either; the peak memory of this run means nothing."""
    from iclight.pipeline import Relighter
    from iclight.pipeline.loading import resolve_device

    device = resolve_device(device_name)
    pair = {
        "baseline": Relighter(hosted_style_components(root, device), device, root),
        "ours-prepared": Relighter.load(root, device=device_name),
    }
    out: dict = {"config": INTERLEAVED, "device": str(device), "cases": {}}
    for name, case in cases.items():
        runs: dict[str, list[float]] = {k: [] for k in pair}
        for _ in range(repeat):
            for key, relighter in pair.items():
                runs[key].append(predict_once(relighter, case, device)["predict_s"])
        out["cases"][name] = runs
    return out


def run_child(config: str, args: argparse.Namespace, cases: list[str], predict: bool) -> dict:
    warm_page_cache(args.weights)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench",
        str(args.weights),
        "--child",
        config,
        "--device",
        args.device,
        "--cases",
        ",".join(cases),
        "--repeat",
        str(args.repeat),
    ] + ([] if predict else ["--no-predict"])
    print(f"running {config} ...", flush=True)
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{config} failed:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = [f"{'config':<16} {'setup s':>8} {'peak RSS GB':>12}  case: predict s (stages)"]
    for r in results:
        line = f"{r['config']:<16} {r['setup_s']:>8.2f} {r['peak_rss_gb']:>12.2f}"
        for name, c in r["cases"].items():
            stages = ", ".join(f"{k} {v:.1f}" for k, v in c["stages_s"].items())
            cuda = f", peak CUDA {c['peak_cuda_gb']:.1f} GB" if c["peak_cuda_gb"] else ""
            runs = "/".join(f"{x:.1f}" for x in c["all_predict_s"])
            line += f"  {name}: {c['predict_s']:.1f} [runs {runs}] ({stages}{cuda})"
        rows.append(line)
    base = next((r for r in results if r["config"] == "baseline"), None)
    if base:
        for r in results:
            if r is base:
                continue
            ratios = [
                f"setup {r['setup_s'] / base['setup_s']:.2f}x",
                f"peak RSS {r['peak_rss_gb'] / base['peak_rss_gb']:.2f}x",
            ]
            for name, c in r["cases"].items():
                if name in base["cases"]:
                    ratios.append(f"{name} {c['predict_s'] / base['cases'][name]['predict_s']:.2f}x")
            rows.append(f"{r['config']} vs baseline: " + ", ".join(ratios))
    return "\n".join(rows)


def interleaved_table(mixed: dict) -> str:
    rows = ["interleaved in one process (predict s, in run order):"]
    for name, runs in mixed["cases"].items():
        base, ours = runs["baseline"], runs["ours-prepared"]
        rows.append(
            f"  {name}: baseline {' '.join(f'{x:.1f}' for x in base)} | ours {' '.join(f'{x:.1f}' for x in ours)}"
            f" | median ratio {sorted(ours)[len(ours) // 2] / sorted(base)[len(base) // 2]:.2f}x"
            f", total ratio {sum(ours) / sum(base):.2f}x"
        )
    return "\n".join(rows)


def chart(results: list[dict], path: Path) -> None:
    """Stacked bars of where a prediction's time goes, one bar per configuration and case."""
    from PIL import Image, ImageDraw

    bars = [(f"{r['config']} {n}", c["stages_s"]) for r in results for n, c in r["cases"].items()]
    if not bars:
        return
    stages = list(dict.fromkeys(k for _, s in bars for k in s))
    colours = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"]
    longest = max(sum(s.values()) for _, s in bars)
    w, left, row = 900, 260, 36
    img = Image.new("RGB", (w, 60 + row * len(bars) + 24 * len(stages)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "Where a prediction's time goes (seconds)", fill="black")
    for i, (label, s) in enumerate(bars):
        y, x = 40 + i * row, left
        draw.text((10, y + 8), label, fill="black")
        for j, stage in enumerate(stages):
            span = (w - left - 60) * s.get(stage, 0.0) / longest
            draw.rectangle([x, y, x + span, y + row - 10], fill=colours[j % len(colours)])
            x += span
        draw.text((x + 4, y + 8), f"{sum(s.values()):.1f}", fill="black")
    for j, stage in enumerate(stages):
        y = 50 + row * len(bars) + 24 * j
        draw.rectangle([10, y, 24, y + 14], fill=colours[j % len(colours)])
        draw.text((30, y), stage, fill="black")
    img.save(path)


BATCH_CONFIGS = {
    "local": [],
    "ray-1-actor": ["--ray", "--workers", "1"],
    "ray-2-actors": ["--ray", "--workers", "2"],
}


def batch_manifest(folder: Path, jobs: int) -> Path:
    """`jobs` jobs relighting the examples, each with its own seed and a light source in turn."""
    from iclight.core.constants import LIGHT_SOURCES

    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        {
            "id": f"job-{i:03d}",
            "subject": str(EXAMPLES / "astronaut.png"),
            "background": str(EXAMPLES / "coffee.png"),
            "prompt": "sunshine from window",
            "seed": i,
            "light_source": LIGHT_SOURCES[i % len(LIGHT_SOURCES)],
        }
        for i in range(jobs)
    ]
    path = folder / "jobs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def batch_throughput(args: argparse.Namespace, case: dict) -> list[dict]:
    """The same manifest through the local batch and through Ray with 1 and 2 actors, each a
    fresh command with one torch thread per model; wall time includes start-up and loading."""
    manifest = batch_manifest(args.out / "batch", args.batch)
    options = [f"--{k.replace('_', '-')}={v}" for k, v in case.items()]
    rows = []
    for name, extra in BATCH_CONFIGS.items():
        out = args.out / "batch" / name
        cmd = [sys.executable, "-m", "iclight", "batch", str(manifest), "-o", str(out), *options, *extra]
        cmd += ["--weights", str(args.weights), "--device", args.device]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        print(f"running batch {name} ...", flush=True)
        start = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(f"batch {name} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
        done = next(line for line in run.stdout.splitlines() if line.startswith("done: "))
        rate = re.search(r"in ([0-9.]+) s, ([0-9.]+) jobs/s", done)
        # Steady state: between the first job written and the last (start-up and loading left out).
        ends = sorted(p.stat().st_mtime for p in (out / DONE_DIR).glob("*.json"))
        steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else None
        rows.append(
            {
                "config": name,
                "jobs": args.batch,
                "wall_s": wall,
                "run_s": float(rate[1]),
                "jobs_per_s": float(rate[2]),
                "steady_jobs_per_s": steady,
            }
        )
    return rows


def batch_table(rows: list[dict]) -> str:
    head = f"{'batch':<14} {'jobs':>5} {'wall s':>8} {'jobs s':>8} {'jobs/s':>8} {'vs local':>9} {'steady/s':>9}"
    lines = [head + f" {'vs local':>9}"]
    base, steady_base = rows[0]["jobs_per_s"], rows[0]["steady_jobs_per_s"] or 0
    for r in rows:
        steady = r["steady_jobs_per_s"] or 0
        lines.append(
            f"{r['config']:<14} {r['jobs']:>5} {r['wall_s']:>8.1f} {r['run_s']:>8.1f} {r['jobs_per_s']:>8.3f}"
            f" {r['jobs_per_s'] / base:>8.2f}x {steady:>9.3f} {steady / steady_base if steady_base else 0:>8.2f}x"
        )
    lines.append(
        "wall s: the whole command; jobs s, jobs/s: from loading the models to the last job written; "
        "steady/s: from the first job written to the last"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serving"]:  # K clients at once against the real Cog server
        from . import serving

        return serving.main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("weights", type=Path, help="folder of full-size stand-in (or real) weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--no-baseline", action="store_true", help="skip the hosted-style baseline")
    p.add_argument("--repeat", type=int, default=2, help="predictions per case (the table shows the fastest)")
    p.add_argument("--child", choices=(*CONFIGS, INTERLEAVED), help=argparse.SUPPRESS)
    p.add_argument(
        "--interleave",
        action="store_true",
        help="also time the baseline and ours alternately in one process (fairest speed comparison)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="JOBS",
        help="instead: batch throughput of a JOBS-job manifest, local and on a local Ray with 1 and 2 actors",
    )
    p.add_argument("--cases", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-predict", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if layout.missing_files(args.weights) and not (args.weights / layout.PREPARED_DIR).is_dir():
        print(
            f"{args.weights}: not a weights folder. Make full-size stand-ins with:\n"
            f"  python -m iclight.standins {args.weights} --size full",
            file=sys.stderr,
        )
        return 2
    all_cases = {**CPU_CASES, **GPU_CASES}
    if args.child:
        cases = {n: all_cases[n] for n in args.cases.split(",") if n}
        if args.child == INTERLEAVED:
            print(json.dumps(interleaved(args.weights, args.device, cases, args.repeat)))
        else:
            print(json.dumps(child(args.child, args.weights, args.device, cases, not args.no_predict, args.repeat)))
        return 0
    import torch

    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    cases = list(GPU_CASES if on_gpu else CPU_CASES)
    if args.batch:
        rows = batch_throughput(args, all_cases[cases[0]])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batch.json").write_text(json.dumps(rows, indent=1))
        print(batch_table(rows))
        return 0
    configs = [c for c in CONFIGS if not (args.no_baseline and c == "baseline")]
    # The merge-at-boot run is measured for setup and memory; prediction is the same code as prepared.
    results = [run_child(c, args, cases, predict=c != "ours-unprepared") for c in configs]
    mixed = run_child(INTERLEAVED, args, cases, predict=True) if args.interleave else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results + ([mixed] if mixed else []), indent=1))
    chart(results, args.out / "bench.png")
    print(table(results))
    if mixed:
        print(interleaved_table(mixed))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
