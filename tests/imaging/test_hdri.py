"""Light from an HDRI (docs/lighting.md): panoramas made here (a dim sky, coloured landmarks at
known longitudes, one small and very bright sun), written as .hdr, .exr and 16-bit PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from media import LANDMARKS, SUN, panorama
from PIL import Image

from iclight import cli
from iclight.core.spec import relight_spec
from iclight.core.validation import InputError
from iclight.imaging import hdri
from iclight.pipeline import Relighter

try:
    cv2 = hdri._cv2()  # as the package imports it: with OpenEXR on
except InputError:
    pytest.skip("the `hdri` extra is not installed", allow_module_level=True)

FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("panoramas")
    pano = panorama()
    found = {}
    for suffix in (".hdr", ".exr"):
        found[suffix] = folder / f"sky{suffix}"
        assert cv2.imwrite(str(found[suffix]), pano[..., ::-1])
    # 16-bit sRGB, 11 stops down so the sun is not clipped
    scaled = hdri.linear_to_srgb(pano * 2.0**-11)
    found[".png"] = folder / "sky16.png"
    assert cv2.imwrite(str(found[".png"]), np.round(scaled * 65535).astype(np.uint16)[..., ::-1])
    return found


def _expected_angle(heading: float) -> float:
    """The side of the picture the sun is on, from spherical trigonometry (pitch 0)."""
    lon, lat = math.radians(SUN[0] - heading), math.radians(SUN[1])
    return math.degrees(math.atan2(math.sin(lat), math.cos(lat) * math.sin(lon))) % 360


def _reference_view(pano: np.ndarray, width: int, height: int, heading: float, fov: float) -> np.ndarray:
    """The view at pitch 0, written another way: each pixel's longitude and latitude from its
    offset in the image plane, the panorama's nearest pixel."""
    ph, pw = pano.shape[:2]
    focal = (width / 2) / math.tan(math.radians(fov) / 2)
    x = (np.arange(width) + 0.5 - width / 2) / focal
    y = (height / 2 - (np.arange(height) + 0.5)) / focal
    lon = np.radians(heading) + np.arctan(x)[None, :] + 0 * y[:, None]
    lat = np.arctan2(y[:, None], np.sqrt(1 + x[None, :] ** 2))
    u = np.floor((lon / (2 * math.pi) + 0.5) % 1.0 * pw).astype(int) % pw
    v = np.clip(np.floor((0.5 - lat / math.pi) * ph).astype(int), 0, ph - 1)
    return pano[v, u]


@pytest.mark.parametrize("heading", [0.0, 90.0])
def test_the_view_is_that_part_of_the_panorama(files, heading: float) -> None:
    pano = hdri.read(files[".exr"])
    seen = hdri.view_radiance(pano, 160, 120, heading, 0.0, 60.0)
    want = _reference_view(panorama(), 160, 120, heading, 60.0)
    calm = want.max(axis=2) < 100  # not the sun's edge, where bilinear and nearest part most
    assert np.median(np.abs(seen - want)[calm]) < 1e-3 and np.mean(np.abs(seen - want)[calm]) < 0.02
    centre = seen[50:70, 70:90].mean(axis=(0, 1))
    assert np.allclose(centre, LANDMARKS[heading], atol=0.05)  # the landmark straight ahead


def test_the_light_follows_the_sun_and_flips_with_the_heading(files) -> None:
    lights = {suffix: hdri.dominant(hdri.read(path)) for suffix, path in files.items()}
    for found in lights.values():
        assert abs(found.longitude - SUN[0]) < 3 and abs(found.latitude - SUN[1]) < 3 and found.share > 0.5
        assert found.hex == lights[".exr"].hex or np.abs(np.subtract(found.color, lights[".exr"].color)).max() < 0.02
    assert np.allclose(lights[".exr"].color, (1.0, 0.9, 0.7), atol=0.02)  # the sun's own colour
    angles = {}
    for heading, full in ((0.0, True), (180.0, True), (90.0, False)):  # at 90 the sun is at the view's edge
        light, mix = hdri.light_of(lights[".hdr"], heading, 0.0, 60.0, 1.0, 0.5)
        assert abs((light.angle - _expected_angle(heading) + 180) % 360 - 180) < 3
        assert mix == 0.5 if full else 0 < mix < 0.5
        angles[heading] = light.angle
    assert abs((angles[0.0] + angles[180.0]) % 360 - 180) < 1  # turned round: the other side
    inside, mix = hdri.light_of(lights[".hdr"], 60.0, 30.0, 60.0, 1.0, 0.5)
    assert inside is None and mix is None  # the sun is in the view: the view has it


