"""How consistent a relit sequence is (docs/sequences.md), on two sequences whose motion is known so
that every relit frame can be aligned with the next:

- `pan`: a camera panning and zooming over examples/astronaut.png (each frame a crop of it);
- `slide`: the astronaut sliding over a still background (each frame the same cut-out, moved).

For independent frames, shared noise alone, and consistent light attention at 0.25, 0.5 and 0.75
(with shared noise): the flicker (the mean absolute difference of consecutive relit frames inside
the matte, after undoing the motion; grey levels), the drift of the light (the spread, max - min,
of the mean L* inside the matte across frames), the flicker across window boundaries against
inside windows, and seconds per frame; then seconds per frame and peak memory by window size.

    python -m benchmarks.consistency WEIGHTS [--frames 12] [--window 4] [--steps 8] [--plot docs/sequences.png]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iclight.imaging.colors import to_lab

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "examples" / "astronaut.png"
SIZE = 256  # every frame and every output, so that an output pixel is its frame's pixel
CONDITIONS = {  # name -> (consistency, shared noise)
    "independent": (0.0, False),
    "shared noise": (0.0, True),
    "CLA 0.25": (0.25, True),
    "CLA 0.5": (0.5, True),
    "CLA 0.75": (0.75, True),
}


@dataclass
class Sequence:
    """Frames, their masks, and for each frame the box of the reference picture it shows (x, y, side)."""

    name: str
    frames: list[np.ndarray]
    masks: list[np.ndarray]
    boxes: list[tuple[float, float, float]]


def _picture() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut and a matte of it: an ellipse over the figure (the test needs a fixed matte,
    not a good one: every condition is measured inside the same one)."""
    image = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    matte = (((xx - w * 0.5) / (w * 0.33)) ** 2 + ((yy - h * 0.6) / (h * 0.45)) ** 2) < 1
    return image, (matte * 255).astype(np.uint8)


def pan(count: int) -> Sequence:
    image, matte = _picture()
    frames, masks, boxes = [], [], []
    for i in range(count):
        t = i / max(count - 1, 1)
        side = 400 - 80 * t  # zooming in
        x, y = 20 + 60 * t, 40 + 20 * t  # panning right and down
        box = (x, y, x + side, y + side)
        frames.append(np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.BILINEAR, box=box)))
        masks.append(np.asarray(Image.fromarray(matte).resize((SIZE, SIZE), Image.BILINEAR, box=box)))
        boxes.append((x, y, side))
    return Sequence("pan", frames, masks, boxes)


def slide(count: int) -> Sequence:
    image, matte = _picture()
    subject = np.asarray(Image.fromarray(image).resize((128, 128), Image.BILINEAR))
    cut = np.asarray(Image.fromarray(matte).resize((128, 128), Image.BILINEAR))
    ground = np.zeros((SIZE, SIZE, 3), np.uint8) + np.linspace(60, 140, SIZE, dtype=np.uint8)[None, :, None]
    frames, masks, boxes = [], [], []
    for i in range(count):
        x, y = 16 + i * 8, 80
        frame, mask = ground.copy(), np.zeros((SIZE, SIZE), np.uint8)
        frame[y : y + 128, x : x + 128] = subject
        mask[y : y + 128, x : x + 128] = cut
        frames.append(frame)
        masks.append(mask)
        boxes.append((-x, -y, SIZE))  # the subject's picture, in frame pixels: it moves by x
    return Sequence("slide", frames, masks, boxes)


def _aligned(
    image: np.ndarray, box: tuple[float, float, float], common: tuple[float, float, float, float]
) -> np.ndarray:
    """The part of a frame that shows `common` (a box of the reference picture), at 128x128."""
    x, y, side = box
    scale = SIZE / side
    left, top, right, bottom = (
        (common[0] - x) * scale,
        (common[1] - y) * scale,
        (common[2] - x) * scale,
        (common[3] - y) * scale,
    )
    pil = Image.fromarray(image)
    return np.asarray(pil.transform((128, 128), Image.EXTENT, (left, top, right, bottom), Image.BILINEAR), np.float32)


def _common(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float, float]:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[2], b[1] + b[2]))


