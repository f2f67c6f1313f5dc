"""Integration: the real Cog HTTP server on loopback, driven over HTTP."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from cogserver import bytes_uri, cog_server, decode, image_uri, predict, wait_ready
from conftest import ROOT
from fuzzing import NAMES, file_bytes, hosted_values
from hypothesis import given, settings
from PIL import Image

from iclight.core import constants as C
from iclight.core.spec import Settings

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    with cog_server(weights_dir, tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="module")
def images(subject_rgba: Image.Image) -> dict[str, str]:
    rng = np.random.default_rng(0)
    bg = Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8))
    return {
        "rgba": image_uri(subject_rgba),
        "bg": image_uri(bg, "JPEG"),
        "grey": image_uri(subject_rgba.convert("L")),
        "palette_bg": image_uri(bg.convert("P")),
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
    out = predict(server, subject_image=images["rgba"], background_image=images["bg"], seed=11, **FAST)
    assert out["status"] == "succeeded", out.get("error")
    assert len(out["output"]) == 1
    img = decode(out["output"][0])
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
    a, b = predict(server, **kw), predict(server, **kw)
    assert a["status"] == b["status"] == "succeeded"
    pa = [np.asarray(decode(u)) for u in a["output"]]
    pb = [np.asarray(decode(u)) for u in b["output"]]
    assert len(pa) == 2 and all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert decode(a["output"][0]).format == "PNG"


def test_odd_but_valid_images(server: str, images: dict) -> None:
    """Greyscale subject (through background removal), palette background, empty negative prompt, JPEG."""
    out = predict(
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
    assert decode(out["output"][0]).format == "JPEG"


def test_seed_omitted_is_random_and_logged(server: str, images: dict) -> None:
    out = predict(server, subject_image=images["rgba"], background_image=images["bg"], **FAST)
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
    out = predict(server, **kw)
    assert out["status"] == "failed"
    assert f"{name}: " in out["error"]


def test_bad_files_fail_naming_the_input(server: str, images: dict) -> None:
    out = predict(server, subject_image=bytes_uri(b"not an image at all"), background_image=images["bg"], **FAST)
    assert out["status"] == "failed" and "subject_image: " in out["error"]
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "PNG")
    cut = bytes_uri(buf.getvalue()[:2000])
    out = predict(server, subject_image=images["rgba"], background_image=cut, **FAST)
    assert out["status"] == "failed" and "background_image: " in out["error"]


def test_missing_prompt_fails(server: str, images: dict) -> None:
    out = predict(server, subject_image=images["rgba"], background_image=images["bg"], width=256)
    assert out["status"] == "failed" and "prompt" in out["error"]


@settings(max_examples=max(10, settings.default.max_examples // 20))  # each one a prediction over HTTP
@given(values=hosted_values(api=False), subject=file_bytes(), background=file_bytes())
def test_every_hosted_input_over_http_relights_or_names_an_input(
    server: str, values: dict, subject, background
) -> None:
    """The fuzzer's property (tests/pipeline/test_fuzz.py) through the real server, for the hosted 17 inputs."""
    files = {"subject_image": bytes_uri(*subject), "background_image": bytes_uri(*background)}
    if any(isinstance(v, float) and not math.isfinite(v) for v in values.values()):
        # NaN and Infinity are not JSON (RFC 8259): Cog answers without a JSON body, and stays up
        body = json.dumps({"input": values | files})
        r = requests.post(f"{server}/predictions", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code >= 400
        wait_ready(server, timeout=10)
        return
    out = predict(server, **values, **files)
    if "detail" in out:  # the server's own check of a value's type
        assert any(set(map(str, d.get("loc", []))) & NAMES for d in out["detail"]), out
    elif out["status"] == "failed":
        said = re.sub(r"^(Prediction failed: )*(\w+Error: )?", "", out["error"])  # Cog's prefixes
        assert said.split(":")[0] in NAMES, out["error"]
    else:
        assert out["status"] == "succeeded", out
        values = {k: C.default(k) if v is None else v for k, v in values.items()}  # None: the default
        s = Settings(values["width"], values["height"], 1, 1.0, values["highres_scale"], 0.5)
        assert len(out["output"]) == (9 if values["compute_normal"] else values["number_of_images"])
        assert all(decode(uri).size == s.highres_size for uri in out["output"])
    wait_ready(server, timeout=10)


def test_nan_in_a_request_leaves_the_server_ready(server: str, images: dict) -> None:
    """Found by `make fuzz`: a NaN number (not JSON, but what json.dumps writes) is answered, and
    the server takes the next prediction."""
    body = json.dumps(
        {"input": {**FAST, "width": math.nan, "subject_image": images["rgba"], "background_image": images["bg"]}}
    )
    r = requests.post(f"{server}/predictions", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code >= 400
    wait_ready(server, timeout=10)
    assert predict(server, subject_image=images["rgba"], background_image=images["bg"], **FAST)["status"] == "succeeded"


def test_still_ready_after_everything(server: str, images: dict) -> None:
    # BUSY for a moment while the last prediction's slot is released; READY soon after, never stuck.
    wait_ready(server, timeout=10)
    out = predict(server, subject_image=images["rgba"], background_image=images["bg"], seed=1, **FAST)
    assert out["status"] == "succeeded"


def _readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    after = text[text.index(marker) :]
    return after[after.index("```sh\n") + 6 : after.index("\n```", after.index("```sh"))]


def test_readme_curl_works_as_pasted(server: str, tmp_path: Path) -> None:
    """The README's request, run by bash as it is written, only pointed at this server's port."""
    script = _readme_block("<!-- tested: tests/serving/test_server.py").replace("http://localhost:5000", server)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    # 409 while the one slot is released after the previous test's prediction: wait for it.
    for _ in range(100):
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True, timeout=300)
        response = json.loads((tmp_path / "response.json").read_text())
        if response.get("status") != 409 and "capacity" not in str(response.get("detail", "")).lower():
            break
        time.sleep(0.1)
    assert response["status"] == "succeeded", response.get("error")
    assert decode(response["output"][0]).size == (768, 960)
    assert "Using seed: 12345" in response["logs"]
