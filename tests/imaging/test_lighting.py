"""The light designer and colour fidelity: the hosted presets to the bit, what each setting
claims, and the same pixels through the API, the command line, a manifest and reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iclight import cli
from iclight.core import constants as C
from iclight.core import light as lighting
from iclight.core.light import Fill, Light, from_fields
from iclight.core.spec import relight_spec
from iclight.core.validation import InputError
from iclight.imaging.colors import keep_colors, to_lab
from iclight.imaging.images import ImageInputError
from iclight.imaging.lighting import condition_image, design, preset

SIZES = [(512, 640), (256, 320), (1024, 256), (320, 448), (64, 64)]
SMALL = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=13)


def _hosted(light_source: str, width: int, height: int, background: np.ndarray) -> np.ndarray:
    """The hosted model's condition images, as its code makes them."""
    if light_source == C.BACKGROUND_IMAGE:
        return background
    if light_source == C.FLIPPED_BACKGROUND_IMAGE:
        return background[:, ::-1]
    if light_source == C.AMBIENT:
        return np.zeros((height, width, 3), np.uint8) + 64
    start, stop = (224, 32) if light_source in (C.LEFT_LIGHT, C.TOP_LIGHT) else (32, 224)
    if light_source in (C.LEFT_LIGHT, C.RIGHT_LIGHT):
        plane = np.tile(np.linspace(start, stop, width), (height, 1))
    else:
        plane = np.tile(np.linspace(start, stop, height)[:, None], (1, width))
    return np.stack((plane,) * 3, axis=-1).astype(np.uint8)


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize("light_source", C.LIGHT_SOURCES)
def test_the_hosted_seven_are_made_to_the_bit(light_source: str, width: int, height: int, background_array) -> None:
    want = _hosted(light_source, width, height, background_array)
    assert np.array_equal(condition_image(light_source, background_array, width, height), want)
    if preset(light_source) is not None:  # the five synthetic ones, as designed lights
        assert np.array_equal(design(preset(light_source), width, height), want)


@pytest.mark.parametrize("angle", [0, 30, 45, 90, 135, 180, 225, 270, 315, -90, 720])
def test_the_bright_side_is_where_the_angle_points(angle: float) -> None:
    image = design(Light(angle=angle), 200, 160).astype(np.float64)[..., 0]
    yy, xx = np.mgrid[0:160, 0:200]
    a = np.radians(angle)
    toward = (xx - 99.5) * np.cos(a) - (yy - 79.5) * np.sin(a) > 0  # the half facing the light
    assert image[toward].mean() > image[~toward].mean() + 50
    assert image.max() == 224 and image.min() == 32


def test_colour_and_levels() -> None:
    image = design(Light(angle=180, color="#ff8000", bright=200, dark=100), 64, 32).astype(np.float64)
    lit = image[:, 0]  # the left column: the lit side
    assert np.allclose(lit[:, 0], 200, atol=1) and np.allclose(lit[:, 1], 200 * 128 / 255, atol=1)
    assert lit[:, 2].max() == 0
    assert np.allclose(image[:, -1, 0], 100, atol=1)
    css = design(Light(angle=180, color="orange"), 8, 8)
    assert np.array_equal(css, design(Light(angle=180, color="#ffa500"), 8, 8))


def test_a_spot_is_brightest_at_its_centre() -> None:
    image = design(Light(shape="spot", x=0.25, y=0.75, radius=0.3), 201, 101)[..., 0]
    y, x = np.unravel_index(image.argmax(), image.shape)
    assert (x, y) == (50, 75) and image[y, x] >= 223
    assert image[0, -1] < image[y, x] - 150  # far from the centre: near the dark level


def test_a_second_light_brightens_its_own_side() -> None:
    key = Light(angle=180)
    both = Light(angle=180, fill=Fill(angle=0, color="#3366ff", strength=0.5))
    a, b = design(key, 100, 50).astype(np.float64), design(both, 100, 50).astype(np.float64)
    assert b[:, 80:].mean() > a[:, 80:].mean() + 30  # the right: the second light's side
    assert np.abs(b[:, :10] - a[:, :10]).mean() < 15
    right = b[:, -1] - a[:, -1]
    assert (right[:, 2] > right[:, 0] * 2).all()  # a blue light


