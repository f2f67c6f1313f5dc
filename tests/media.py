"""What the tests make to relight: clips (PyAV) whose frames show which way is up and how they
move, and panoramas with a dim sky, coloured landmarks at known longitudes and one small, very
bright sun (the values linear radiance, as an .hdr or .exr holds them)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

SUN = (60.0, 30.0)  # longitude, latitude in degrees
SUN_RGB = np.array([1.0, 0.9, 0.7]) * 2000
LANDMARKS = {0.0: (0.9, 0.1, 0.1), 90.0: (0.1, 0.8, 0.1), -90.0: (0.1, 0.1, 0.9)}  # longitude: colour


def frame(i: int, w: int = 96, h: int = 64) -> np.ndarray:
    """A frame that shows which way is up: a red block top left, a green one top right, a bar moving."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[: h // 4, : w // 4] = (230, 40, 40)
    img[: h // 4, -w // 8 :] = (40, 230, 40)
    img[-h // 6 :, 4 + 3 * i : 12 + 3 * i] = 220
    return img


def clip(path: Path, count: int = 6, rotation: int = 0, hflip: bool = False, times: list[float] | None = None,
         codec: str = "libx264", pix_fmt: str = "yuv420p", colors: list | None = None) -> Path:  # fmt: skip
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pix_fmt
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        if times is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(count):
            img = frame(i) if colors is None else np.full((64, 96, 3), colors[i], np.uint8)
            made = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times is not None:
                made.pts, made.time_base = round(times[i] * 1000), Fraction(1, 1000)
            out.mux(stream.encode(made))
        out.mux(stream.encode())
    return path


def panorama(w: int = 512, h: int = 256) -> np.ndarray:
    lat = 90 - (np.arange(h) + 0.5) / h * 180
    lon = (np.arange(w) + 0.5) / w * 360 - 180
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    sky = np.array([0.15, 0.2, 0.3]) * (1 - lat2[..., None] / 180)
    out = np.where(lat2[..., None] > 0, sky, np.array([0.08, 0.06, 0.04]))
    for centre, colour in LANDMARKS.items():
        near = (np.abs((lon2 - centre + 180) % 360 - 180) < 6) & (np.abs(lat2) < 20)
        out[near] = colour
    phi, sun_phi = np.radians(lat2), math.radians(SUN[1])
    cos_d = np.sin(phi) * math.sin(sun_phi) + np.cos(phi) * math.cos(sun_phi) * np.cos(np.radians(lon2 - SUN[0]))
    d = np.degrees(np.arccos(np.clip(cos_d, -1, 1)))
    out[d < 2.0] = SUN_RGB
    return out.astype(np.float32)
