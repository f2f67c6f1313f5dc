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
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iclight.core import config
from iclight.core import constants as C
from iclight.imaging.images import save_image
from iclight.matting import mattes as matting
from iclight.models.speed import CACHE_DIR, SpeedSettings
from iclight.models.timing import cuda_memory, sync
from iclight.pipeline import GPUOutOfMemoryError, Relighter
from iclight.pipeline.loading import dtypes_for, prepare, prepared_path, resolve_device
from iclight.standins import write_weights
from iclight.store import layout

from . import cuda
from .bench import predict_once

log = logging.getLogger("iclight")

COMPILE_ENV = config.COMPILE.name

PARITY_MEAN, PARITY_P99 = 1.0, 4.0  # grey levels, per image
SETTING_MEAN = 1.0  # a setting stays on by default only within this of eager float16
HOSTED_IMAGE, EAGER_IMAGE = "hosted.png", "eager.png"  # the sweep case's first image
DEFAULTS = dict(width=512, height=640, steps=25, highres_scale=1.5)
# Boots after the others, each a fresh process sharing the compile section's Inductor cache (the
# UNet's graph and kernels) but not its artifacts: section -> (name, ICLIGHT_COMPILE).
EXTRA_BOOTS = {
    "compile-graphs": ("CUDA graphs", "graphs"),
    "compile-vae": ("with the VAE", "all"),
}
SKIPPABLE = ("parity", "speed", "memory", "settings", "compile", "big", *EXTRA_BOOTS)  # in the order they run


@dataclass(frozen=True)
class Plan:
    size: str
    cases: dict[str, dict]
    big: dict[str, dict]
    flat: dict  # the case repeated for the memory check
    repeat: int  # timed runs of each speed case, after a warm-up (parity's run, where it ran)
    # Timed runs of each setting, after a warm-up. One was enough on an H200 (under 0.5% apart), but on
    # an H100 two rows running the same kernels (eager, and the UNet's graphs, which leave 4 images
    # eager) took 4.41 and 4.93 s, one run each.
    sweep_repeat: int = 2
    # What the settings and the compiled boots run: 4 images keep the GPU busy, where one image
    # mostly waits on kernel launches and hides what a setting costs (channels_last did).
    sweep_case: str = "4 images, Left Light"
    in_a_row: int = 20
    matted: bool = False  # after the speed cases, a subject with its own alpha (no background removal)
    extra_boots: tuple[str, ...] = tuple(EXTRA_BOOTS)
    attention: tuple[str, ...] = ("flash", "efficient", "cudnn")


def parity_cases(base: dict) -> dict[str, dict]:
    """The cases that parity and speed measure: one image, four with Left Light, compute_normal."""
    return {
        "1 image": dict(base),
        "4 images, Left Light": dict(base, number_of_images=4, light_source=C.LEFT_LIGHT),
        "compute_normal": dict(base, compute_normal=True),
    }


FULL = Plan(
    "full",
    cases=parity_cases(DEFAULTS),
    big={
        "1024x1024, highres 3": dict(DEFAULTS, width=1024, height=1024, highres_scale=3.0),
        "12 images": dict(DEFAULTS, number_of_images=12),
    },
    flat=dict(DEFAULTS, steps=8),
    repeat=3,
)
SMALL = dict(width=256, height=256, steps=2, highres_scale=1.5)
QUICK = Plan(
    "tiny",
    cases=parity_cases(SMALL),
    big={
        "384x384, highres 3": dict(SMALL, width=384, height=384, highres_scale=3.0),
        "12 images": dict(SMALL, number_of_images=12, highres_scale=1.0),
    },
    flat=dict(SMALL, highres_scale=1.0),
    repeat=1,  # the CPU mode checks that every section works; its timings are not the point
    sweep_repeat=1,
    in_a_row=5,
    sweep_case="1 image",  # the CPU's test run stays short
    matted=True,
    extra_boots=(),  # on the CPU, `all` adds 75 s (the VAE compiling) to `make test`
    attention=("math",),
)


