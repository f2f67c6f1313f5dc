"""Light from an HDRI: an equirectangular panorama as the background condition and the light.

The background-conditioned model needs no new weights for it. What a camera in the panorama
sees (`view`: a perspective view at the relight's size, turned to a heading and a pitch, with a
field of view) is the background; the panorama's dominant light (`dominant`: a sun, a window, a
softbox) seen from that camera becomes a designed light (`light_of`: its side in the picture and
its colour), mixed into the view where the light is outside it. Turning the heading by 180
degrees moves the light to the other side. The model sees one 2D light image: there are no
shadows cast from 3D, and nothing of the panorama is reflected.

Panoramas are read with OpenCV (`opencv-python-headless`, the `hdri` extra): one well-kept
library that reads Radiance `.hdr` and OpenEXR `.exr` as float radiance, 16-bit PNG and TIFF
whole, and remaps images; 8- and 16-bit images are taken as sRGB and made linear. A float map is
tone-mapped the same way every time: exposure (stops), then the ACES filmic curve (Narkowicz's
fit), then sRGB; an 8/16-bit one shows as it is at exposure 0.

Directions: longitude 0 is the panorama's centre column, 90 a quarter of its width to the right;
latitude 90 is its top row. A heading of 0 looks at longitude 0, 90 at longitude 90 (turning
right); a positive pitch looks up; the field of view is horizontal.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import constants as C
from ..core.light import Light
from ..core.validation import InputError
from .lighting import condition_image

FLOAT_SUFFIXES = (".hdr", ".exr")
ASPECT_TOLERANCE = 0.01  # width / height within 1% of 2
SMALLEST = (16, 8)  # width x height: a panorama smaller says nothing of where its light is
LIGHT_RADIUS = 20.0  # degrees around the brightest point counted as the dominant light
SHARE_FOR_FULL = 0.5  # a light with this share of the panorama's irradiance is added at full strength
DETECT_WIDTH = 256  # the panorama is looked over for its light at this width (area-averaged)


def _cv2():
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # OpenCV reads OpenEXR only when asked to
    try:
        import cv2
    except ImportError as e:
        raise InputError(f"hdri: reading a panorama needs OpenCV (the `hdri` extra): {e}") from e
    return cv2


@dataclass(frozen=True)
class Panorama:
    """Linear radiance (HxWx3 float32) and whether it came as float (an HDR) or as 8/16-bit."""

    radiance: np.ndarray
    hdr: bool


def read(source, name: str = "hdri") -> Panorama:
    """A panorama from a file (.hdr, .exr, or an 8/16-bit image) or an array (float: linear
    radiance; integers: sRGB), checked: 2:1, big enough, finite, not negative."""
    if isinstance(source, np.ndarray):
        pixels = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name}: {path} {'is a folder' if path.is_dir() else 'does not exist'}, not a panorama")
        cv2 = _cv2()
        try:
            pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error as e:  # OpenEXR off: OpenCV was imported before this module could turn it on
            raise InputError(f"{name}: {path} cannot be read here ({str(e).strip()[-200:]})") from e
        if pixels is None:
            raise InputError(f"{name}: {path} is not a panorama OpenCV can read (.hdr, .exr, or an 8/16-bit image)")
        if pixels.ndim == 3:
            pixels = pixels[..., 2::-1] if pixels.shape[2] >= 3 else pixels[..., :1]  # BGR(A) to RGB
    return Panorama(*_radiance(pixels, name))


def _radiance(pixels: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an HxW, HxWx1, HxWx3 or HxWx4 panorama, got shape {pixels.shape}")
    h, w = pixels.shape[:2]
    if w < SMALLEST[0] or h < SMALLEST[1]:
        raise InputError(f"{name}: {w}x{h} pixels is too small for a panorama; at least {SMALLEST[0]}x{SMALLEST[1]}")
    if abs(w / h - 2) > 2 * ASPECT_TOLERANCE:
        raise InputError(
            f"{name}: {w}x{h} is not an equirectangular panorama; it must be twice as wide as tall (2:1, within 1%)"
        )
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[..., :3]
    if rgb.dtype.kind == "f":
        bad = ~np.isfinite(rgb)
        if bad.any():
            raise InputError(f"{name}: {int(bad.any(axis=2).sum())} pixels hold NaN or infinite radiance")
        if (rgb < 0).any():
            raise InputError(f"{name}: {int((rgb < 0).any(axis=2).sum())} pixels hold negative radiance")
        return np.ascontiguousarray(rgb, dtype=np.float32), True
    if rgb.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: expected float radiance or 8/16-bit pixels, got {rgb.dtype}")
    return srgb_to_linear(rgb.astype(np.float32) / np.iinfo(rgb.dtype).max), False


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def aces(x: np.ndarray) -> np.ndarray:
    """The ACES filmic tone curve, Narkowicz's fit: radiance to display values in [0, 1]."""
    return np.clip((x * (2.51 * x + 0.03)) / (x * (2.43 * x + 0.59) + 0.14), 0.0, 1.0)