def test_light_mix_blends_the_background_with_the_light(background_array) -> None:
    h, w = background_array.shape[:2]
    light = Light(angle=0, color="red")
    alone = condition_image(C.BACKGROUND_IMAGE, background_array, 256, 256, light)
    assert np.array_equal(condition_image(C.BACKGROUND_IMAGE, background_array, 256, 256, light, mix=1.0), alone)
    none = condition_image(C.BACKGROUND_IMAGE, background_array, 256, 256, light, mix=0.0)
    assert np.array_equal(none, background_array)
    half = condition_image(C.RIGHT_LIGHT, background_array, 256, 256, mix=0.5).astype(np.float64)
    right = design(preset(C.RIGHT_LIGHT), w, h).astype(np.float64)
    assert np.abs(half - (background_array + right) / 2).max() <= 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"light_angle": "left"}, "light_angle: 'left' is not a number"),
        ({"light_color": "#zzzzzz"}, "light_color: '#zzzzzz' is not a colour"),
        ({"light_mix": 1.5}, "light_mix: 1.5 is out of range; allowed 0 to 1"),
        ({"light_shape": "star"}, "light_shape: 'star' is not allowed"),
        ({"light_bright": 300}, "light_bright: 300 is out of range"),
        ({"fill_color": "blue"}, "fill_color: needs fill_angle"),
        ({"light_glow": 1}, "light_glow: not a relight option"),
    ],
)
def test_bad_light_settings_are_named_at_the_door(settings: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        relight_spec("s.png", "b.png", "x", **settings)


def _door(background=None, **options):
    return relight_spec("s.png", background, "x", **options)


def test_settings_that_contradict_the_preset_are_named_at_the_door(background_array) -> None:
    with pytest.raises(InputError, match=r"light_angle: 30 contradicts light_source 'Left Light' \(180\)"):
        _door(light_source=C.LEFT_LIGHT, light=Light(angle=30))
    assert np.array_equal(
        condition_image(C.LEFT_LIGHT, None, 64, 64, Light(angle=180 + 360)), _hosted(C.LEFT_LIGHT, 64, 64, None)
    )
    with pytest.raises(InputError, match="light_source: 'Ambient' contradicts light settings"):
        _door(light_source=C.AMBIENT, light_color="red")
    with pytest.raises(InputError, match="light_map: cannot be combined with light settings"):
        _door(light=Light(), light_map=background_array)
    with pytest.raises(InputError, match="light_mix: needs a background image"):
        _door(light_source=C.LEFT_LIGHT, light_mix=0.5)
    with pytest.raises(InputError, match="light_mix: light_source 'Use Background Image' has no light to mix"):
        _door(background_array, light_mix=0.5)
    with pytest.raises(InputError, match="light: give a Light or its settings"):
        _door(light=Light(), light_angle=30)


def test_a_light_is_its_fields_again() -> None:
    light = Light(angle=33, color="teal", shape="spot", x=0.2, fill=Fill(angle=200, strength=0.3))
    assert from_fields(light.fields()) == light
    assert from_fields(dict.fromkeys(lighting.FIELDS)) is None
    assert _door(light_source=C.LEFT_LIGHT, **light.fields() | {"light_angle": None}).light.color == "teal"


# -- colour fidelity -------------------------------------------------------------------------------


def _patch(rgb: tuple[int, int, int], size: int = 48) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (size, size, 3)).copy()


def test_keep_colors_takes_the_subjects_chroma_and_keeps_the_relit_lightness() -> None:
    relit, subject = _patch((150, 120, 90)), _patch((170, 60, 60))  # a warm cast over a red product
    matte = np.zeros((48, 48), np.float32)
    matte[8:40, 8:40] = 1.0
    out = keep_colors(relit, subject, matte, 1.0)
    inside, outside = (slice(10, 38), slice(10, 38)), matte == 0
    lab_out, lab_subject, lab_relit = (to_lab(x)[inside].astype(np.float64) for x in (out, subject, relit))
    # Pillow's 8-bit LAB: L* in steps of 100/255, a* and b* in steps of 1; a round trip through
    # sRGB moves each by at most 2 steps.
    assert np.abs(lab_out[..., 1:] - lab_subject[..., 1:]).max() <= 2
    assert np.abs(lab_out[..., 0] - lab_relit[..., 0]).max() <= 2
    assert np.array_equal(out[outside], relit[outside])
    assert np.array_equal(keep_colors(relit, subject, matte, 0.0), relit)
    half = keep_colors(relit, subject, matte, 0.5)[inside].astype(np.float64)
    assert np.all(np.abs(half - (relit[inside].astype(np.float64) + out[inside]) / 2) <= 1)