@dataclass
class Report:
    mode: str
    machine: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    speed: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    big: dict[str, Any] = field(default_factory=dict)
    settings: list[dict[str, Any]] = field(default_factory=list)
    sweep_case: str = "1 image"  # what the settings rows and the compiled boots ran
    compile: dict[str, Any] = field(default_factory=dict)
    sections_s: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # section -> what it raised (the run went on)
    seconds: float = 0.0


class Progress:
    """Saves the report after every section, so that a run cut short keeps its figures, and
    keeps the optional sections within the time limit (None: no limit)."""

    def __init__(self, report: Report, out: Path, limit: float | None, skip: set[str]) -> None:
        self.report, self.path, self.limit, self.skip = report, out / "gpu-check.json", limit, skip
        self.start = time.perf_counter()

    def left(self) -> float | None:
        return None if self.limit is None else self.limit - (time.perf_counter() - self.start)

    def out_of_time(self) -> bool:
        left = self.left()
        return left is not None and left <= 0

    def wants(self, name: str) -> bool:
        """Whether optional section `name` runs: neither skipped by request nor out of time."""
        if name in self.skip:
            self.report.skipped[name] = "--skip"
            return False
        if self.out_of_time():
            self.report.skipped[name] = "out of time (--time-limit)"
            return False
        return True

    @contextmanager
    def section(self, name: str, fatal: bool = False) -> Iterator[None]:
        """Time and save section `name`. An error in a section that is not `fatal` is recorded
        and the run goes on: one broken part must not cost the whole run."""
        start = time.perf_counter()
        try:
            yield
        except Exception as e:
            if fatal:
                raise
            self.report.errors[name] = "".join(traceback.format_exception(e))[-3000:]
            print(f"gpu-check: {name} failed: {type(e).__name__}: {e}", flush=True)
        finally:
            self.report.sections_s[name] = time.perf_counter() - start
            self.save()
        print(f"gpu-check: {name} done in {self.report.sections_s[name]:.0f} s", flush=True)

    def save(self) -> None:
        self.report.seconds = time.perf_counter() - self.start
        self.path.write_text(json.dumps(asdict(self.report), indent=1, default=str))


# -- what runs where --------------------------------------------------------------------------------


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["driver"] = _driver()
        wheel = ".".join((torch.version.cuda or "").split(".")[:2])
        info["driver_problem"] = cuda.driver_problem(info["driver"], wheel) if info["driver"] else None
    return info


def _driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return ""


def stand_ins(root: Path, plan: Plan, device: torch.device) -> dict[str, Any]:
    """Stand-in weights (written once, then reused) and the prepared UNet for `device`."""
    start = time.perf_counter()
    # The hosted model's matting only: the weights' size and boot stay those of the hosted stack.
    if set(layout.missing_files(root)) - set(matting.not_needed(matting.RMBG)):
        write_weights(root, plan.size, matting_models=(matting.RMBG,))
    written = time.perf_counter() - start
    dtype = dtypes_for(device).unet
    start = time.perf_counter()
    if not prepared_path(root, dtype).is_file():
        prepare(root, dtype)
    size = sum(p.stat().st_size for p in root.rglob("*.safetensors"))
    return {
        "root": str(root),
        "size": plan.size,
        "bytes": size,
        "write_s": written,
        "prepare_s": time.perf_counter() - start,
    }


def inputs(out: Path) -> tuple[Path, Path]:
    """The examples when this is a checkout, else a made-up subject and background."""
    examples = layout.REPO_ROOT / "examples"
    if (examples / "astronaut.png").is_file():
        return examples / "astronaut.png", examples / "coffee.png"
    yy, xx = np.mgrid[0:512, 0:512]
    subject = np.zeros((512, 512, 3), np.uint8) + 40
    subject[((xx - 256) ** 2 + (yy - 256) ** 2) < 150**2] = (210, 170, 130)
    background = np.broadcast_to(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 640, 3))
    Image.fromarray(subject).save(out / "subject.png")
    Image.fromarray(np.ascontiguousarray(background)).save(out / "background.png")
    return out / "subject.png", out / "background.png"