def test_a_relight_with_a_panorama_at_every_door(relighter: Relighter, files, weights_dir: Path, tmp_path: Path):
    from conftest import _subject

    subject = tmp_path / "subject.png"
    Image.fromarray(_subject()).save(subject)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((128, 96), 255, np.uint8)).save(mask)
    options = dict(hdri=files[".hdr"], hdri_heading=90.0, hdri_fov=70.0, hdri_exposure=1.0, mask=mask) | FAST
    api = np.asarray(relighter.relight(subject, None, "sun", **options).images[0])
    turned = np.asarray(relighter.relight(subject, None, "sun", **options | {"hdri_heading": 270.0}).images[0])
    assert not np.array_equal(api, turned)  # another heading, another view and light
    flags = ["--hdri", str(files[".hdr"]), "--hdri-heading", "90", "--hdri-fov", "70", "--hdri-exposure", "1"]
    flags += ["--mask", str(mask), "--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1"]
    where = ["--weights", str(weights_dir), "--device", "cpu", "--output-format", "png"]
    argv = ["relight", str(subject), "--prompt", "sun", *flags, "--seed", "8", *where, "-o", str(tmp_path / "a")]
    assert cli.main(argv) == 0
    out = tmp_path / "a" / "subject-8-0.png"
    assert np.array_equal(np.asarray(Image.open(out)), api)
    recipe = json.loads(out.with_suffix(".json").read_text())
    assert recipe["inputs"]["hdri"]["sha256"] and recipe["parameters"]["hdri_heading"] == 90
    line = {"id": "pano", "subject": str(subject), "mask": str(mask), "prompt": "sun", "hdri": str(files[".hdr"])}
    line |= {"hdri_heading": 90, "hdri_fov": 70, "hdri_exposure": 1, "seed": 8, "width": 256, "height": 256}
    line |= {"steps": 2, "highres_scale": 1.0, "output_format": "png"}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    assert cli.main(["batch", str(tmp_path / "jobs.jsonl"), *where[:4], "-o", str(tmp_path / "b")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "pano-0.png")), api)
    assert cli.main(["reproduce", str(out.with_suffix(".json")), *where[:4], "-o", str(tmp_path / "r")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r" / "subject-8-0.png")), api)


def test_a_turntable_turns_the_heading_with_each_frame(relighter: Relighter, files) -> None:
    from conftest import _subject

    frames = [_subject(), np.roll(_subject(), 5, axis=1)]
    masks = [np.full((128, 96), 255, np.uint8)] * 2
    options = dict(hdri=files[".exr"], masks=masks, consistency=0, shared_noise=False) | FAST
    turned = relighter.relight_sequence(frames, None, "sun", hdri_turn=90.0, **options)
    alone = relighter.relight(frames[1], None, "sun", **FAST | {"hdri": files[".exr"], "hdri_heading": 90.0,
                                                               "mask": masks[1], "seed": 9})  # fmt: skip
    d = np.abs(np.asarray(turned.images[1], np.int16) - np.asarray(alone.images[0], np.int16))
    assert d.mean() <= 0.5 and np.percentile(d, 99) <= 2  # the shared-batch tolerance


def test_bad_panoramas_are_named(files, tmp_path: Path) -> None:
    square = tmp_path / "square.hdr"
    cv2.imwrite(str(square), np.ones((64, 64, 3), np.float32))
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    tiny = np.ones((1, 2, 3), np.float32)
    nan = np.ones((16, 32, 3), np.float32)
    nan[3, 4] = np.nan
    negative = np.ones((16, 32, 3), np.float32) * -1
    cases = [
        (lambda: hdri.read(square), "hdri: 64x64 is not an equirectangular panorama; it must be twice as wide"),
        (lambda: hdri.read(tmp_path / "junk.exr"), "hdri: .*junk.exr is not a panorama OpenCV can read"),
        (lambda: hdri.read(tiny), "hdri: 2x1 pixels is too small for a panorama"),
        (lambda: hdri.read(nan), "hdri: 1 pixels hold NaN or infinite radiance"),
        (lambda: hdri.read(negative), "hdri: 512 pixels hold negative radiance"),
    ]
    pano = files[".hdr"]
    cases += [
        (lambda: relight_spec("s.png", "b.png", "x", hdri=pano), "hdri: cannot be combined with a background"),
        (lambda: relight_spec("s.png", None, "x", hdri=pano, light_angle=30), "hdri: cannot be combined with light"),
        (lambda: relight_spec("s.png", None, "x", hdri=pano, light_source="Left Light"), "light_source: 'Left Light'"),
        (lambda: relight_spec("s.png", None, "x", hdri_heading=90, light_source="Left Light"), "hdri_heading: needs"),
    ]
    for call, words in cases:
        with pytest.raises(InputError, match="^" + words):
            call()
