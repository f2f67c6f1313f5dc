"""Integration: the real Cog HTTP server on loopback, driven over HTTP."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import ROOT
from PIL import Image

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "PORT": str(port),
        "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
        "ICLIGHT_WEIGHTS_DIR": str(weights_dir),
        "ICLIGHT_DEVICE": "cpu",
    }
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path_factory.mktemp("server") / "server.log", "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_ready(url: str, proc: subprocess.Popen, log, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"server exited: {log.read()[-3000:]}")
        try:
            if requests.get(f"{url}/health-check", timeout=2).json().get("status") == "READY":
                return
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail("server not READY in time")


def _uri(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def _bytes_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _predict(url: str, **inputs) -> dict:
    # The server answers 409 while its one slot is still being released after the previous
    # prediction; a client waits and retries, as it would behind any busy server.
    for _ in range(100):
        r = requests.post(f"{url}/predictions", json={"input": inputs}, timeout=300)
        if r.status_code != 409:
            break
        time.sleep(0.1)
    assert r.status_code in (200, 422, 400), r.text
    return r.json()


def _decode(uri: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    img.load()
    return img


@pytest.fixture(scope="module")
def images(subject_rgba: Image.Image) -> dict[str, str]:
    rng = np.random.default_rng(0)
    bg = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    return {
        "rgba": _uri(subject_rgba),
        "bg": _uri(bg, "JPEG"),
        "grey": _uri(subject_rgba.convert("L")),
        "palette_bg": _uri(bg.convert("P")),
    }


@pytest.fixture(scope="module")
def subject_rgba() -> Image.Image:
    from conftest import _subject

    arr = _subject()
    img = Image.fromarray(arr).convert("RGBA")
    img.putalpha(Image.fromarray(np.where(arr[..., 0] > 100, 255, 0).astype(np.uint8)))
    return img


FAST = dict(prompt="warm sunlight", width=256, height=256, steps=2, highres_scale=1.0)


def test_good_prediction_webp(server: str, images: dict) -> None:
    out = _predict(server, subject_image=images["rgba"], background_image=images["bg"], seed=11, **FAST)
    assert out["status"] == "succeeded", out.get("error")
    assert len(out["output"]) == 1
    img = _decode(out["output"][0])
    assert img.format == "WEBP" and img.size == (256, 256)
    assert "Using seed: 11" in out["logs"] and "high-res diffusion:" in out["logs"]


def test_batch_png_same_seed_same_pixels(server: str, images: dict) -> None:
    kw = dict(
        subject_image=images["rgba"],
        background_image=images["bg"],
        seed=5,
        number_of_images=2,
        output_format="png",
        **FAST,
    )
    a, b = _predict(server, **kw), _predict(server, **kw)
    assert a["status"] == b["status"] == "succeeded"
    pa = [np.asarray(_decode(u)) for u in a["output"]]
    pb = [np.asarray(_decode(u)) for u in b["output"]]
    assert len(pa) == 2 and all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert _decode(a["output"][0]).format == "PNG"


def test_odd_but_valid_images(server: str, images: dict) -> None:
    """Greyscale subject (through background removal), palette background, empty negative prompt, JPEG."""
    out = _predict(
        server,
        subject_image=images["grey"],
        background_image=images["palette_bg"],
        negative_prompt="",
        output_format="jpg",
        output_quality=50,
        light_source="Left Light",
        **FAST,
    )
    assert out["status"] == "succeeded", out.get("error")
    assert _decode(out["output"][0]).format == "JPEG"


def test_seed_omitted_is_random_and_logged(server: str, images: dict) -> None:
    out = _predict(server, subject_image=images["rgba"], background_image=images["bg"], **FAST)
    assert out["status"] == "succeeded" and "Using seed: " in out["logs"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("width", 500),
        ("steps", 0),
        ("steps", 101),
        ("cfg", 40),
        ("highres_denoise", 0.05),
        ("light_source", "Moon"),
        ("output_format", "gif"),
        ("output_quality", 101),
        ("number_of_images", 13),
        ("compute_normal", "maybe"),
    ],
)
def test_bad_values_fail_naming_the_input(server: str, images: dict, name: str, value: object) -> None:
    kw = {**FAST, "subject_image": images["rgba"], "background_image": images["bg"], name: value}
    out = _predict(server, **kw)
    assert out["status"] == "failed"
    assert f"{name}: " in out["error"]


def test_bad_files_fail_naming_the_input(server: str, images: dict) -> None:
    out = _predict(server, subject_image=_bytes_uri(b"not an image at all"), background_image=images["bg"], **FAST)
    assert out["status"] == "failed" and "subject_image: " in out["error"]
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    cut = _bytes_uri(buf.getvalue()[:2000])
    out = _predict(server, subject_image=images["rgba"], background_image=cut, **FAST)
    assert out["status"] == "failed" and "background_image: " in out["error"]


def test_missing_prompt_fails(server: str, images: dict) -> None:
    out = _predict(server, subject_image=images["rgba"], background_image=images["bg"], width=256)
    assert out["status"] == "failed" and "prompt" in out["error"]


def test_still_ready_after_everything(server: str, images: dict) -> None:
    assert requests.get(f"{server}/health-check", timeout=5).json()["status"] == "READY"
    out = _predict(server, subject_image=images["rgba"], background_image=images["bg"], seed=1, **FAST)
    assert out["status"] == "succeeded"