def with_alpha(subject: Path, out: Path) -> Path:
    """The subject with an elliptic alpha: the matte comes with it, no background removal."""
    img = Image.open(subject).convert("RGB")
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 2.5)) ** 2 + ((yy - h / 2) / (h / 2.5)) ** 2 < 1
    img.putalpha(Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)))
    img.save(out / "subject-alpha.png")
    return out / "subject-alpha.png"


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the hosted code --------------------------------------------------------------------------------


class Hosted:
    """The hosted model's own code, driven through its runner (`ref_run.py`, beside it)."""

    def __init__(self, ref_dir: Path, weights: Path, device: torch.device, images: tuple[Path, Path]) -> None:
        sys.path.insert(0, str(ref_dir))
        import ref_run  # the runner, copied beside the hosted files

        start = time.perf_counter()
        self.runner = ref_run
        with cuda_memory(device) as footprint:
            self.ref = ref_run.load_reference(str(ref_dir), str(weights), str(device))
            sync(device)
        self.setup_s = time.perf_counter() - start
        self.cuda_gb = footprint.get("added_cuda_gb")
        self.device = device
        self.images = images

    def run(self, case: dict) -> dict[str, Any]:
        """As `predict_once` gives ours: the images in generation order (under "images"), the
        seconds of a whole prediction, with the images encoded as the hosted predictor does it
        (one after the other), and its CUDA memory."""
        full = {s.name: s.default for s in C.INPUTS if s.type is not object}
        full |= {"prompt": "sunshine from window", "seed": 12345, **case}
        full |= {"subject_image": self.images[0].name, "background_image": self.images[1].name}
        fmt, quality = full["output_format"], full["output_quality"]
        sync(self.device)
        start = time.perf_counter()
        with cuda_memory(self.device) as used:
            outs = self.runner.run_case(self.ref, full, str(self.images[0].parent))
            sync(self.device)
        with tempfile.TemporaryDirectory(prefix="iclight-hosted-") as folder:
            for i, image in enumerate(outs):
                save_image(image, Path(folder) / f"{i}.{fmt}", fmt, quality)
        seconds = time.perf_counter() - start
        # run_case gives the hosted predictor's order, reversed
        return {"images": list(reversed(outs)), "predict_s": seconds, **used}


@contextmanager
def non_finite(*modules: torch.nn.Module) -> Iterator[list[int]]:
    """Count NaN or inf values in the outputs of `modules` while the block runs. The counts stay
    on the device until the block ends: reading each would add a host sync to every step."""
    found, counts = [0], []

    def hook(_module, _args, output) -> None:
        tensor = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if isinstance(tensor, torch.Tensor):
            counts.append((~torch.isfinite(tensor)).sum())

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield found
    finally:
        for h in handles:
            h.remove()
        found[0] = sum(int(c) for c in counts)


def difference(a: np.ndarray | Image.Image, b: np.ndarray | Image.Image) -> dict[str, float]:
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}


# -- sections ---------------------------------------------------------------------------------------


def parity(ours: Relighter, hosted: Hosted | None, plan: Plan, images: tuple[Path, Path], out: Path) -> dict[str, Any]:
    """Per case and image, ours against the hosted code; each run also warms its case up for
    `speed` and counts our host syncs. The hosted code's first image goes to OUT/hosted.png."""
    if hosted is None:
        return {"skipped": "no --reference: the hosted code is not part of this repository"}
    found: dict[str, Any] = {}
    for name, case in plan.cases.items():
        with non_finite(ours.unet, ours.vae.decoder) as ours_bad, host_syncs(ours) as syncs:
            mine = predict_once(ours, case, ours.device, images, keep_images=True)["images"]
        with non_finite(hosted.ref.unet, hosted.ref.vae.decoder) as theirs_bad:
            theirs = hosted.run(case)["images"]
        if name == plan.sweep_case:
            Image.fromarray(theirs[0]).save(out / HOSTED_IMAGE)
        per_image = [difference(a, b) for a, b in zip(mine, theirs, strict=True)]
        found[name] = {
            "images": per_image,
            "non_finite": {"ours": ours_bad[0], "hosted": theirs_bad[0]},
            "ok": all(d["mean"] <= PARITY_MEAN and d["p99"] <= PARITY_P99 for d in per_image)
            and ours_bad[0] == theirs_bad[0] == 0,
            "host_syncs": syncs,
        }
    return found


