"""Serving: K clients at once against the real Cog server on loopback.

    python -m benchmarks.serving [--weights DIR] [--clients 1 2 4 8] [--rounds R] [--out FILE.json]

For each K, a fresh server takes K predictions at once (`COG_MAX_CONCURRENCY=K`; K=1 is the
server as it runs without it, one at a time) and K clients each send R one-image requests in a
row, each with its own prompt and seed, at the hosted defaults unless sizes are given. After
one warm-up request, it reports images per second over the whole run and the p50 and p95 of
the requests' latencies (sent to answered), and how many requests shared each batch.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(weights: Path, out: IO, **env: str) -> tuple[subprocess.Popen, str]:
    """The Cog server (`python -m cog.server.http`) over this checkout's predictor, on a free
    loopback port, its output into `out`; `env` on top of this process's environment."""
    port = free_port()
    full_env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "ICLIGHT_WEIGHTS_DIR": str(weights),
        **env,
    }
    command = [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"]
    proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


@contextmanager
def server(weights: Path, concurrency: int, device: str, log: Path):
    env = {"ICLIGHT_DEVICE": device, "ICLIGHT_OFFLINE": "1", "COG_MAX_CONCURRENCY": str(concurrency)}
    with open(log, "w") as out:
        proc, url = start_server(weights, out, **env)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited; see {log}")
                try:
                    if requests.get(f"{url}/health-check", timeout=2).json().get("status") == "READY":
                        break
                except (requests.ConnectionError, requests.Timeout, ValueError):
                    pass
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _inputs(subject: str, background: str, i: int, sizes: dict) -> dict:
    return (
        dict(subject_image=subject, background_image=background, prompt=f"warm light {i}", seed=i, output_format="png")
        | sizes
    )


def measure(url: str, clients: int, rounds: int, sizes: dict) -> dict:
    rng = np.random.default_rng(0)
    subject = Image.fromarray(rng.integers(0, 255, (640, 512, 3), dtype=np.uint8)).convert("RGBA")  # own alpha
    subject_uri, background_uri = _uri(subject), _uri(Image.new("RGB", (640, 512), (80, 110, 190)))
    warm = requests.post(
        f"{url}/predictions", json={"input": _inputs(subject_uri, background_uri, 0, sizes)}, timeout=900
    )
    assert warm.json()["status"] == "succeeded", warm.text[:500]
    latencies: list[float] = []
    shared: list[str] = []
    failures: list[str] = []

    def client(c: int) -> None:
        for r in range(rounds):
            inputs = _inputs(subject_uri, background_uri, 1 + c * rounds + r, sizes)
            start = time.perf_counter()
            answer = requests.post(f"{url}/predictions", json={"input": inputs}, timeout=900).json()
            latencies.append(time.perf_counter() - start)
            if answer.get("status") != "succeeded":
                failures.append(str(answer.get("error")))
            shared.extend(line for line in answer.get("logs", "").splitlines() if line.startswith("shared batch"))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    p95 = statistics.quantiles(latencies, n=20, method="inclusive")[18] if len(latencies) > 1 else latencies[0]
    return {
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(p95, 2),
        "requests_in_shared_batches": len(shared),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=Path(tempfile.gettempdir()) / "iclight-serving-weights")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=2, help="requests each client sends in a row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), default=None, help="default: the hosted 512x640")
    p.add_argument("--steps", type=int, default=None, help="default: the hosted 25")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if not (args.weights / "iclight_sd15_fbc.safetensors").is_file():
        from iclight.pipeline.standins import write_weights

        write_weights(args.weights, "tiny", matting_models=("rmbg-1.4",))
        print(f"wrote tiny stand-in weights into {args.weights}")
    sizes = {} if args.size is None else {"width": args.size[0], "height": args.size[1]}
    sizes |= {} if args.steps is None else {"steps": args.steps}
    rows = []
    for k in args.clients:
        with (
            tempfile.TemporaryDirectory() as tmp,
            server(args.weights, k, args.device, Path(tmp) / "server.log") as url,
        ):
            row = measure(url, k, args.rounds, sizes) | {
                "concurrency": k,
                "device": args.device,
                "sizes": sizes or "hosted",
            }
        rows.append(row)
        print(
            f"K={k}: {row['images_per_s']:.3f} images/s, p50 {row['p50_s']:.2f} s, p95 {row['p95_s']:.2f} s, "
            f"{row['requests_in_shared_batches']}/{row['requests']} requests in shared batches, {row['failed']} failed"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
