"""The Python API, the command line and the Cog predictor agree; the extras do what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from iclight import cli
from iclight.imaging.compositing import fit_matte, low_pass
from iclight.imaging.images import resize_and_center_crop
from iclight.jobs.recipe import read_recipe
from iclight.pipeline import Relighter
from iclight.store.fetch import sha256_of

SMALL = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1.0", "--seed", "21"]
API_SMALL_SIZES = dict(width=256, height=256, steps=2, highres_scale=1.0)
API_SMALL = dict(API_SMALL_SIZES, seed=21)


@pytest.fixture
def mask_file(tmp_path: Path, subject_array: np.ndarray) -> Path:
    m = np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8)
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    return path


def _run(argv: list[str], weights_dir: Path) -> int:
    return cli.main([*argv, "--weights", str(weights_dir), "--device", "cpu"])


def _relight(weights_dir: Path, subject: Path, background: Path, out: Path, *extra: str) -> int:
    argv = ["relight", str(subject), str(background), "--prompt", "sun", *SMALL, *extra, "-o", str(out)]
    return _run(argv, weights_dir)


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_cli_api_and_predictor_agree(
    weights_dir: Path, relighter: Relighter, image_files, mask_file: Path, tmp_path: Path, cog_predict
) -> None:
    subject, background = image_files
    out = tmp_path / "out"
    assert _relight(weights_dir, subject, background, out, "--output-format", "png") == 0
    cli_img = _pixels(out / "subject-21-0.png")

    api_img = np.asarray(relighter.relight(subject, background, "sun", **API_SMALL).images[0])
    assert np.array_equal(cli_img, api_img)

    files = cog_predict(subject, background, prompt="sun", seed=21, output_format="png", **API_SMALL_SIZES)
    assert np.array_equal(_pixels(Path(files[0])), cli_img)


def test_sidecar_and_embedded_recipe_reproduce(weights_dir: Path, image_files, mask_file, tmp_path: Path) -> None:
    subject, background = image_files
    out = tmp_path / "out"
    extra = ["--mask", str(mask_file), "--number-of-images", "2", "--output-format", "webp", "--output-quality", "90"]
    assert _relight(weights_dir, subject, background, out, *extra) == 0
    second = out / "subject-21-1.webp"
    recipe = json.loads(second.with_suffix(".json").read_text())
    assert recipe["parameters"]["seed"] == 21 and recipe["index"] == 1
    assert recipe["parameters"]["number_of_images"] == 2
    assert recipe["inputs"]["mask"]["sha256"] and recipe["weights"] and recipe["versions"]["torch"]
    assert read_recipe(second) == recipe  # the image carries it too

    again = tmp_path / "again"
    assert _run(["reproduce", str(second.with_suffix(".json")), "-o", str(again)], weights_dir) == 0
    assert np.array_equal(_pixels(again / "subject-21-1.webp"), _pixels(second))


def test_an_fc_relight_records_its_model_and_reproduces(
    weights_dir: Path, image_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--model fc` loads fc alone; its recipe says fc, and `reproduce` makes the same pixels whatever
    ICLIGHT_MODEL the shell has."""
    subject, _ = image_files
    out = tmp_path / "out"
    argv = ["relight", str(subject), "--prompt", "sun", *SMALL, "--model", "fc", "--light-source", "Top Light"]
    argv += ["--output-format", "png", "--matting", "none"]  # the whole frame: no matte to wait for
    assert _run([*argv, "--lowres-denoise", "0.7", "--no-highres-pass", "-o", str(out)], weights_dir) == 0
    (image,) = out.glob("*.png")
    recipe = json.loads(image.with_suffix(".json").read_text())["parameters"]
    assert (recipe["model"], recipe["lowres_denoise"], recipe["highres_pass"]) == ("fc", 0.7, False)
    assert Image.open(image).size == (256, 256)  # the low-res pass's image
    monkeypatch.setenv("ICLIGHT_MODEL", "fbc")
    assert _run(["reproduce", str(image.with_suffix(".json")), "-o", str(tmp_path / "again")], weights_dir) == 0
    assert np.array_equal(_pixels(tmp_path / "again" / image.name), _pixels(image))


def test_png_carries_its_recipe(weights_dir: Path, image_files, mask_file, tmp_path: Path) -> None:
    subject, background = image_files
    assert (
        _relight(weights_dir, subject, background, tmp_path / "o", "--mask", str(mask_file), "--output-format", "png")
        == 0
    )
    assert read_recipe(tmp_path / "o" / "subject-21-0.png")["parameters"]["prompt"] == "sun"


def test_mask_bypasses_background_removal(relighter: Relighter, image_files, mask_file, monkeypatch) -> None:
    from iclight.matting import mattes as matting

    def no_rmbg(*a, **k):
        raise AssertionError("background removal ran")

    monkeypatch.setattr(matting.Matter, "estimate", no_rmbg)
    subject, background = image_files
    out = relighter.relight(subject, background, "sun", mask=mask_file, **API_SMALL)
    assert np.array_equal(out.matte, np.asarray(Image.open(mask_file), np.float32) / 255.0)
    grey = out.subject_on_grey[out.matte == 0]
    assert np.all(grey == 127)  # neutral grey outside the mask, not black


