from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iclight.core import constants as C
from iclight.imaging.images import (
    ImageInputError,
    load_image,
    load_image_and_alpha,
    resize_and_center_crop,
    save_images,
    unit_to_uint8,
)
from iclight.imaging.lighting import light_background
from iclight.imaging.tensors import to_tensor, to_uint8, to_unit


def test_to_tensor_maps_127_to_exact_zero() -> None:
    img = np.full((2, 3, 3), 127, np.uint8)
    t = to_tensor([img, img])
    assert t.shape == (2, 3, 2, 3)
    assert torch.count_nonzero(t) == 0
    assert to_tensor([np.full((1, 1, 3), 254, np.uint8)]).flatten()[0] == 1.0


def test_to_uint8_truncates_and_clips() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.5]).reshape(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8(x)[0][0, :, 0]
    assert out.tolist() == [0, 0, 127, 254, 255]  # 127.5 truncates to 127


def test_final_rule_clips_then_truncates() -> None:
    x = torch.tensor([-3.0, 0.0, 0.5, 3.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = unit_to_uint8(to_unit(x)[0])[0, :, 0]
    assert out.tolist() == [0, 127, 191, 255]


@pytest.mark.parametrize(("size", "target"), [((200, 100), (64, 64)), ((100, 300), (128, 64)), ((64, 64), (256, 320))])
def test_resize_and_center_crop_size(size: tuple[int, int], target: tuple[int, int]) -> None:
    img = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = resize_and_center_crop(img, *target)
    assert out.shape == (target[1], target[0], 3)


def test_resize_and_center_crop_keeps_the_centre() -> None:
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # a white middle third
    out = resize_and_center_crop(img, 100, 100)
    assert out[:, 10:90].min() > 250  # only the middle survives the crop


def test_each_light_source_background() -> None:
    up = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    assert light_background(C.BACKGROUND_IMAGE, 64, 32, up) is up
    assert np.array_equal(light_background(C.FLIPPED_BACKGROUND_IMAGE, 64, 32, up), up[:, ::-1])
    ambient = light_background(C.AMBIENT, 64, 32, None)
    assert ambient.shape == (32, 64, 3) and np.all(ambient == 64)
    left = light_background(C.LEFT_LIGHT, 64, 32, None)
    assert left.shape == (32, 64, 3) and left[0, 0, 0] == 224 and left[0, -1, 0] == 32
    assert np.all(left == left[:1])  # every row the same
    right = light_background(C.RIGHT_LIGHT, 64, 32, None)
    assert right[5, 0, 1] == 32 and right[5, -1, 1] == 224
    top = light_background(C.TOP_LIGHT, 64, 32, None)
    assert top[0, 3, 2] == 224 and top[-1, 3, 2] == 32 and np.all(top == top[:, :1])
    bottom = light_background(C.BOTTOM_LIGHT, 64, 32, None)
    assert bottom[0, 0, 0] == 32 and bottom[-1, 0, 0] == 224
    # linspace values are truncated, not rounded
    assert left[0, 1, 0] == int(np.linspace(224, 32, 64)[1])


def test_unknown_light_source_is_named_at_the_door() -> None:
    from iclight.core.spec import relight_spec

    with pytest.raises(ValueError, match="^light_source: 'Moon Light' is not allowed"):
        relight_spec("s.png", None, "x", light_source="Moon Light")


STRIPS = [((97, 301), (256, 320)), ((4000, 3), (512, 640)), ((33, 33), (1024, 256))]


@pytest.mark.parametrize(("size", "target"), STRIPS)
def test_an_extreme_strip_is_resampled_without_the_huge_intermediate(monkeypatch, size, target) -> None:
    """Past `LARGEST_INTERMEDIATE` only the part that stays is resampled, at the same scale: the
    hosted path's pixels within a grey level, without the intermediate (a 1x5,000 strip made 512
    px wide would be 2.6 million px tall)."""
    from iclight.imaging import images

    img = np.random.default_rng(3).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    hosted = images.resize_and_center_crop(img, *target)
    monkeypatch.setattr(images, "LARGEST_INTERMEDIATE", 0)
    boxed = images.resize_and_center_crop(img, *target)
    assert np.abs(hosted.astype(int) - boxed.astype(int)).max() <= 1
    monkeypatch.undo()
    assert images.resize_and_center_crop(np.full((5000, 1, 3), 90, np.uint8), 512, 640).shape == (640, 512, 3)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def _base() -> Image.Image:
    arr = np.random.default_rng(2).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "1", "I;16", "I", "F"])
def test_every_mode_loads_as_rgb(tmp_path: Path, mode: str) -> None:
    img = _base().convert("L").convert(mode) if mode in ("I;16", "I", "F") else _base().convert(mode)
    ext = "tiff" if mode in ("CMYK", "I", "F") else "png"
    arr = load_image(_save(img, tmp_path / f"x.{ext}"), "subject_image")
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8


def test_sixteen_bit_keeps_its_range(tmp_path: Path) -> None:
    arr16 = np.full((8, 8), 65535, np.uint16)
    arr16[0, 0] = 0
    path = _save(Image.fromarray(arr16), tmp_path / "deep.png")
    out = load_image(path, "subject_image")
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_transparent_palette_loads(tmp_path: Path) -> None:
    img = _base().convert("P")
    img.info["transparency"] = 0
    assert load_image(_save(img, tmp_path / "t.png", transparency=0), "x").shape == (20, 30, 3)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "a.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    arr = load_image(path, "subject_image")
    assert arr[0, 0, 0] > 200 and arr[0, 0, 2] < 50


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif)
    assert load_image(path, "subject_image").shape == (40, 20, 3)