def flicker(seq: Sequence, relit: list[np.ndarray]) -> list[float]:
    """Per consecutive pair: the mean absolute difference inside both mattes, aligned (grey levels)."""
    found = []
    for i in range(len(relit) - 1):
        common = _common(seq.boxes[i], seq.boxes[i + 1])
        a, b = (_aligned(relit[j], seq.boxes[j], common) for j in (i, i + 1))
        ma, mb = (_aligned(np.dstack([seq.masks[j]] * 3), seq.boxes[j], common)[..., 0] for j in (i, i + 1))
        inside = (ma > 127) & (mb > 127)
        found.append(float(np.abs(a - b)[inside].mean()) if inside.any() else 0.0)
    return found


def drift(seq: Sequence, relit: list[np.ndarray]) -> float:
    """The spread (max - min) of the mean L* inside the matte across frames."""
    levels = [float(to_lab(image)[..., 0][mask > 127].mean()) for image, mask in zip(relit, seq.masks, strict=True)]
    return max(levels) - min(levels)


def run(
    relighter, seq: Sequence, gamma: float, shared: bool, window: int, steps: int
) -> tuple[list[np.ndarray], float]:
    start = time.perf_counter()
    result = relighter.relight_sequence(
        seq.frames, None, "soft window light", consistency=gamma, shared_noise=shared, smooth_mattes=False,
        window=window, masks=seq.masks, seed=7, width=SIZE, height=SIZE, steps=steps, highres_scale=1.0,
        light_source="Left Light",
    )  # fmt: skip
    seconds = (time.perf_counter() - start) / len(seq.frames)
    return [np.asarray(im) for im in result.images], seconds


def measure(relighter, seq: Sequence, window: int, steps: int, conditions: dict = CONDITIONS) -> dict:
    boundaries = {i for i in range(len(seq.frames) - 1) if (i + 1) % window == 0}
    found = {}
    for name, (gamma, shared) in conditions.items():
        relit, seconds = run(relighter, seq, gamma, shared, window, steps)
        pairs = flicker(seq, relit)
        inside = [f for i, f in enumerate(pairs) if i not in boundaries]
        across = [f for i, f in enumerate(pairs) if i in boundaries]
        found[name] = {
            "flicker": float(np.mean(pairs)),
            "flicker_per_pair": pairs,
            "drift_L": drift(seq, relit),
            "flicker_inside_windows": float(np.mean(inside)) if inside else None,
            "flicker_across_windows": float(np.mean(across)) if across else None,
            "s_per_frame": seconds,
        }
    return found


def by_window(weights: Path, sizes: list[int], frames: int, steps: int) -> dict:
    """Seconds per frame and the peak resident memory of a fresh process, per window size."""
    found = {}
    for size in sizes:
        cmd = [sys.executable, "-m", "benchmarks.consistency", str(weights), "--child", str(size)]
        cmd += ["--frames", str(frames), "--steps", str(steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        found[size] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


def _child(weights: Path, size: int, frames: int, steps: int) -> None:
    from iclight.pipeline import Relighter

    relighter = Relighter.load(weights, device="cpu", matting_choice="none")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, seconds = run(relighter, pan(frames), 0.5, True, size, steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"s_per_frame": seconds, "peak_rss_gb": peak / 1e6, "added_gb": (peak - before) / 1e6}))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 3.6), squeeze=False)
    for ax, (name, found) in zip(axes[0], results.items(), strict=True):
        for condition, measures in found.items():
            pairs = measures["flicker_per_pair"]
            ax.plot(range(1, len(pairs) + 1), pairs, marker="o", label=condition)
        ax.set_title(f"{name}: flicker per frame")
        ax.set_xlabel("frame (against the one before)")
        ax.set_ylabel("mean |difference| inside the matte")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("tiny random stand-in weights, CPU: what the measures see, not what real weights do", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path, help="a weights folder (written with tiny stand-ins if it has none)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--windows", type=int, nargs="*", default=[1, 4, 8, 12], help="window sizes to time")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from iclight.pipeline.standins import write_weights
    from iclight.store import layout

    if not (args.weights / layout.OFFSET_FILE).is_file():
        write_weights(args.weights, "tiny", matting_models=())
    if args.child is not None:
        _child(args.weights, args.child, args.frames, args.steps)
        return 0
    from iclight.pipeline import Relighter

    relighter = Relighter.load(args.weights, device="cpu", matting_choice="none")
    results = {
        seq.name: measure(relighter, seq, args.window, args.steps) for seq in (pan(args.frames), slide(args.frames))
    }
    report = {"frames": args.frames, "window": args.window, "steps": args.steps, "sequences": results}
    report["by_window"] = by_window(args.weights, args.windows, args.frames, args.steps)
    if args.plot:
        plot(results, args.plot)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