@contextmanager
def host_syncs(relighter: Relighter) -> Iterator[dict[str, int]]:
    """Count the operations that make the host wait for the GPU inside each diffusion pass (the
    denoising loops: the pipelines' calls), with torch's sync debug mode. CUDA only."""
    import warnings

    counts = {"low-res pass": 0, "high-res pass": 0}
    if relighter.device.type != "cuda":
        yield counts
        return
    originals = relighter.t2i, relighter.i2i

    def counted(pipe, key: str):
        def call(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    return pipe(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                counts[key] += sum("synchroniz" in str(w.message) for w in seen)

        return call

    relighter.t2i, relighter.i2i = counted(originals[0], "low-res pass"), counted(originals[1], "high-res pass")
    try:
        yield counts
    finally:
        relighter.t2i, relighter.i2i = originals


def speed(ours: Relighter, hosted: Hosted | None, plan: Plan, images: tuple[Path, Path], progress: Progress) -> None:
    """Best of `plan.repeat` per case, ours and the hosted code's, into the report as each case
    ends; the cases that parity ran are warm already, with our host syncs counted."""
    found, warmed = progress.report.speed, progress.report.parity
    for name, case in plan.cases.items():
        if name in warmed:
            syncs = warmed[name]["host_syncs"]
        else:
            with host_syncs(ours) as syncs:
                predict_once(ours, case, ours.device, images)  # warm-up, counting the host syncs
        best = _best_of(ours, case, images, plan.repeat, warm_up=False)
        n = 1 if case.get("compute_normal") else case.get("number_of_images", 1)
        entry = {"ours_s": best["predict_s"], "ours_per_image_s": best["predict_s"] / n, "stages_s": best["stages_s"]}
        entry["gpu_per_image_s"] = gpu_seconds(best) / n
        entry |= {"peak_cuda_gb": best["peak_cuda_gb"], "working_cuda_gb": best["working_cuda_gb"]}
        entry["host_syncs"] = syncs
        found[name] = entry
        progress.save()
        if hosted:
            if name not in warmed:
                hosted.run(case)  # warm-up
            theirs = min((hosted.run(case) for _ in range(plan.repeat)), key=lambda r: r["predict_s"])
            entry |= {"hosted_s": theirs["predict_s"], "speedup": theirs["predict_s"] / entry["ours_s"]}
            entry["hosted_working_cuda_gb"] = theirs.get("working_cuda_gb")


def gpu_seconds(run: dict[str, Any]) -> float:
    """A timed prediction's stages but the image encoding (on the CPU): on CUDA, each stage is
    timed on the GPU's own timeline, so this is the GPU time the issue's target speaks of."""
    return sum(seconds for stage, seconds in run["stages_s"].items() if stage != "image encoding")


def memory(ours: Relighter, plan: Plan, images: tuple[Path, Path]) -> dict[str, Any]:
    """The allocated memory after each of `in_a_row` predictions (CUDA), else the resident set."""
    import resource

    samples = []
    for i in range(plan.in_a_row):
        predict_once(ours, {**plan.flat, "seed": i}, ours.device, images)
        if ours.device.type == "cuda":
            samples.append(torch.cuda.memory_allocated(ours.device) / 1e9)
        else:
            samples.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9)
    growth = samples[-1] - samples[0]
    what = "allocated CUDA GB" if ours.device.type == "cuda" else "peak resident GB"
    return {"measure": what, "samples": samples, "growth_gb": growth, "flat": growth <= 0.05 * max(samples[0], 0.1)}


def big(ours: Relighter, plan: Plan, images: tuple[Path, Path]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, case in plan.big.items():
        entry: dict[str, Any]
        try:
            run = predict_once(ours, case, ours.device, images)
            entry = {"status": "completed", "seconds": run["predict_s"], "peak_cuda_gb": run["peak_cuda_gb"]}
        except GPUOutOfMemoryError as e:
            entry = {"status": "out of memory", "error": str(e)}
        _free()
        after = predict_once(ours, plan.cases["1 image"], ours.device, images)
        entry["next_prediction_s"] = after["predict_s"]
        found[name] = entry
    return found


def unet_graphs(relighter: Relighter) -> dict[str, int] | None:
    """How the eager UNet's CUDA graphs fared (recorded, replays, eager calls, failed), if on."""
    graphs = relighter.unet.graphs
    return graphs.summary() if graphs is not None else None


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
            best = _best_of(relighter, case, images, plan.sweep_repeat)
            one = None
            if plan.sweep_case != "1 image" and (settings == SpeedSettings() or settings.unet_graphs):
                one = _best_of(relighter, plan.cases["1 image"], images, plan.sweep_repeat)
            graphs = unet_graphs(relighter)
        except (RuntimeError, ValueError) as e:  # a backend this GPU or build lacks
            rows.append({"setting": label, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        finally:
            relighter = None
            _free()
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


def _best_of(
    relighter: Relighter, case: dict[str, Any], images: tuple[Path, Path], repeat: int, warm_up: bool = True
) -> dict[str, Any]:
    """The fastest of `repeat` predictions (images kept), after a warm-up unless one ran already."""
    if warm_up:
        predict_once(relighter, case, relighter.device, images)
    runs = [predict_once(relighter, case, relighter.device, images, keep_images=True) for _ in range(repeat)]
    return min(runs, key=lambda r: r["predict_s"])


def compiled_boots(
    root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path, progress: Progress
) -> None:
    """ICLIGHT_COMPILE=1 as a deployment boots, each boot a fresh process and measured: first with
    no cache (it compiles and writes the cache beside the weights, as `weights prepare --compile`
    does), then with it (warm). The cold boot measures too: on an H100 it took minutes, and a
    time limit may leave the warm boot no time to run."""
    cache = root / CACHE_DIR
    if cache.is_dir():
        import shutil

        shutil.rmtree(cache)
    found = progress.report.compile
    found["cold"] = _boot(root, device, plan, images, out, progress, "1")
    progress.save()
    found["warm"] = _boot(root, device, plan, images, out, progress, "1")


def eager_reference(root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path) -> None:
    """The sweep case's first image from eager float16, which the compiled boots are compared with,
    where the settings section did not write it (a run that measures only compiling)."""
    relighter = Relighter.load(root, device=str(device), speed=SpeedSettings())
    try:
        run = predict_once(relighter, plan.cases[plan.sweep_case], device, images, keep_images=True)
        run["images"][0].save(out / EAGER_IMAGE)
    finally:
        relighter = None
        _free()


def _boot(
    root: Path, device: torch.device, plan: Plan, images: tuple[Path, Path], out: Path, progress: Progress, request: str
) -> dict[str, Any]:
    if not progress.out_of_time() and not (out / EAGER_IMAGE).is_file():
        eager_reference(root, device, plan, images, out)
    cmd = [sys.executable, "-m", "benchmarks.gpucheck", str(out), "--child-boot", "--weights", str(root)]
    cmd += ["--device", str(device)] + (["--quick"] if plan.size == "tiny" else [])
    run = _child(cmd, {**_child_env(device), COMPILE_ENV: request}, progress)
    if not isinstance(run, str):
        return run
    found = json.loads(run.strip().splitlines()[-1])
    if (out / EAGER_IMAGE).is_file():
        found["vs_eager"] = difference(Image.open(found["image"]), Image.open(out / EAGER_IMAGE))
    return found


def _child_env(device: torch.device) -> dict[str, str]:
    env = {**os.environ, config.DEVICE.name: str(device)}
    if device.type == "cpu":
        # Inductor's scalar C++ kernels: on a 2-core x86 CPU the vectorised ones took the cold
        # boot from 38 to 65 s to compile, and the CPU mode checks that compiling works, not speed.
        env.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "0")
    return env


def _child(cmd: list[str], env: dict[str, str], progress: Progress) -> str | dict[str, str]:
    """A child process's standard output, or what went wrong; stopped at the time limit."""
    if progress.out_of_time():
        return {"skipped": "out of time (--time-limit)"}
    left = progress.left()
    timeout = 1800 if left is None else max(left, 1.0)
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        stopped, said = f"stopped after {timeout:.0f} s (--time-limit or 30 min)", _last_lines(e.stderr)
        return {"error": f"{stopped}; it had said: {said}" if said else stopped}
    return run.stdout if run.returncode == 0 else {"error": run.stderr[-2000:]}


def _last_lines(output: str | bytes | None, count: int = 3) -> str:
    """The end of what a stopped child printed (subprocess leaves it as bytes even in text mode)."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line.strip()[:80] for line in (output or "").splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def child_boot(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    device = resolve_device(args.device)
    log.info("booting with %s=%s", COMPILE_ENV, config.COMPILE.read())
    start = time.perf_counter()
    relighter = Relighter.load(args.weights, device=str(device))  # compiled as ICLIGHT_COMPILE says
    sync(device)
    boot = time.perf_counter() - start
    log.info("booted in %.1f s", boot)
    images = inputs(args.out)
    if plan.matted:
        images = (with_alpha(images[0], args.out), images[1])
    case = plan.cases[plan.sweep_case]
    best = _best_of(relighter, case, images, plan.repeat, warm_up=False)  # the boot warmed up
    log.info("%s: best %.2f s", plan.sweep_case, best["predict_s"])
    one = best
    if plan.sweep_case != "1 image":
        one = _best_of(relighter, plan.cases["1 image"], images, plan.repeat, warm_up=False)
        log.info("1 image: best %.2f s", one["predict_s"])
    # Other sizes must not compile again (one dynamic graph serves every width x height).
    for width, height in ((320, 448), (448, 320), (512, 512)):
        predict_once(relighter, {**plan.cases["1 image"], "width": width, "height": height}, device, images)
        log.info("%dx%d done", width, height)
    path = (
        args.out
        / f"compiled-{relighter.speed.key()}-{'warm' if relighter.compile_report['warm_cache'] else 'cold'}.png"
    )
    best["images"][0].save(path)
    return {
        "setting": relighter.speed.label,
        "boot_s": boot,
        **relighter.compile_report,
        "predict_s": best["predict_s"],
        "per_image_s": best["predict_s"] / len(best["images"]),
        "gpu_per_image_s": gpu_seconds(best) / len(best["images"]),
        "one_image_s": one["predict_s"],
        "one_image_gpu_s": gpu_seconds(one),
        "stages_s": best["stages_s"],
        "peak_cuda_gb": best["peak_cuda_gb"],
        # after the other sizes: CUDA graphs keep a memory pool per recorded shape
        "reserved_cuda_gb": torch.cuda.memory_reserved(device) / 1e9 if device.type == "cuda" else None,
        "image": str(path),
        "graphs": int(counters["stats"]["unique_graphs"]),
        "fx_cache_hits": int(counters["inductor"]["fxgraph_cache_hit"]),
        "fx_cache_misses": int(counters["inductor"]["fxgraph_cache_miss"]),
    }


# -- report -----------------------------------------------------------------------------------------


def table(r: Report) -> str:
    """The report as text; sections not (yet) run are left out, and the skipped ones named."""
    lines = _head(r) + _parity_lines(r.parity) + _speed_lines(r) + _memory_lines(r) + _settings_lines(r)
    lines += [f"skipped: {name} ({why})" for name, why in r.skipped.items()]
    lines += [f"FAILED: {name}: {error.strip().splitlines()[-1]}" for name, error in r.errors.items()]
    return "\n".join(lines)


def _head(r: Report) -> list[str]:
    m, w, s = r.machine, r.weights, r.setup
    lines = [
        f"gpu-check ({r.mode}) on {m.get('gpu', m['device'])}, driver {m.get('driver', '-')}, torch {m['torch']}"
        f" (CUDA {m['torch_cuda']}), {r.seconds:.0f} s"
    ]
    if w:
        lines.append(
            f"weights: {w['size']} stand-ins, written in {w['write_s']:.1f} s, prepared in {w['prepare_s']:.1f} s"
        )
    if s:
        hosted = f", hosted setup {s['hosted_s']:.2f} s" if "hosted_s" in s else ""
        lines.append(f"setup from prepared weights {s['ours_s']:.2f} s ({s['settings']}){hosted}")
        if s.get("ours_cuda_gb"):
            hosted = f", the hosted code's {s['hosted_cuda_gb']:.2f} GB" if s.get("hosted_cuda_gb") else ""
            lines.append(f"weights on the GPU: ours {s['ours_cuda_gb']:.2f} GB{hosted}")
    return lines


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    if not parity:
        return []
    lines = ["", "parity with the hosted code (mean / p99 grey levels per image; non-finite values):"]
    for name, p in parity.items():
        if name == "skipped":
            lines.append(f"  skipped: {p}")
            continue
        diffs = ", ".join(f"{d['mean']:.2f}/{d['p99']:.0f}" for d in p["images"])
        lines.append(f"  {name:<22} {diffs}  NaN/inf {p['non_finite']}  {'ok' if p['ok'] else 'FAIL'}")
    return lines


def _speed_lines(r: Report) -> list[str]:
    if not r.speed:
        return []
    lines = [
        "",
        f"{'speed (best of runs)':<24} {'ours s':>8} {'s/image':>8} {'hosted s':>9} {'speedup':>8} {'peak GB':>8}"
        f" {'working GB ours/hosted':>23}",
    ]
    for name, s in r.speed.items():
        hosted = f"{s['hosted_s']:>9.2f} {s['speedup']:>7.2f}x" if "hosted_s" in s else f"{'-':>9} {'-':>8}"
        peak = f"{s['peak_cuda_gb']:>8.2f}" if s.get("peak_cuda_gb") else f"{'-':>8}"
        both = (s.get("working_cuda_gb"), s.get("hosted_working_cuda_gb"))
        working = "/".join(f"{gb:.2f}" if gb else "-" for gb in both)
        lines.append(f"  {name:<22} {s['ours_s']:>8.2f} {s['ours_per_image_s']:>8.2f} {hosted} {peak} {working:>23}")
    gpu = [f"{name} {s['gpu_per_image_s']:.2f}" for name, s in r.speed.items() if "gpu_per_image_s" in s]
    if gpu:
        lines.append(f"  s/image of the stages, without encoding the images (GPU time on CUDA): {'; '.join(gpu)}")
    if r.setup.get("unet_graphs"):
        lines.append(f"  UNet CUDA graphs: {_graph_counts(r.setup['unet_graphs'])}")
    if r.machine["device"].startswith("cuda"):
        syncs = "; ".join(
            f"{n}: {s['host_syncs']['low-res pass']}/{s['host_syncs']['high-res pass']}" for n, s in r.speed.items()
        )
        lines.append(f"  host syncs inside the passes (low-res/high-res): {syncs}")
    return lines


def _memory_lines(r: Report) -> list[str]:
    lines = []
    if r.memory:
        mem = r.memory
        lines += [
            "",
            f"{len(mem['samples'])} in a row: {mem['measure']} {mem['samples'][0]:.3f} -> {mem['samples'][-1]:.3f}"
            f" ({'flat' if mem['flat'] else 'GROWING'})",
        ]
    if r.big:
        lines.append("big requests:")
    for name, b in r.big.items():
        done = f"{b['status']} in {b['seconds']:.1f} s" if b["status"] == "completed" else b["status"]
        lines.append(f"  {name:<22} {done}; next prediction {b['next_prediction_s']:.2f} s")
    return lines


def _graph_counts(g: dict[str, int]) -> str:
    return f"{g['recorded']} recorded, {g['replays']} replays, {g['eager']} calls eager, {g['failed']} failed"


def _settings_lines(r: Report) -> list[str]:
    if not (r.settings or r.compile):
        return []
    lines = ["", f"settings, {r.sweep_case} (s: the whole prediction; mean/p99: difference from eager; from hosted)"]
    lines.append(f"{'setting':<34} {'s':>7} {'gain':>6} {'mean':>6} {'p99':>5}")
    for s in r.settings:
        if "vs_eager" not in s:
            lines.append(f"  {s['setting']:<32} {'unavailable: ' + s['error'][:70] if 'error' in s else s['skipped']}")
            continue
        d = s["vs_eager"]
        flag = "" if s["within_tolerance"] else "  > tolerance"
        hosted = f"; {s['vs_hosted']['mean']:.2f}/{s['vs_hosted']['p99']:.0f}" if "vs_hosted" in s else ""
        figures = f"{s['predict_s']:>7.2f} {s['gain']:>5.2f}x {d['mean']:>6.2f} {d['p99']:>5.0f}"
        graphs = f"  (UNet CUDA graphs: {_graph_counts(s['unet_graphs'])})" if s.get("unet_graphs") else ""
        if "one_image_s" in s:
            one = s["one_image_vs_eager"]
            hosted += f"; 1 image {s['one_image_s']:.2f} s, {s['one_image_gain']:.2f}x"
            hosted += f", {one['mean']:.2f}/{one['p99']:.0f}"
        lines.append(f"  {s['setting']:<32} {figures}{hosted}{flag}{graphs}")
    for name, b in r.compile.items():
        if "error" in b or "skipped" in b:
            lines.append(f"  compiled, {name}: {b.get('skipped') or 'failed: ' + b['error'][-300:]}")
        elif "wall_s" in b:
            lines.append(f"  compile, {name}: {b['wall_s']:.1f} s (process start, load, compile, cache written)")
        else:
            diff = f", vs eager {b['vs_eager']['mean']:.2f}/{b['vs_eager']['p99']:.0f}" if "vs_eager" in b else ""
            if b.get("cuda_graph_skips"):
                diff += f", ran without CUDA graphs {b['cuda_graph_skips']}x (TORCH_LOGS=cudagraphs)"
            if b.get("reserved_cuda_gb"):
                diff += f", peak {b['peak_cuda_gb']:.1f} GB, reserved after 4 sizes {b['reserved_cuda_gb']:.1f} GB"
            label = f"{b['setting']} ({name})"
            one = f", 1 image {b['one_image_s']:.2f} s" if "one_image_s" in b else ""
            if "gpu_per_image_s" in b:
                one += f"; GPU s/image {b['gpu_per_image_s']:.2f}, 1 image {b['one_image_gpu_s']:.2f}"
            lines.append(
                f"  {label:<32} {b['predict_s']:>7.2f}{one}  boot {b['boot_s']:.1f} s (compile {b['compile_s']:.1f}"
                f" s), graphs {b['graphs']}, FX cache hits {b['fx_cache_hits']}{diff}"
            )
    return lines


# -- command line -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, plan: Plan) -> Report:
    device = resolve_device(args.device)
    report = Report("quick" if args.quick else "full", machine(device), sweep_case=plan.sweep_case)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = Progress(report, args.out, args.time_limit, args.skip)
    with progress.section("weights", fatal=True):
        report.weights = stand_ins(args.weights, plan, device)
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
    _free()
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
    _free()
    for section in plan.extra_boots:
        name, request = EXTRA_BOOTS[section]
        if progress.wants(section):
            with progress.section(section):
                report.compile[name] = _boot(args.weights, device, plan, images, args.out, progress, request)
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
    print(f"wrote {args.out / 'gpu-check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
