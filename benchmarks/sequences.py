"""Long clips through `iclight sequence` and a manifest on Ray, as a user runs them: peak memory
and seconds per frame by length, frames redone after a kill, and one actor against two.

    python -m benchmarks.sequences WEIGHTS [--frames 100 400 1000] [--ray-frames 48]

WEIGHTS is written with tiny stand-ins if it has none. Each run is its own process (the command
line); its peak resident memory is the kernel's count for it (`wait4`). Clips are made here with
PyAV (128x128, 30 fps), relit at 256x256 with one mask per frame (no matting model): in 1 step
for the lengths, in 8 for the runs that are cut short or shared between actors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = ["--width", "256", "--height", "256", "--highres-scale", "1", "--seed", "1"]
LIGHT = ["--light-source", "Left Light", "--output-format", "png", "--matting", "none"]


def make_clip(folder: Path, frames: int) -> tuple[Path, Path]:
    """A 128x128 clip of a disc moving across, and one mask per frame."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    path, masks = folder / "clip.mp4", folder / "masks"
    masks.mkdir(exist_ok=True)
    yy, xx = np.mgrid[0:128, 0:128]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        for i in range(frames):
            disc = (xx - 32 - (i % 64)) ** 2 + (yy - 64) ** 2 < 30**2
            img = np.full((128, 128, 3), 50, np.uint8)
            img[disc] = (210, 150, 90)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            Image.fromarray(np.where(disc, 255, 0).astype(np.uint8)).save(masks / f"{i:05d}.png")
        out.mux(stream.encode())
    return path, masks


def timed(cmd: list[str], kill_after: float | None = None, watch: Path | None = None) -> dict:
    """A command's wall time and peak resident memory (GB); SIGKILLed once `watch` lists that
    many windows done, where given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start, killed = time.perf_counter(), False
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if kill_after is not None and not killed and len(_windows(watch)) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
            time.sleep(0.02)
        proc.returncode = status  # reaped here, with its resource use
        if status and not killed:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed: {log.read().decode()[-2000:]}")
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": usage.ru_maxrss / 1e6, "status": status}


def _windows(progress: Path) -> list[int]:
    try:
        return json.loads(progress.read_text())["windows"]
    except (OSError, ValueError, KeyError):
        return []


def sequence_cmd(weights: Path, clip: Path, masks: Path, out: Path, steps: int = 1) -> list[str]:
    base = [sys.executable, "-m", "iclight", "sequence", str(clip), "--prompt", "soft window light", *SIZE, *LIGHT]
    base += ["--steps", str(steps)]
    return [*base, "--masks", str(masks), "--weights", str(weights), "--device", "cpu", "-o", str(out)]


def by_length(weights: Path, work: Path, lengths: list[int]) -> list[dict]:
    rows = []
    one = timed(sequence_cmd(weights, *make_clip(work / "n1", 1), work / "n1" / "out"))
    for n in lengths:
        clip, masks = make_clip(work / f"n{n}", n)
        found = timed(sequence_cmd(weights, clip, masks, work / f"n{n}" / "out"))
        per_frame = (found["seconds"] - one["seconds"]) / (n - 1)
        rows.append({"frames": n, "wall_s": round(found["seconds"], 1), "s_per_frame": round(per_frame, 3),
                     "peak_rss_gb": round(found["peak_rss_gb"], 3)})  # fmt: skip
    return rows


def resumed(weights: Path, work: Path, frames: int, steps: int) -> dict:
    """A run SIGKILLed about halfway and run again: the frame files written again, the windows kept."""
    clip, masks = make_clip(work / "resume", frames)
    out = work / "resume" / "out"
    cmd = sequence_cmd(weights, clip, masks, out, steps)
    windows = -(-frames // 8)
    timed(cmd, kill_after=windows // 2, watch=out / ".progress" / "clip.json")
    done = _windows(out / ".progress" / "clip.json")
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("clip-1-frame-*.png")}
    again = timed(cmd)
    rewritten = sum(1 for name, stamp in before.items() if (out / name).stat().st_mtime_ns != stamp)
    return {"frames": frames, "windows": windows, "windows_done_at_kill": len(done), "frames_on_disk_at_kill":
            len(before), "frames_rewritten": rewritten, "rerun_s": round(again["seconds"], 1)}  # fmt: skip


def on_ray(weights: Path, work: Path, frames: int, window: int, steps: int) -> list[dict]:
    clip, masks = make_clip(work / "ray", frames)
    line = {"id": "clip", "sequence": str(clip), "masks": str(masks), "window": window, "seed": 1}
    manifest = work / "ray" / "jobs.jsonl"
    manifest.write_text(json.dumps(line | {"light_source": "Left Light"}) + "\n")
    rows = []
    for workers in (1, 2):
        base = [sys.executable, "-m", "iclight", "batch", str(manifest), "--prompt", "soft window light", *SIZE, *LIGHT]
        base += ["--steps", str(steps)]
        cmd = [*base, "-o", str(work / "ray" / f"out{workers}"), "--weights", str(weights), "--device", "cpu"]
        found = timed([*cmd, "--ray", "--workers", str(workers)])
        row = {"actors": workers, "frames": frames, "window": window, "steps": steps}
        rows.append(row | {"wall_s": round(found["seconds"], 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", type=Path)
    p.add_argument("--frames", type=int, nargs="*", default=[100, 400, 1000])
    p.add_argument("--resume-frames", type=int, default=100)
    p.add_argument("--ray-frames", type=int, default=48)
    p.add_argument("--ray-window", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="steps of the resume and Ray runs (long enough to cut)")
    args = p.parse_args(argv)
    from iclight.pipeline.standins import write_weights
    from iclight.store import layout

    if not (args.weights / layout.OFFSET_FILE).is_file():
        write_weights(args.weights, "tiny", matting_models=())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {"by_length": by_length(args.weights, work, args.frames)}
        print(json.dumps(report), flush=True)  # each part as it is measured
        report["resume"] = resumed(args.weights, work, args.resume_frames, args.steps)
        print(json.dumps({"resume": report["resume"]}), flush=True)
        if args.ray_frames:
            report["ray"] = on_ray(args.weights, work, args.ray_frames, args.ray_window, args.steps)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