def test_keep_colors_through_the_relighter(relighter, subject_array, background_array) -> None:
    mask = np.zeros(subject_array.shape[:2], np.uint8)
    mask[30:100, 20:80] = 255
    plain = np.asarray(relighter.relight(subject_array, background_array, "sun", mask=mask, **SMALL).images[0])
    same = relighter.relight(subject_array, background_array, "sun", mask=mask, keep_colors=0.0, **SMALL)
    kept = relighter.relight(subject_array, background_array, "sun", mask=mask, keep_colors=1.0, **SMALL)
    kept = np.asarray(kept.images[0])
    assert np.array_equal(np.asarray(same.images[0]), plain)
    from iclight.imaging.compositing import fit_matte

    m = fit_matte(mask.astype(np.float32) / 255, 256, 256)[..., 0]
    assert np.array_equal(kept[m == 0], plain[m == 0]) and not np.array_equal(kept, plain)


# -- every door, the same pixels ---------------------------------------------------------------------

LIGHT = {"light_angle": 30.0, "light_color": "orange", "fill_angle": 200.0, "fill_color": "#3366ff", "light_mix": 0.6}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_api_command_line_manifest_and_reproduce_agree(
    relighter, weights_dir: Path, image_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject, background = image_files
    api = relighter.relight(subject, background, "sun", **LIGHT, keep_colors=0.7, **SMALL)
    light = from_fields({k: v for k, v in LIGHT.items() if k != "light_mix"})
    same = relighter.relight(subject, background, "sun", light=light, light_mix=0.6, keep_colors=0.7, **SMALL)
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(api.images[0]))  # a Light or its settings
    want = np.asarray(api.images[0])
    monkeypatch.setenv("ICLIGHT_DEVICE", "cpu")
    common = ["--weights", str(weights_dir), "--output-format", "png"]
    sizes = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1", "--seed", "13"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LIGHT.items()] + ["--keep-colors", "0.7"]
    out = tmp_path / "cli"
    argv = ["relight", str(subject), str(background), "--prompt", "sun", *sizes, *flags, *common, "-o", str(out)]
    assert cli.main(argv) == 0
    assert np.array_equal(_pixels(out / "subject-13-0.png"), want)

    line = {"id": "lit", "subject": str(subject), "background": str(background), "prompt": "sun", "seed": 13}
    line |= LIGHT | {"keep_colors": 0.7, "width": 256, "height": 256, "steps": 2, "highres_scale": 1.0}
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps(line) + "\n")
    assert cli.main(["batch", str(manifest), *common, "-o", str(tmp_path / "batch")]) == 0
    assert np.array_equal(_pixels(tmp_path / "batch" / "lit-0.png"), want)

    again = tmp_path / "again"
    assert cli.main(["reproduce", str(out / "subject-13-0.json"), *common[:2], "-o", str(again)]) == 0
    assert np.array_equal(_pixels(again / "subject-13-0.png"), want)
    recipe = json.loads((out / "subject-13-0.json").read_text())["parameters"]
    assert recipe["light_angle"] == 30 and recipe["light_mix"] == 0.6 and recipe["keep_colors"] == 0.7


def test_a_light_map_is_the_light(relighter, image_files, tmp_path: Path, background_array) -> None:
    subject, background = image_files
    painted = tmp_path / "map.png"
    Image.fromarray(design(Light(shape="spot", x=0.8, y=0.2, color="gold"), 96, 64)).save(painted)
    got = relighter.relight(subject, None, "sun", light_map=painted, **SMALL).images[0]
    assert np.asarray(got).std() > 0
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ImageInputError, match="light_map: not an image file"):
        relighter.relight(subject, background, "sun", light_map=notes, **SMALL)
    with pytest.raises(InputError, match="compute_normal: cannot be combined with light"):
        relighter.relight(subject, background, "sun", light=Light(), compute_normal=True, **SMALL)