def tone_map(radiance: np.ndarray, exposure: float, hdr: bool) -> np.ndarray:
    """Radiance to 8-bit sRGB, the same way every time: exposure in stops, the ACES curve for a
    float map (an 8/16-bit one is display-referred already), sRGB."""
    x = radiance * np.float32(2.0**exposure)
    return np.round(linear_to_srgb(aces(x) if hdr else x) * 255.0).astype(np.uint8)


def _rotation(heading: float, pitch: float) -> np.ndarray:
    """Camera space (x right, y up, z forward) to the panorama's, for a heading and a pitch."""
    h, p = math.radians(heading), math.radians(pitch)
    up = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    turn = np.array([[math.cos(h), 0, math.sin(h)], [0, 1, 0], [-math.sin(h), 0, math.cos(h)]])
    return turn @ up


def _rays(width: int, height: int, fov: float) -> np.ndarray:
    """Every pixel's ray in camera space (HxWx3, unit length), the field of view horizontal."""
    focal = (width / 2) / math.tan(math.radians(fov) / 2)
    x = np.arange(width, dtype=np.float64) + 0.5 - width / 2
    y = height / 2 - (np.arange(height, dtype=np.float64) + 0.5)
    rays = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.float64(focal)), axis=-1)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def lon_lat(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (radians) of directions in the panorama's space."""
    x, y, z = directions[..., 0], directions[..., 1], directions[..., 2]
    return np.arctan2(x, z), np.arcsin(np.clip(y, -1.0, 1.0))


def view_radiance(pano: Panorama, width: int, height: int, heading: float, pitch: float, fov: float) -> np.ndarray:
    """What a camera at the panorama's centre sees, as radiance (bilinear, wrapping round)."""
    cv2 = _cv2()
    directions = _rays(width, height, fov) @ _rotation(heading, pitch).T
    lon, lat = lon_lat(directions)
    ph, pw = pano.radiance.shape[:2]
    u = ((lon / (2 * math.pi) + 0.5) * pw - 0.5).astype(np.float32)
    v = np.clip((0.5 - lat / math.pi) * ph - 0.5, 0, ph - 1).astype(np.float32)
    return cv2.remap(pano.radiance, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def view(pano: Panorama, width: int, height: int, heading: float, pitch: float, fov: float, exposure: float):
    """The view as the background condition: 8-bit sRGB, width x height."""
    return tone_map(view_radiance(pano, width, height, heading, pitch, fov), exposure, pano.hdr)


@dataclass(frozen=True)
class DominantLight:
    """The panorama's brightest light: its direction (degrees), its colour (the brightest channel
    1) and its share of the panorama's irradiance (0 to 1)."""

    longitude: float
    latitude: float
    color: tuple[float, float, float]
    share: float

    @property
    def hex(self) -> str:
        return "#" + "".join(f"{round(c * 255):02x}" for c in self.color)


def dominant(pano: Panorama) -> DominantLight:
    """Where the panorama's light comes from: the brightest point of its luminance (blurred a
    little, so an extended light counts whole), and what lies within LIGHT_RADIUS degrees of it."""
    cv2 = _cv2()
    small = cv2.resize(pano.radiance, (DETECT_WIDTH, DETECT_WIDTH // 2), interpolation=cv2.INTER_AREA)
    lum = small @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    wrapped = np.pad(lum, ((0, 0), (8, 8)), mode="wrap")  # longitude goes round; latitude stops at the poles
    blurred = cv2.GaussianBlur(wrapped, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)[:, 8:-8]
    row, col = np.unravel_index(int(np.argmax(blurred)), blurred.shape)
    h, w = lum.shape
    lat = math.pi / 2 - (np.arange(h) + 0.5) / h * math.pi
    lon = (np.arange(w) + 0.5) / w * 2 * math.pi - math.pi
    peak_lon, peak_lat = lon[col], lat[row]
    cos_d = np.sin(lat)[:, None] * math.sin(peak_lat) + np.cos(lat)[:, None] * math.cos(peak_lat) * np.cos(
        lon[None, :] - peak_lon
    )
    near = cos_d >= math.cos(math.radians(LIGHT_RADIUS))
    weight = np.cos(lat)[:, None] * np.ones_like(lum)  # each pixel's solid angle
    total = float((lum * weight).sum()) or 1.0
    share = float((lum * weight)[near].sum()) / total
    rgb = (small[near] * weight[near][:, None]).sum(axis=0)
    color = tuple(float(c) for c in rgb / max(float(rgb.max()), 1e-12))
    return DominantLight(math.degrees(peak_lon), math.degrees(peak_lat), color, share)


def light_of(
    light: DominantLight, heading: float, pitch: float, fov: float, aspect: float, strength: float
) -> tuple[Light | None, float | None]:
    """The designed light a camera at this heading and pitch gets from the dominant light: from
    the side the light is on in its picture, in the light's colour; mixed into the view at
    `strength` times how far outside the view the light is and how much of the panorama's light
    it is (None where that comes to nothing)."""
    lon, lat = math.radians(light.longitude), math.radians(light.latitude)
    world = np.array([math.cos(lat) * math.sin(lon), math.sin(lat), math.cos(lat) * math.cos(lon)])
    x, y, z = _rotation(heading, pitch).T @ world  # into camera space
    mix = strength * _outside(x, y, z, fov, aspect) * min(1.0, light.share / SHARE_FOR_FULL)
    if mix < 0.01:
        return None, None
    angle = math.degrees(math.atan2(y, x)) % 360
    return Light(angle=round(angle, 2), color=light.hex), round(mix, 3)


def _outside(x: float, y: float, z: float, fov: float, aspect: float) -> float:
    """0 where the direction is inside the view, 1 from half the view's size outside it on."""
    if z <= 0:
        return 1.0
    half_w = math.tan(math.radians(fov) / 2)
    half_h = half_w / aspect
    reach = max(abs(x / z) / half_w, abs(y / z) / half_h)
    return float(np.clip((reach - 1.0) / 0.5, 0.0, 1.0))


def condition(
    pano: Panorama,
    light: DominantLight,
    width: int,
    height: int,
    heading: float,
    pitch: float,
    fov: float,
    exposure: float,
    strength: float,
) -> tuple[np.ndarray, np.ndarray, Light | None, float | None]:
    """The background condition at width x height: the view with the light from outside it mixed
    in; and the view alone, the designed light and its mix."""
    seen = view(pano, width, height, heading, pitch, fov, exposure)
    designed, mix = light_of(light, heading, pitch, fov, width / height, strength)
    return condition_image(C.BACKGROUND_IMAGE, seen, width, height, designed, None, mix), seen, designed, mix


class Panoramas:
    """The last panoramas read, by file (path, size, modification time) or by an array's bytes:
    a sequence turning through one panorama, or the web app's preview, reads it once. Safe to
    share between threads (the web app previews while a relight runs)."""

    def __init__(self, kept: int = 2) -> None:
        self.kept = kept
        self._found: OrderedDict[tuple, tuple[Panorama, DominantLight]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source) -> tuple[Panorama, DominantLight]:
        key = self._key(source)
        with self._lock:
            if key not in self._found:
                pano = read(source)
                self._found[key] = (pano, dominant(pano))
            self._found.move_to_end(key)
            found = self._found[key]
            while len(self._found) > self.kept:
                self._found.popitem(last=False)
            return found

    @staticmethod
    def _key(source) -> tuple:
        if isinstance(source, np.ndarray):
            return (
                "array",
                source.shape,
                str(source.dtype),
                hashlib.blake2b(source.tobytes(), digest_size=16).digest(),
            )
        path = Path(source)
        try:
            st = path.stat()
        except OSError:
            return ("missing", str(path))
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)
