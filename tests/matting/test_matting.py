"""The matting choice: rmbg-1.4 (the hosted model's), birefnet or birefnet-lite (MIT), or none;
with any but the first, a deployment boots and relights without the RMBG file (and so without
non-commercial weights). BiRefNet's doors run the lite model: a 1024x1024 matte takes 10 s on
two CPU cores, the general model's four times that."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cogserver import cog_server, decode, image_uri, predict
from PIL import Image

from iclight import cli
from iclight.core import config
from iclight.core.validation import InputError
from iclight.jobs.manifest import read_jobs
from iclight.jobs.run import execute, relight_one
from iclight.matting import mattes as matting
from iclight.pipeline import Relighter
from iclight.store import layout

SMALL = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=5)
LITE = matting.BIREFNET_LITE


@pytest.fixture(scope="module")
def without_rmbg(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("no-rmbg") / "weights"
    shutil.copytree(weights_dir, root, ignore=shutil.ignore_patterns("RMBG-1.4", ".hashes.json"))
    assert not (root / layout.RMBG_FILE).exists()
    return root


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLIGHT_OFFLINE", "1")


def _mask(subject: np.ndarray) -> np.ndarray:
    mask = np.zeros(subject.shape[:2], np.uint8)
    mask[20:100, 20:80] = 255
    return mask


def test_none_boots_and_relights_without_the_rmbg_file(
    without_rmbg: Path, offline, monkeypatch: pytest.MonkeyPatch, relighter, subject_array, background_array
) -> None:
    monkeypatch.setenv("ICLIGHT_MATTING", "none")
    lean = Relighter.load(without_rmbg, device="cpu")
    assert lean.rmbg is None and lean.matting == "none" and not lean.mattes.loaded
    assert layout.RMBG_FILE not in lean.weight_files
    mask = _mask(subject_array)
    got = lean.relight(subject_array, background_array, "sun", mask=mask, **SMALL).images[0]
    want = relighter.relight(subject_array, background_array, "sun", mask=mask, **SMALL).images[0]
    assert np.array_equal(np.asarray(got), np.asarray(want))  # the same model but the matting
    with pytest.raises(InputError, match="matting: 'none' needs a mask, or a subject with an alpha channel"):
        lean.relight(subject_array, background_array, "sun", **SMALL)
    # Another choice is loaded on first use; offline, a missing file is an input error naming matting
    # that carries the clear missing-weights message.
    missing = r"^matting: 'rmbg-1.4' is not available here \(weights missing(.|\n)*RMBG-1.4/model.safetensors\n"
    with pytest.raises(InputError, match=missing + r".*--matting rmbg-1.4"):
        lean.relight(subject_array, background_array, "sun", matting="rmbg-1.4", **SMALL)


def test_the_default_needs_the_rmbg_file(without_rmbg: Path, offline) -> None:
    with pytest.raises(layout.MissingWeightsError, match="RMBG-1.4/model.safetensors"):
        Relighter.load(without_rmbg, device="cpu")


def test_a_relight_may_ask_for_none(relighter, subject_array, background_array) -> None:
    with pytest.raises(InputError, match="matting: 'none' needs a mask"):
        relighter.relight(subject_array, background_array, "sun", matting="none", **SMALL)
    rgba = np.dstack([subject_array, _mask(subject_array)])
    assert relighter.relight(rgba, background_array, "sun", matting="none", **SMALL).images
    choices = r"\['rmbg-1.4', 'birefnet', 'birefnet-lite', 'none'\]"
    with pytest.raises(InputError, match=rf"matting: 'birefnet-xl' is not allowed; choose one of {choices}"):
        relighter.relight(subject_array, background_array, "sun", matting="birefnet-xl", **SMALL)


def test_the_configuration_knows_every_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    for choice in matting.CHOICES:
        monkeypatch.setenv("ICLIGHT_MATTING", choice)
        assert config.MATTING.read() == choice
    assert set(matting.COMMERCIAL) == set(matting.CHOICES) - {matting.RMBG}


def test_the_command_line_with_none(without_rmbg: Path, offline, image_files, tmp_path: Path, subject_array) -> None:
    subject, background = image_files
    mask = tmp_path / "mask.png"
    Image.fromarray(_mask(subject_array)).save(mask)
    sizes = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1", "--seed", "5"]
    common = [str(subject), str(background), "--prompt", "sun", *sizes, "--weights", str(without_rmbg)]
    out = tmp_path / "out"
    assert (
        cli.main(["relight", *common, "--matting", "none", "--mask", str(mask), "--device", "cpu", "-o", str(out)]) == 0
    )
    recipe = json.loads((out / "subject-5-0.json").read_text())
    assert recipe["parameters"]["matting"] == "none"
    assert cli.main(["relight", *common, "--matting", "none", "--device", "cpu", "-o", str(out)]) == 2


@pytest.mark.server
def test_a_server_without_non_commercial_weights(without_rmbg: Path, tmp_path: Path, subject_array) -> None:
    """ICLIGHT_MATTING=none: the server boots with no RMBG file and relights a subject with alpha."""
    rgba = Image.fromarray(np.dstack([subject_array, _mask(subject_array)]))
    background = Image.new("RGB", (160, 120), (90, 120, 200))
    env = {"ICLIGHT_MATTING": "none", "ICLIGHT_OFFLINE": "1", "ICLIGHT_OUTPUT_DIR": str(tmp_path / "out")}
    with cog_server(without_rmbg, tmp_path, **env) as url:
        inputs = dict(prompt="sun", width=256, height=256, steps=2, highres_scale=1.0, seed=1, output_format="png")
        ok = predict(url, subject_image=image_uri(rgba), background_image=image_uri(background), **inputs)
        opaque = predict(
            url, subject_image=image_uri(rgba.convert("RGB")), background_image=image_uri(background), **inputs
        )
    assert ok["status"] == "succeeded", ok.get("error")
    assert opaque["status"] == "failed" and "matting: 'none' needs a mask" in opaque["error"]


# -- BiRefNet through every door: the same inputs and seed give the same pixels ------------------


@pytest.fixture(scope="module")
def lite_pixels(relighter: Relighter, subject_array, background_array) -> np.ndarray:
    """The API's image with BiRefNet lite, loaded on first use by a relighter booted with RMBG-1.4."""
    assert matting.BIREFNET_LITE not in relighter.mattes.loaded
    result = relighter.relight(subject_array, background_array, "sun", matting=LITE, **SMALL)
    assert LITE in relighter.mattes.loaded and layout.BIREFNET_LITE_FILE in relighter.weight_files
    rmbg = relighter.relight(subject_array, background_array, "sun", **SMALL)
    assert not np.array_equal(result.matte, rmbg.matte)  # the choice reached the matting
    return np.asarray(result.images[0])


