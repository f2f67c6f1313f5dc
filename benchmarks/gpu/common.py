"""What the GPU checks share: the machine, the stand-in weights and inputs, timed predictions,
pixel differences, and counts taken while a block runs (host syncs, non-finite values)."""

from __future__ import annotations

import gc
import platform
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from iclight.matting import mattes as matting
from iclight.pipeline import Relighter
from iclight.pipeline.loading import dtypes_for, prepared_path, write_prepared
from iclight.pipeline.passes import Diffusion
from iclight.pipeline.standins import write_weights
from iclight.store import layout

from .. import cuda
from ..bench import predict_once


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


def stand_ins(root: Path, size: str, device: torch.device) -> dict[str, Any]:
    """Stand-in weights of `size` (written once, then reused) and the prepared UNet for `device`."""
    start = time.perf_counter()
    # The hosted model's matting only: the weights' size and boot stay those of the hosted stack.
    if set(layout.missing_files(root)) - set(matting.not_needed(matting.RMBG)):
        write_weights(root, size, matting_models=(matting.RMBG,))
    written = time.perf_counter() - start
    dtype = dtypes_for(device).unet
    start = time.perf_counter()
    if not prepared_path(root, dtype).is_file():
        write_prepared(root, dtype)
    size_bytes = sum(p.stat().st_size for p in root.rglob("*.safetensors"))
    prepared = time.perf_counter() - start
    return {"root": str(root), "size": size, "bytes": size_bytes, "write_s": written, "prepare_s": prepared}


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


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def difference(a: np.ndarray | Image.Image, b: np.ndarray | Image.Image) -> dict[str, float]:
    d = np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32))
    return {"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())}


def best_of(
    relighter: Relighter, case: dict[str, Any], images: tuple[Path, Path], repeat: int, warm_up: bool = True
) -> dict[str, Any]:
    """The fastest of `repeat` predictions (images kept), after a warm-up unless one ran already."""
    if warm_up:
        predict_once(relighter, case, relighter.device, images)
    runs = [predict_once(relighter, case, relighter.device, images, keep_images=True) for _ in range(repeat)]
    return min(runs, key=lambda r: r["predict_s"])


def gpu_seconds(run: dict[str, Any]) -> float:
    """A timed prediction's stages but the image encoding (on the CPU): on CUDA, each stage is
    timed on the GPU's own timeline, so this is the GPU time of the prediction."""
    return sum(seconds for stage, seconds in run["stages_s"].items() if stage != "image encoding")


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


PASSES = {"low-res pass": "_first_pass", "high-res pass": "_second_pass"}


@contextmanager
def host_syncs(device: torch.device) -> Iterator[dict[str, int]]:
    """Count the operations that make the host wait for the GPU inside each diffusion pass (the
    denoising loops: `Diffusion`'s two passes, whoever runs them), with torch's sync debug mode.
    CUDA only: elsewhere the counts stay 0."""
    import warnings

    counts = dict.fromkeys(PASSES, 0)
    if device.type != "cuda":
        yield counts
        return
    originals = {name: getattr(Diffusion, method) for name, method in PASSES.items()}

    def counted(name: str, original):
        def call(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    return original(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
                counts[name] += sum("synchroniz" in str(w.message) for w in seen)

        return call

    for name, method in PASSES.items():
        setattr(Diffusion, method, counted(name, originals[name]))
    try:
        yield counts
    finally:
        for name, method in PASSES.items():
            setattr(Diffusion, method, originals[name])
