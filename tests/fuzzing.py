"""Hypothesis strategies over every input of a relight: the hosted 17, the extras of
`Relighter.relight`, and images of any mode, size and kind (PIL image, array or file).

Valid values are drawn small (1 step, 256 or 320 px, at most 2 images) so that an example costs
a fraction of a second on the tiny stand-ins; wild values (out of range, NaN, infinities, huge
integers, empty and long strings, wrong types) are drawn for any input."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from iclight.core import constants as C
from iclight.core import light as lighting
from iclight.core import options as O
from iclight.core.light import Fill, Light

# Every raw mode Pillow builds from bytes, with the bytes a pixel takes.
MODES = {
    "1": 1 / 8, "L": 1, "P": 1, "RGB": 3, "RGBA": 4, "RGBX": 4, "RGBa": 4, "CMYK": 4, "YCbCr": 3,
    "LAB": 3, "HSV": 3, "I": 4, "F": 4, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
}  # fmt: skip
FILE_FORMATS = ("PNG", "TIFF", "JPEG", "WEBP", "GIF", "BMP")
# The names an input error may start with: every input and option.
NAMES = {s.name for s in C.INPUTS} | set(O.BY_NAME) | set(lighting.FIELDS) | {"frames"}

WILD = st.sampled_from(
    [None, math.nan, math.inf, -math.inf, -1, 0, 2**64, 2**70, -(2**70), 1e308, -0.0, "", "12", "abc", [], {}, True,
     "warm", "#12345", "#gggggg", "rgb(1,2,3)", (255, 0, 0), (300, -1, 0)]
) | st.text(max_size=20) | st.floats()  # fmt: skip
TEXT = st.text(max_size=40) | st.text(min_size=2000, max_size=3000) | st.just("")
SMALL = {  # the valid values of the inputs that set an example's cost
    "width": st.sampled_from([256, 320]),
    "height": st.sampled_from([256, 320]),
    "steps": st.just(1),
    "highres_scale": st.floats(1.0, 1.3),
    "number_of_images": st.integers(1, 2),
    "compute_normal": st.sampled_from([False, False, False, True]),
}


def sizes() -> st.SearchStrategy[tuple[int, int]]:
    """Mostly ordinary (small), else from 1 pixel to thin strips, both ways."""
    side = st.integers(8, 48)
    strip = st.tuples(st.integers(1, 12), st.integers(100, 600))
    tiny = st.tuples(st.integers(1, 10), st.integers(1, 10))
    ordinary = st.tuples(side, side)
    return st.one_of(*[ordinary] * 8, tiny, strip, strip.map(lambda s: s[::-1]))


@st.composite
def pil_images(draw: st.DrawFn) -> Image.Image:
    mode = draw(st.sampled_from(sorted(MODES)))
    w, h = draw(sizes())
    seed = draw(st.integers(0, 2**16))
    count = math.ceil(w * MODES[mode]) * h if mode == "1" else int(w * h * MODES[mode])
    data = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    return Image.frombytes(mode, (w, h), data)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    w, h = draw(sizes())
    channels = draw(st.sampled_from([3, None, 1, 2, 3, 4, 3]))
    shape = (h, w) if channels is None else (h, w, channels)
    dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "int64", "float32", "float64", "bool"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arr = rng.normal(0.5, 1.0, shape) * (255 if dtype.startswith(("u", "i")) else 1)
    if dtype.startswith("float") and draw(st.booleans()):
        arr.flat[: arr.size // 3] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return arr.astype(dtype) if dtype != "bool" else arr > 0.5


def as_file(img: Image.Image, fmt: str, folder: Path, name: str) -> Path | None:
    """The image saved as `fmt`, or None where Pillow cannot save its mode so."""
    path = folder / f"{name}.{fmt.lower()}"
    try:
        img.save(path, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    return path


@st.composite
def images(draw: st.DrawFn, folder: Path, name: str) -> Any:
    """A PIL image, an array or a file of any format, or something that is not an image at all."""
    kind = draw(st.sampled_from(["pil", "array", "file", "pil", "array", "file", "junk"]))
    if kind == "array":
        return draw(arrays())
    if kind == "junk":
        return draw(st.sampled_from([folder / "missing.png", b"\x89PNG", 12, "", folder]))
    img = draw(pil_images())
    if kind == "pil":
        return img
    path = as_file(img, draw(st.sampled_from(FILE_FORMATS)), folder, name)
    return path if path is not None else as_file(img, "TIFF", folder, name) or as_file(img, "PNG", folder, name)


def truncated(img: Image.Image, folder: Path) -> Path:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    path = folder / "truncated.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def valid_value(spec: C.InputSpec) -> st.SearchStrategy[Any]:
    """A valid value for one hosted input (not the images), small where it sets the cost."""
    if spec.name in SMALL:
        return SMALL[spec.name]
    if spec.choices is not None:
        return st.sampled_from(list(spec.choices))
    if spec.type is bool:
        return st.booleans()
    if spec.type is str:
        return TEXT
    if spec.name == "seed":
        return st.none() | st.integers(C.SEED_MIN, C.SEED_MAX)
    lo, hi = spec.ge, spec.le
    return st.floats(lo, hi) if spec.type is float else st.integers(int(lo), int(hi))


@st.composite
def hosted_values(draw: st.DrawFn, api: bool = True) -> dict[str, Any]:
    """The hosted inputs but the images, all valid or one of them wild. `api`: those
    `Relighter.relight` takes (the output's format and quality are the predictor's)."""
    skip = {"subject_image", "background_image"} | ({"output_format", "output_quality"} if api else set())
    specs = [s for s in C.INPUTS if s.name not in skip]
    wild = draw(st.one_of(st.none(), st.none(), st.none(), st.sampled_from([s.name for s in specs])))
    return {s.name: draw(WILD if s.name == wild else valid_value(s), s.name) for s in specs}


def fraction() -> st.SearchStrategy[float]:
    return st.floats(0, 1)


@st.composite
def lights(draw: st.DrawFn, wild: bool) -> Light:
    """A designed light; `wild`: any of its settings may be anything."""
    w = (lambda s: s | WILD) if wild else (lambda s: s)
    fill = draw(st.none() | st.builds(Fill, angle=w(st.floats(-720, 720)), color=w(colours()), strength=w(fraction())))
    return Light(
        angle=draw(st.none() | w(st.floats(-720, 720))),
        color=draw(w(colours())),
        bright=draw(w(st.floats(0, 255))),
        dark=draw(w(st.floats(0, 255))),
        shape=draw(w(st.sampled_from(lighting.SHAPES))),
        x=draw(w(fraction())),
        y=draw(w(fraction())),
        radius=draw(w(st.floats(0.01, 4))),
        fill=fill,
    )


def colours() -> st.SearchStrategy[Any]:
    return st.sampled_from(["white", "#ff8800", "#FFF", "orange", "#000000"])


@st.composite
def extras(draw: st.DrawFn, folder: Path) -> dict[str, Any]:
    """Up to three keywords of `Relighter.relight` beyond the hosted inputs; one of them may be wild."""
    valid: dict[str, st.SearchStrategy[Any]] = {
        "mask": images(folder, "mask"),
        "detail_transfer": fraction(),
        "keep_background": st.booleans(),
        "light": lights(wild=False),
        "light_map": images(folder, "light_map"),
        "light_mix": fraction(),
        "keep_colors": fraction(),
        "matting": st.sampled_from(C.MATTING_CHOICES),
        "clip_skip": st.sampled_from(O.CLIP_SKIPS),
    }
    names = draw(st.lists(st.sampled_from(sorted(valid)), max_size=3, unique=True), "extras")
    wild = draw(st.one_of(st.none(), st.none(), st.sampled_from(names))) if names else None
    found = {n: draw(valid[n], n) for n in names if n != wild}
    if wild is not None:
        found[wild] = draw(lights(wild=True) if wild == "light" else WILD, wild)
    return found


@st.composite
def file_bytes(draw: st.DrawFn) -> tuple[bytes, str]:
    """An image file's bytes and MIME type (any mode, size and format Pillow writes), or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=64)), "image/png"
    img = draw(pil_images())
    for fmt in (draw(st.sampled_from(FILE_FORMATS)), "TIFF", "PNG"):
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return buf.getvalue(), f"image/{fmt.lower()}"
    return b"", "image/png"
