"""The condition image the UNet sees in place of a background: the light.

In the background-conditioned model the light choice *is* the background condition. The hosted
model offers seven; here any of them is made from a description (`core/light.py`), from a light
map (any image, resized and cropped as a background is), or blended into the uploaded background
(`light_mix`), so a scene keeps its own content and still gets light from a chosen side. The door
(`core/spec.py`) has checked that the light source, the background and the light agree.

The text-conditioned model (fc) sees no background: its light is where its first pass starts (its
latent, noised to `lowres_denoise`). Its gradients run from 255 to 0, its "None" is no light at
all (the pass starts from noise), and the designed lights and light maps serve it the same way.
"""

from __future__ import annotations

import math

import numpy as np

from ..core import constants as C
from ..core.light import DEFAULT_ANGLE, PRESET_ANGLES, Light, rgb
from .images import resize_and_center_crop


def preset(light_source: str) -> Light | None:
    """The designed light that makes a hosted synthetic light exactly (None for the two
    background choices, which are the uploaded image)."""
    if light_source == C.AMBIENT:
        return Light(bright=C.AMBIENT_GREY, dark=C.AMBIENT_GREY)
    angle = PRESET_ANGLES.get(light_source)
    return None if angle is None else Light(angle=angle)


def light_background(
    light_source: str, width: int, height: int, uploaded: np.ndarray | None, model: str = C.FBC
) -> np.ndarray | None:
    """The image that conditions the UNet for a hosted light source (before resizing); for the fc
    model, the light its first pass starts from (None for its "None")."""
    if light_source == C.NO_LIGHT:
        return None
    if light_source == C.BACKGROUND_IMAGE:
        return uploaded
    if light_source == C.FLIPPED_BACKGROUND_IMAGE:
        return np.ascontiguousarray(np.fliplr(uploaded))
    if light_source == C.AMBIENT:
        return np.zeros((height, width, 3), dtype=np.uint8) + C.AMBIENT_GREY
    bright, dark = (C.FC_LIGHT_BRIGHT, C.FC_LIGHT_DARK) if model == C.FC else (C.LIGHT_BRIGHT, C.LIGHT_DARK)
    ramps = {
        C.LEFT_LIGHT: (bright, dark, False),
        C.RIGHT_LIGHT: (dark, bright, False),
        C.TOP_LIGHT: (bright, dark, True),
        C.BOTTOM_LIGHT: (dark, bright, True),
    }
    start, stop, vertical = ramps[light_source]
    if vertical:
        plane = np.tile(np.linspace(start, stop, height)[:, None], (1, width))
    else:
        plane = np.tile(np.linspace(start, stop, width), (height, 1))
    return np.stack((plane,) * 3, axis=-1).astype(np.uint8)


def design(light: Light, width: int, height: int, default_angle: float = DEFAULT_ANGLE) -> np.ndarray:
    """The condition image of `light` at width x height, uint8 RGB."""
    base = _shape(light, width, height, default_angle)
    image = base[..., None] * _unit_color("light_color", light.color)
    if light.fill is not None:
        f = light.fill
        lift = _gradient(f.angle, width, height, light.bright, 0.0)
        image = image + f.strength * lift[..., None] * _unit_color("fill_color", f.color)
    return image.clip(0, 255).astype(np.uint8)  # truncation, as the hosted gradients are made


def _unit_color(name: str, color: str) -> np.ndarray:
    return np.asarray(rgb(name, color), np.float64) / 255.0


def _shape(light: Light, width: int, height: int, default_angle: float) -> np.ndarray:
    if light.shape == "spot":
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        radius = light.radius * min(width, height)
        d2 = ((xx - light.x * (width - 1)) ** 2 + (yy - light.y * (height - 1)) ** 2) / radius**2
        return light.dark + (light.bright - light.dark) * np.exp(-2.0 * d2)
    angle = default_angle if light.angle is None else light.angle
    return _gradient(angle, width, height, light.bright, light.dark)


def _gradient(angle: float, width: int, height: int, bright: float, dark: float) -> np.ndarray:
    """From `bright` on the side the light comes from to `dark` on the far side, as np.linspace
    makes each step (so the axis-aligned angles give the hosted gradients to the bit)."""
    a = math.radians(angle)
    # Rounded so that cos(90 degrees) is 0, not 6e-17: the hosted directions stay exact.
    dx, dy = round(-math.cos(a), 12), round(math.sin(a), 12)  # toward the far side, y down
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    along = (x if dx >= 0 else (width - 1) - x) * abs(dx) + (y if dy >= 0 else (height - 1) - y) * abs(dy)
    extent = (width - 1) * abs(dx) + (height - 1) * abs(dy)
    if extent == 0:
        return np.full((height, width), bright, np.float64)
    plane = along * ((dark - bright) / extent) + bright
    return np.where(along >= extent, dark, plane)  # np.linspace's last step is `stop` itself


def condition_image(
    light_source: str,
    background: np.ndarray | None,
    width: int,
    height: int,
    light: Light | None = None,
    light_map: np.ndarray | None = None,
    mix: float | None = None,
    model: str = C.FBC,
) -> np.ndarray | None:
    """What conditions the UNet for these settings (before it is resized and cropped); for the
    fc model, the light its first pass starts from (None: from noise).

    With none of `light`, `light_map` and `mix`, this is the hosted model's choice. With `mix`,
    the light is made at the background's size and blended into it: 0 the background alone, 1
    the light alone."""
    mixing = mix is not None and mix < 1.0
    size = (background.shape[1], background.shape[0]) if mixing else (width, height)
    lit = _light(light_source, background, *size, light, light_map, model)
    if not mixing:
        return lit
    if lit.shape[:2] != background.shape[:2]:  # a light map of another size
        lit = resize_and_center_crop(lit, *size)
    return ((1.0 - mix) * background.astype(np.float64) + mix * lit.astype(np.float64)).round().astype(np.uint8)


def _light(
    light_source: str,
    background: np.ndarray | None,
    width: int,
    height: int,
    light: Light | None,
    light_map: np.ndarray | None,
    model: str,
) -> np.ndarray | None:
    if light_map is not None:
        return light_map
    if light is None:
        return light_background(light_source, width, height, background, model)
    angle = PRESET_ANGLES.get(light_source, DEFAULT_ANGLE)
    return design(light, width, height, default_angle=angle)