def test_detail_transfer(relighter: Relighter, background_array) -> None:
    rng = np.random.default_rng(5)
    subject = np.clip(rng.normal(128, 60, (256, 256, 3)), 0, 255).astype(np.uint8)  # fine texture everywhere
    mask = np.zeros((256, 256), np.uint8)
    mask[48:208, 64:192] = 255
    kw = dict(mask=mask, **API_SMALL)
    plain = np.asarray(relighter.relight(subject, background_array, "sun", **kw).images[0])
    sharp = np.asarray(relighter.relight(subject, background_array, "sun", detail_transfer=1.0, **kw).images[0])
    half = np.asarray(relighter.relight(subject, background_array, "sun", detail_transfer=0.5, **kw).images[0])
    inside = mask == 255
    assert np.array_equal(plain[~inside], sharp[~inside])  # nothing changes outside the matte

    def agreement(x: np.ndarray) -> float:
        hx = (x.astype(np.float32) - low_pass(x, 1.0))[inside]
        hs = (subject.astype(np.float32) - low_pass(subject, 1.0))[inside]
        return float(np.corrcoef(hx.ravel(), hs.ravel())[0, 1])

    assert agreement(plain) < 0.2
    assert agreement(sharp) > 0.8
    assert agreement(plain) < agreement(half) < agreement(sharp)


def test_keep_background(relighter: Relighter, image_files, mask_file, background_array) -> None:
    subject, background = image_files
    out = relighter.relight(subject, background, "sun", mask=mask_file, keep_background=True, **API_SMALL)
    img = np.asarray(out.images[0])
    m = fit_matte(np.asarray(Image.open(mask_file), np.float32) / 255.0, 256, 256)[..., 0]
    bg = resize_and_center_crop(np.asarray(Image.open(background).convert("RGB")), 256, 256)
    assert np.array_equal(img[m == 0], bg[m == 0])
    assert not np.array_equal(img[m == 1], bg[m == 1])


def test_save_matte(weights_dir: Path, image_files, mask_file, tmp_path: Path) -> None:
    subject, background = image_files
    assert _relight(weights_dir, subject, background, tmp_path, "--mask", str(mask_file), "--save-matte") == 0
    assert np.array_equal(_pixels(tmp_path / "subject-21-matte.png")[..., 0], np.asarray(Image.open(mask_file)))
    assert (tmp_path / "subject-21-subject-on-grey.png").is_file()


def test_help_reads_like_a_manual(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["relight", "--help"])
    text = capsys.readouterr().out
    for part in (
        "--light-source",
        "Left Light",
        "--detail-transfer",
        "--keep-background",
        "examples:",
        "environment (every variable: docs/configuration.md):",
        "ICLIGHT_WEIGHTS_DIR",
        "outputs:",
    ):
        assert part in text, part


def test_a_recipe_written_by_an_earlier_version_reproduces_its_pixels(
    weights_dir: Path, subject_array: np.ndarray, background_array: np.ndarray, tmp_path: Path
) -> None:
    """tests/data/recipes: a recipe and its image from version 0.2.0 (before the relight became one
    checked value, before clip_skip), with the same inputs in another place: the same pixels."""
    stored = DATA / "recipes"
    recipe = json.loads((stored / "v0.2.0-designed-light.json").read_text())
    files = {"subject_image": subject_array, "background_image": background_array}
    files["mask"] = np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8)
    for name, pixels in files.items():
        path = tmp_path / Path(recipe["inputs"][name]["path"]).name
        Image.fromarray(pixels).save(path)
        assert sha256_of(path) == recipe["inputs"][name]["sha256"]  # the very inputs
        recipe["inputs"][name]["path"] = str(path)
    moved = tmp_path / "recipe.json"
    moved.write_text(json.dumps(recipe))
    assert _run(["reproduce", str(moved), "-o", str(tmp_path / "again")], weights_dir) == 0
    got, want = _pixels(tmp_path / "again" / "subject-77-0.png"), _pixels(stored / "v0.2.0-designed-light.png")
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert d.mean() <= 0.5 and np.percentile(d, 99) <= 2, (d.mean(), d.max())  # the parity tolerance; equal here


def test_every_command_offers_the_options_it_takes_from_the_one_table(capsys) -> None:
    import re

    from iclight.core import options as O

    for command, table in (("relight", O.RELIGHT), ("sequence", (*O.RELIGHT, *O.SEQUENCE))):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        shown = capsys.readouterr().out.split("examples:")[0]  # the options, not the examples after them
        for option in table:
            offered = re.search(re.escape(option.cli_flag) + r"(?![-\w])", shown) is not None
            wanted = option.kind is not None and not (command == "sequence" and option.single)
            assert offered == wanted, (command, option.name)
    assert "--clip-skip" in shown and "--compute-normal" not in shown and "--masks" in shown


@pytest.mark.parametrize("command", ["relight", "sequence", "batch", "reproduce", "ui", "weights"])
def test_each_commands_help_shows_its_own_examples(command: str, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    examples = text.split("examples:", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in examples.splitlines() if "python -m iclight" in line]
    assert lines and all(f"python -m iclight {command}" in line or "iclight.weights" in line for line in lines)