def test_not_an_image_names_the_input(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("hello")
    with pytest.raises(ImageInputError, match="^background_image: not an image"):
        load_image(path, "background_image")


def test_truncated_image_names_the_input(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _base().resize((300, 300)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageInputError, match="^subject_image: "):
        load_image(path, "subject_image")


def test_pixel_limit_names_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(_base(), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageInputError, match="^subject_image: image too large"):
        load_image(path, "subject_image")


def test_missing_file_names_the_input(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="^subject_image: file not found"):
        load_image(tmp_path / "nope.png", "subject_image")


def test_arrays_and_pil_images_load() -> None:
    grey = np.zeros((9, 10), np.uint8)
    assert load_image(grey).shape == (9, 10, 3)
    assert load_image(np.zeros((9, 10, 4), np.uint8)).shape == (9, 10, 3)
    assert load_image(Image.new("LA", (10, 9))).shape == (9, 10, 3)
    with pytest.raises(ImageInputError):
        load_image(np.zeros((9, 10, 2), np.uint8))


@pytest.mark.parametrize(
    ("array", "value"),
    [
        (np.full((9, 9), 65535, np.uint16), 255),  # 16 bits: the full range
        (np.full((9, 9), 0.5, np.float32), 127),  # floats in [0, 1]
        (np.full((9, 9), np.nan, np.float64), 0),  # NaN is black, not an error
        (np.full((9, 9), 300, np.int64), 255),  # other integers: clipped to 0..255
        (np.full((9, 9), -4, np.int16), 0),
        (np.ones((9, 9), bool), 255),
    ],
)
def test_arrays_of_any_numeric_dtype_load_by_its_convention(array: np.ndarray, value: int) -> None:
    assert load_image(array)[4, 4, 0] == value


def test_lab_is_not_read_as_alpha_and_premultiplied_modes_convert() -> None:
    """LAB's second band is called A: it is a colour, not an alpha channel."""
    lab = Image.new("LAB", (9, 9), (50, 0, 0))
    assert load_image_and_alpha(lab)[1] is None
    rgb, alpha = load_image_and_alpha(Image.new("La", (9, 9), (200, 128)))
    assert rgb.shape == (9, 9, 3) and alpha is not None and abs(alpha[0, 0] - 128 / 255) < 1e-6


def test_alpha_only_when_real(tmp_path: Path) -> None:
    rgba = _base().convert("RGBA")
    assert load_image_and_alpha(_save(rgba, tmp_path / "opaque.png"))[1] is None
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgb, alpha = load_image_and_alpha(_save(rgba, tmp_path / "soft.png"))
    assert rgb.shape == (20, 30, 3)
    assert alpha is not None and alpha.shape == (20, 30) and 0.0 <= alpha.min() < alpha.max() <= 1.0
    assert load_image_and_alpha(_save(_base(), tmp_path / "rgb.png"))[1] is None
    assert load_image_and_alpha(np.asarray(rgba))[1] is not None


@pytest.mark.parametrize("fmt", C.OUTPUT_FORMATS)
def test_save_images_names_and_formats(fmt: str, tmp_path: Path) -> None:
    imgs = [np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 200, np.uint8)]
    a = save_images(imgs, fmt, 80, tmp_path / "new")
    assert [p.name for p in a] == [f"output_0.{fmt}", f"output_1.{fmt}"]
    assert [p.suffix for p in a] == [f".{fmt}"] * 2
    with Image.open(a[1]) as im:
        assert im.format == {"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[fmt]


@pytest.mark.parametrize("fmt", C.OUTPUT_FORMATS)
def test_images_encoded_side_by_side_match_one_by_one(fmt: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 255, (96, 80, 3), dtype=np.uint8) for _ in range(5)]
    together = save_images(imgs, fmt, 80, tmp_path / "together")
    for i, (img, path) in enumerate(zip(imgs, together, strict=True)):
        alone = save_images([img], fmt, 80, tmp_path / f"alone{i}")[0]
        assert path.read_bytes() == alone.read_bytes()
    assert save_images([], fmt, 80, tmp_path / "none") == []


def test_quality_changes_lossy_size(tmp_path: Path) -> None:
    img = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    low, high = save_images([img], "jpg", 5, tmp_path / "low")[0], save_images([img], "jpg", 95, tmp_path / "high")[0]
    assert low.stat().st_size < high.stat().st_size
