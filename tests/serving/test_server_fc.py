"""Integration: the real Cog HTTP server over the fc predictor (`cog-fc.yaml`'s, served here through
the predictor stub variable as `cog serve -f cog-fc.yaml` would), four predictions at once."""

from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from cogserver import bytes_uri, cog_server, decode, image_uri, predict
from conftest import _subject
from PIL import Image

pytestmark = pytest.mark.server

FAST = dict(prompt="warm sunlight", width=256, height=256, steps=2, highres_scale=1.0, output_format="png")
SLOW = FAST | {"steps": 40}  # long enough to cancel mid-batch


@pytest.fixture(scope="module")
def server(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    env = {"COG_PREDICT_TYPE_STUB": "predict_fc.py:Predictor", "COG_MAX_CONCURRENCY": "4"}
    env["ICLIGHT_BATCH_WINDOW_MS"] = "50"
    with cog_server(weights_dir, tmp_path_factory.mktemp("fc-server"), **env) as url:
        yield url


def _uri(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return bytes_uri(buf.getvalue(), f"image/{fmt.lower()}")


def _pixels(out: dict) -> list[np.ndarray]:
    assert out["status"] == "succeeded", out.get("error")
    return [np.asarray(decode(uri).convert("RGB"), np.int16) for uri in out["output"]]


def _at_once(url: str, inputs: list[dict], ids: list[str] | None = None) -> list[dict]:
    out: list[dict | None] = [None] * len(inputs)

    def go(i: int) -> None:
        for _ in range(100):  # a slot is released a moment after its answer: a client retries a 409
            if ids:
                r = requests.put(f"{url}/predictions/{ids[i]}", json={"input": inputs[i]}, timeout=300)
            else:
                r = requests.post(f"{url}/predictions", json={"input": inputs[i]}, timeout=300)
            if r.status_code != 409:
                break
            time.sleep(0.1)
        out[i] = r.json()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    return threads, out


def test_outputs_come_in_the_hosted_fc_order(server: str, weights_dir: Path) -> None:
    """The hosted fc model lists its images as they were made (fbc's, last-made first)."""
    from iclight import Relighter

    kw = dict(seed=9, light_source="Left Light", number_of_images=2, **FAST)
    served = _pixels(predict(server, subject_image=image_uri(Image.fromarray(_subject())), **kw))
    del kw["output_format"]
    made = Relighter.load(weights_dir, device="cpu", model="fc").relight(_subject(), None, **kw).images
    made = [np.asarray(image, np.int16) for image in made]
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(served, made, strict=True))
    assert np.abs(served[0] - made[1]).mean() > 2


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "CMYK"])
def test_subjects_the_hosted_fc_code_refuses_are_relit(server: str, mode: str) -> None:
    """The hosted fc code asserts three channels; ours relights these (16-bit and CMYK as TIFF). The
    16-bit subject spans the full range, the grey one's levels times 257: its matte is the grey one's."""
    base = Image.fromarray(_subject())
    grey = np.asarray(base.convert("L"), np.uint16) * 257
    image = Image.fromarray(grey) if mode == "I;16" else base.convert(mode)  # uint16: I;16
    out = predict(server, subject_image=_uri(image, "TIFF" if mode == "CMYK" else "PNG"), **FAST)
    assert [p.shape for p in _pixels(out)] == [(256, 256, 3)]


@pytest.mark.parametrize(
    ("name", "value"),
    [("lowres_denoise", 0.05), ("light_source", "Ambient"), ("light_source", "Use Background Image"), ("steps", 0)],
)
def test_bad_values_fail_naming_the_input(server: str, name: str, value: object) -> None:
    out = predict(server, subject_image=image_uri(Image.fromarray(_subject())), **FAST | {name: value})
    assert out["status"] == "failed" and f"{name}: " in out["error"]


def test_concurrent_predictions_a_bad_one_and_a_canceled_one(server: str) -> None:
    """Four at once share a batch; a bad one fails alone, a canceled one ends while the others finish."""
    subject = image_uri(Image.fromarray(_subject()))
    inputs = [dict(subject_image=subject, seed=i, light_source="Right Light", **FAST) for i in range(4)]
    inputs[2]["lowres_denoise"] = 2.0
    threads, got = _at_once(server, inputs)
    for t in threads:
        t.join()
    assert [g["status"] for g in got] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert "lowres_denoise: 2.0 is out of range" in got[2]["error"]
    ids = [f"p{uuid.uuid4().hex[:12]}" for _ in range(3)]
    threads, got = _at_once(server, [dict(subject_image=subject, seed=i, **SLOW) for i in range(3)], ids)
    time.sleep(0.5)
    deadline = time.monotonic() + 20
    while requests.post(f"{server}/predictions/{ids[1]}/cancel", timeout=10).status_code == 404:
        assert time.monotonic() < deadline, "the prediction never arrived"
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert [g["status"] for g in got] == ["succeeded", "canceled", "succeeded"]
    assert predict(server, subject_image=subject, **FAST)["status"] == "succeeded"