@pytest.fixture(scope="module")
def subject_array() -> np.ndarray:
    from conftest import _subject

    return _subject()


@pytest.fixture(scope="module")
def background_array() -> np.ndarray:
    ramp = np.linspace(0, 255, 160, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (120, 160, 3)).astype(np.uint8).copy()


def _files(tmp_path: Path, subject_array: np.ndarray, background_array: np.ndarray) -> tuple[Path, Path]:
    subject, background = tmp_path / "subject.png", tmp_path / "background.png"
    Image.fromarray(subject_array).save(subject)
    Image.fromarray(background_array).save(background)
    return subject, background


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_the_matte_is_cached_by_content(relighter: Relighter, lite_pixels, subject_array, background_array) -> None:
    calls = []
    matter = relighter.mattes.loaded[LITE]
    original = matter.estimate
    matter.estimate = lambda image: calls.append(1) or original(image)
    try:
        again = relighter.relight(subject_array, background_array, "sun", matting=LITE, **SMALL)
    finally:
        del matter.estimate
    assert np.array_equal(np.asarray(again.images[0]), lite_pixels)
    assert calls == []  # the same subject's matte came from the cache
    other = subject_array.copy()
    other[0, 0] ^= 1
    key = matting.MatteCache.key
    assert key(LITE, other) != key(LITE, subject_array) != key(matting.RMBG, subject_array)
    assert key(LITE, subject_array.reshape(96, 128, 3)) != key(LITE, subject_array)


def test_the_matte_cache_is_bounded() -> None:
    cache = matting.MatteCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(("c", str(i)), np.full((10, 10, 1), i, np.float32))
    assert [k[1] for k in cache._mattes] == ["2", "3", "4"]
    got = cache.get(("c", "2"))
    got[:] = 9  # a caller's changes stay its own
    assert cache.get(("c", "2")).max() == 2


def test_birefnet_from_the_command_line_and_reproduce(
    weights_dir: Path, lite_pixels, subject_array, background_array, tmp_path: Path
) -> None:
    subject, background = _files(tmp_path, subject_array, background_array)
    sizes = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1", "--seed", "5"]
    argv = ["relight", str(subject), str(background), "--prompt", "sun", *sizes, "--matting", LITE]
    out = tmp_path / "out"
    assert (
        cli.main([*argv, "--weights", str(weights_dir), "--device", "cpu", "-o", str(out), "--output-format", "png"])
        == 0
    )
    assert np.array_equal(_pixels(out / "subject-5-0.png"), lite_pixels)
    recipe = json.loads((out / "subject-5-0.json").read_text())
    assert recipe["parameters"]["matting"] == LITE
    assert layout.BIREFNET_LITE_FILE in recipe["weights"] and layout.RMBG_FILE not in recipe["weights"]


def test_reproduce_honours_the_recorded_matting(
    relighter: Relighter, lite_pixels, subject_array, background_array, tmp_path: Path, monkeypatch, capsys
) -> None:
    subject, background = _files(tmp_path, subject_array, background_array)
    out = tmp_path / "first"
    params = {k: v for k, v in SMALL.items()} | {"output_format": "png", "matting": LITE}
    (job,) = read_jobs(_manifest(tmp_path, subject, background, params))
    relight_one(relighter, job, out)
    recipe = next(out.glob("*.json"))
    booted: list[str | None] = []

    def load(args, matting=None, model=None):  # the relighter reproduce boots, with the matting it asks for
        booted.append(matting)
        return relighter

    monkeypatch.setattr(cli.relight, "load_relighter", load)
    assert cli.main(["reproduce", str(recipe), "-o", str(tmp_path / "again")]) == 0
    assert booted == [LITE]
    again = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.array_equal(_pixels(again), lite_pixels)


