"""The real Cog HTTP server (`python -m cog.server.http`) on a free loopback port, and a client."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from PIL import Image

from benchmarks.serving import free_port, start_server  # noqa: F401 - free_port: for the tests


@contextmanager
def cog_server(weights_dir: Path, log_dir: Path, want: str = "READY", **env: str) -> Iterator[str]:
    """Start the server over our predictor with the tiny weights; yields its URL once its
    health check says `want`."""
    with open(log_dir / "server.log", "w+") as log:
        proc, url = start_server(weights_dir, log, **{"ICLIGHT_DEVICE": "cpu", **env})
        try:
            wait_ready(url, proc, log, want=want)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(
    url: str, proc: subprocess.Popen | None = None, log=None, timeout: float = 180, want: str = "READY"
) -> None:
    """Poll the health check until it says `want`; with `proc`, fail at once if the server exits."""
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"server exited: {log.read()[-3000:]}")
        try:
            status = requests.get(f"{url}/health-check", timeout=2).json().get("status")
            if status == want:
                return
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"server not {want} in {timeout:g} s (last said {status})")


def image_uri(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def bytes_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def predict(url: str, **inputs) -> dict:
    # The server answers 409 while its one slot is still being released after the previous
    # prediction; a client waits and retries, as it would behind any busy server.
    for _ in range(100):
        # json.dumps writes NaN and Infinity as JavaScript does (requests' json= refuses them)
        body = json.dumps({"input": inputs})
        r = requests.post(f"{url}/predictions", data=body, headers={"Content-Type": "application/json"}, timeout=300)
        if r.status_code != 409:
            break
        time.sleep(0.1)
    assert r.status_code in (200, 422, 400), r.text
    return r.json()


def uri_bytes(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def decode(uri: str) -> Image.Image:
    img = Image.open(io.BytesIO(uri_bytes(uri)))
    img.load()
    return img
