"""`make gpu-check`: the CUDA path, run and measured in one command, against the hosted code.

    python -m benchmarks.gpucheck OUT_DIR [--reference DIR] [--device cuda|cpu] [--quick] [--time-limit S]
    python -m benchmarks.gpucheck --table OUT_DIR/gpu-check.json

On a bare CUDA machine with Python 3.12 and torch (and this package's dependencies) it
writes full-size SD1.5 stand-in weights itself (random values, real shapes), prepares the
float16 UNet, then measures:

  parity    ours against the hosted model's code, same GPU, weights, inputs and seeds, in the
            hosted dtypes: the hosted defaults, 4 images with Left Light, compute_normal. Mean
            and p99 absolute difference per image, and any NaN or inf (skipped without
            --reference: the hosted code is never part of this repository)
  speed     setup from prepared weights; 1 image, 4 images, compute_normal at the hosted
            defaults, best of 3 after a warm-up, per stage, ours and the hosted code's (whole
            predictions, the images encoded as each predictor does), and our host syncs inside
            the diffusion passes; CUDA memory side by side: the weights' and each case's
            working memory (its peak above what was allocated before it), and our peak
  memory    20 predictions in a row, allocated memory flat
  settings  every speed setting (speed.py) with 4 images, against eager float16 (and the
            hosted code's image): gain and pixel difference
  compile   ICLIGHT_COMPILE=1 booted in fresh processes, with a cold and then a warm cache
            (4 images and 1 image), each against eager float16 (its image made before the
            first boot where the settings section did not run)
  big       1 image at 1024x1024 with highres 3, and 12 images: done, or the out-of-memory
            error and the next prediction fine
  compile-graphs, compile-vae  ICLIGHT_COMPILE=graphs, then all, each booted with the
            compile section's Inductor cache (full run only)

--reference DIR holds the hosted `ref_predict.py` and `briarmbg.py` (exported from a clone
of zsxkib/IC-Light, branch background-model) and `ref_run.py`, their runner (`make reference`).
`--device cpu --quick` runs every step on the CPU with tiny weights and small sizes (`make
test` does), so the script cannot rot. Writes OUT_DIR/gpu-check.json after every section (a run
cut short keeps what it measured; `--table` prints it) and prints a table at the end. With
`--time-limit S`, the optional sections that would start after S seconds are skipped, and the
compile processes are stopped at the limit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from iclight.models.speed import SpeedSettings
from iclight.models.timing import cuda_memory, sync
from iclight.pipeline import Relighter
from iclight.pipeline.loading import resolve_device

from .boots import boot, child_boot, compiled_boots
from .common import free, inputs, machine, stand_ins, with_alpha
from .hosted import Hosted
from .plan import EAGER_IMAGE, EXTRA_BOOTS, FULL, HOSTED_IMAGE, QUICK, SKIPPABLE, Plan, Report
from .progress import Progress
from .sections import big, memory, parity, speed, unet_graphs
from .sweep import sweep
from .tables import table

log = logging.getLogger("iclight")

REPORT_FILE = "gpu-check.json"


def run(args: argparse.Namespace, plan: Plan) -> Report:
    device = resolve_device(args.device)
    report = Report("quick" if args.quick else "full", machine(device), sweep_case=plan.sweep_case)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = Progress(report, args.out, args.time_limit, args.skip, REPORT_FILE)
    with progress.section("weights", fatal=True):
        report.weights = stand_ins(args.weights, plan.size, device)
    images = inputs(args.out)
    (args.out / EAGER_IMAGE).unlink(missing_ok=True)  # an earlier run's: the settings or the first boot makes it anew
    with progress.section("setup", fatal=True):
        t = time.perf_counter()
        defaults = SpeedSettings.default(device, "off")  # compiled: see below
        with cuda_memory(device) as footprint:
            ours = Relighter.load(args.weights, device=str(device), speed=defaults)
            sync(device)
        report.setup = {"ours_s": time.perf_counter() - t, "settings": ours.speed.label}
        report.setup["ours_cuda_gb"] = footprint.get("added_cuda_gb")
    hosted = None
    if args.reference:
        with progress.section("hosted setup"):
            hosted = Hosted(args.reference, args.weights, device, images)
            report.setup |= {"hosted_s": hosted.setup_s, "hosted_cuda_gb": hosted.cuda_gb}
    if progress.wants("parity"):  # parity and speed come first: only --skip leaves them out
        with progress.section("parity"):
            report.parity = parity(ours, hosted, plan, images, args.out)
    if "hosted setup" in report.errors:
        report.parity = {"skipped": "the hosted code did not load: see FAILED"}
    if "parity" in report.errors:
        hosted = None  # it may be the hosted code that broke: keep our own speed figures
    if progress.wants("speed"):
        with progress.section("speed"):
            speed(ours, hosted, plan, images, progress)
            report.setup["unet_graphs"] = unet_graphs(ours)
    hosted = None
    free()
    hosted_image = None if plan.matted else args.out / HOSTED_IMAGE
    if plan.matted:
        images = (with_alpha(images[0], args.out), images[1])
    if progress.wants("memory"):
        with progress.section("memory"):
            report.memory = memory(ours, plan, images)
    if progress.wants("settings"):
        with progress.section("settings"):
            sweep(args.weights, device, plan, images, args.out, progress, hosted_image)
    if progress.wants("compile"):
        with progress.section("compile"):
            compiled_boots(args.weights, device, plan, images, args.out, progress)
    if progress.wants("big"):
        with progress.section("big"):
            report.big = big(ours, plan, images)
    ours = None
    free()
    for section in plan.extra_boots:
        name, request = EXTRA_BOOTS[section]
        if progress.wants(section):
            with progress.section(section):
                report.compile[name] = boot(args.weights, device, plan, images, args.out, progress, request)
    progress.save()
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpucheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("out", type=Path, help="folder for gpu-check.json and the images")
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="S",
        help="seconds: optional sections that would start later are skipped, compiling stops there",
    )
    p.add_argument("--table", action="store_true", help="print the table of OUT (a gpu-check.json), even a partial one")
    p.add_argument("--reference", type=Path, default=None, help="folder with the hosted code (see above)")
    p.add_argument("--device", default="auto", help="cuda (default where available) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny weights and small sizes (the CPU mode)")
    p.add_argument("--weights", type=Path, default=None, help="where the stand-in weights go (default: a temp folder)")
    p.add_argument(
        "--skip",
        type=lambda v: set(v.split(",")),
        default=set(),
        metavar="SECTIONS",
        help=f"leave out some of: {', '.join(SKIPPABLE)} (comma-separated)",
    )
    p.add_argument("--child-boot", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.table:
        print(table(Report(**json.loads(args.out.read_text()))))
        return 0
    plan = QUICK if args.quick else FULL
    if args.weights is None:
        args.weights = Path(tempfile.gettempdir()) / f"iclight-gpucheck-weights-{plan.size}"
    if args.skip - set(SKIPPABLE):
        p.error(f"--skip: {', '.join(sorted(args.skip - set(SKIPPABLE)))}; choose from {', '.join(SKIPPABLE)}")
    if args.reference is not None and not (args.reference / "ref_predict.py").is_file():
        p.error(f"--reference {args.reference}: no ref_predict.py there (see --help)")
    if args.child_boot:
        # Progress on stderr: a boot stopped at the time limit then says how far it got.
        logging.basicConfig(level=logging.INFO, format="%(relativeCreated).0f ms %(message)s")
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(child_boot(args, plan)))
        return 0
    report = run(args, plan)
    print(table(report))
    print(f"wrote {args.out / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