def _manifest(folder: Path, subject: Path, background: Path, params: dict) -> Path:
    manifest = folder / "jobs.jsonl"
    manifest.write_text(
        json.dumps({"subject": subject.name, "background": background.name, "prompt": "sun"} | params) + "\n"
    )
    return manifest


def test_birefnet_from_a_manifest_line(relighter: Relighter, lite_pixels, subject_array, background_array, tmp_path):
    subject, background = _files(tmp_path, subject_array, background_array)
    params = {k: v for k, v in SMALL.items()} | {"output_format": "png", "matting": LITE}
    (job,) = read_jobs(_manifest(tmp_path, subject, background, params))
    outcome = execute(relighter, job)
    assert outcome.ok, outcome.error
    assert outcome.files[0].recipe["parameters"]["matting"] == LITE
    with Image.open(io.BytesIO(outcome.files[0].data)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), lite_pixels)


def test_birefnet_from_the_web_app(relighter: Relighter, lite_pixels, subject_array, background_array, tmp_path):
    ui = pytest.importorskip("iclight.web.app")
    from iclight.store.outputs import OutputFolders

    subject, background = _files(tmp_path, subject_array, background_array)
    app = ui.RelightApp(relighter, OutputFolders(tmp_path / "outputs"))
    values = {"prompt": "sun", "output_format": "png", "matting": LITE} | {k: SMALL[k] for k in SMALL if k != "seed"}
    _, downloads, seed = app.relight(str(subject), str(background), None, SMALL["seed"], values)
    assert seed == SMALL["seed"] and np.array_equal(_pixels(Path(downloads[0])), lite_pixels)


@pytest.fixture(scope="module")
def birefnet_only(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("birefnet-only") / "weights"
    shutil.copytree(weights_dir, root, ignore=shutil.ignore_patterns("RMBG-1.4", ".hashes.json"))
    return root


def test_a_birefnet_deployment_carries_no_rmbg_file(birefnet_only: Path, offline, monkeypatch) -> None:
    monkeypatch.setenv("ICLIGHT_MATTING", LITE)
    booted = Relighter.load(birefnet_only, device="cpu")
    assert booted.matting == LITE and booted.rmbg is None
    assert layout.BIREFNET_LITE_FILE in booted.weight_files and layout.RMBG_FILE not in booted.weight_files
    monkeypatch.delenv("ICLIGHT_MATTING")
    with pytest.raises(layout.MissingWeightsError, match="RMBG-1.4/model.safetensors"):
        Relighter.load(birefnet_only, device="cpu")


def test_fetch_asks_only_for_the_matting_chosen(weights_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from iclight.store import fetch

    root = tmp_path / "w"
    shutil.copytree(weights_dir, root, ignore=shutil.ignore_patterns("RMBG-1.4", "BiRefNet_lite", ".hashes.json"))
    asked: list[list[str]] = []
    monkeypatch.setattr(fetch, "fetch_hub", lambda dest, workers=4, files=(): asked.append([f.dest for f in files]))
    for env in ("ICLIGHT_OFFLINE", "HF_HUB_OFFLINE", "ICLIGHT_WEIGHTS_URL"):
        monkeypatch.delenv(env, raising=False)
    assert cli.main(["weights", "fetch", "--dest", str(root), "--matting", "birefnet"]) == 0
    assert cli.main(["weights", "fetch", "--dest", str(root), "--matting", "none"]) == 0
    monkeypatch.setenv("ICLIGHT_MATTING", LITE)
    assert cli.main(["weights", "fetch", "--dest", str(root)]) == 0
    files = {f for choice in matting.CHOICES for f in matting.FILES[choice]}
    assert [[d for d in a if d in files] for a in asked] == [[layout.BIREFNET_FILE], [], [layout.BIREFNET_LITE_FILE]]


@pytest.mark.server
def test_a_server_with_birefnet_as_the_default(
    birefnet_only: Path, lite_pixels, tmp_path: Path, subject_array, background_array
):
    """ICLIGHT_MATTING=birefnet-lite: the server boots without the RMBG file; same pixels as the API."""
    env = {"ICLIGHT_MATTING": LITE, "ICLIGHT_OFFLINE": "1", "ICLIGHT_OUTPUT_DIR": str(tmp_path / "out")}
    subject, background = (Image.fromarray(a) for a in (subject_array, background_array))
    with cog_server(birefnet_only, tmp_path, **env) as url:
        inputs = dict(prompt="sun", width=256, height=256, steps=2, highres_scale=1.0, seed=5, output_format="png")
        got = predict(url, subject_image=image_uri(subject), background_image=image_uri(background), **inputs)
    assert got["status"] == "succeeded", got.get("error")
    assert np.array_equal(np.asarray(decode(got["output"][0]).convert("RGB")), lite_pixels)
