"""The light designer: the condition image the UNet sees in place of a background.

In the background-conditioned model the light choice *is* the background condition. The hosted
model offers seven; this module makes any of them from a description:

- direction: `angle` in degrees, the side the light comes from, counter-clockwise from the
  right: 0 is light from the right, 90 from the top, 180 from the left, 270 from the bottom
  (the hosted Right, Top, Left and Bottom Light, which these angles make exactly);
- colour (`#rrggbb` or a CSS colour name) and the bright and dark levels (the hosted 224 and 32);
- shape: a linear gradient, or a soft `spot` at (x, y) (fractions of the width and height from
  the top left) with a radius (a fraction of the shorter side): frontal or overhead light;
- a second light (`fill`): a rim or fill light with its own angle, colour and strength, which
  adds its bright side to the first;
- a light map: any image used as the condition, resized and cropped as a background is;
- `light_mix` blends the uploaded background with the light, so a scene keeps its own content
  and still gets light from a chosen side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import ImageColor

from . import constants as C
from .imaging import light_background, resize_and_center_crop
from .validation import InputError

SHAPES = ("linear", "spot")
BACKGROUND_SOURCES = (C.BACKGROUND_IMAGE, C.FLIPPED_BACKGROUND_IMAGE)  # the uploaded image is the light
# The hosted gradient presets as angles (the side the light comes from).
PRESET_ANGLES: dict[str, float] = {C.RIGHT_LIGHT: 0.0, C.TOP_LIGHT: 90.0, C.LEFT_LIGHT: 180.0, C.BOTTOM_LIGHT: 270.0}
# Flat settings, as the command line, manifests, the web app and recipes carry them.
FIELDS: dict[str, Any] = {
    "light_angle": None,
    "light_color": None,
    "light_bright": None,
    "light_dark": None,
    "light_shape": None,
    "light_x": None,
    "light_y": None,
    "light_radius": None,
    "fill_angle": None,
    "fill_color": None,
    "fill_strength": None,
    "light_mix": None,
}


@dataclass(frozen=True)
class Fill:
    """A second light: it brightens its own side by `strength` of its bright level."""

    angle: float
    color: str = "white"
    strength: float = 0.5


@dataclass(frozen=True)
class Light:
    """A designed light. `angle` None takes the angle of a gradient `light_source` (else 180)."""

    angle: float | None = None
    color: str = "white"
    bright: float = C.LIGHT_BRIGHT
    dark: float = C.LIGHT_DARK
    shape: str = "linear"
    x: float = 0.5
    y: float = 0.5
    radius: float = 0.5
    fill: Fill | None = field(default=None)

    def check(self) -> Light:
        """This light, or an InputError naming the setting that is wrong."""
        if self.angle is not None:
            _number("light_angle", self.angle)
        rgb("light_color", self.color)
        for name, level in (("light_bright", self.bright), ("light_dark", self.dark)):
            _within(name, level, 0, 255)
        if self.shape not in SHAPES:
            raise InputError(f"light_shape: {self.shape!r} is not allowed; choose one of {list(SHAPES)}")
        for name, value in (("light_x", self.x), ("light_y", self.y)):
            _within(name, value, 0, 1)
        _within("light_radius", self.radius, 0.01, 4)
        if self.fill is not None:
            _number("fill_angle", self.fill.angle)
            rgb("fill_color", self.fill.color)
            _within("fill_strength", self.fill.strength, 0, 1)
        return self

    def fields(self) -> dict[str, Any]:
        """The flat settings that make this light again (`from_fields`)."""
        d = asdict(self)
        fill = d.pop("fill") or {}
        found = {f"light_{k}": v for k, v in d.items()}
        return found | {f"fill_{k}": v for k, v in fill.items()}


def from_fields(values: dict[str, Any]) -> tuple[Light | None, float | None]:
    """(the designed light, light_mix) from flat settings; None where no light setting is given."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise InputError(f"{unknown[0]}: not a light setting; expected one of {sorted(FIELDS)}")
    mix = values.get("light_mix")
    if mix is not None:
        mix = _within("light_mix", mix, 0, 1)
    given = {k: v for k, v in values.items() if v is not None and k != "light_mix"}
    if not given:
        return None, mix
    fill_keys = {k for k in given if k.startswith("fill_")}
    if fill_keys and "fill_angle" not in given:
        raise InputError(f"{sorted(fill_keys)[0]}: needs fill_angle, the side the second light comes from")
    light = {k.removeprefix("light_"): v for k, v in given.items() if k.startswith("light_")}
    fill = (
        Fill(**{k.removeprefix("fill_"): v for k, v in given.items() if k.startswith("fill_")}) if fill_keys else None
    )
    return Light(**light, fill=fill).check(), mix


def preset(light_source: str) -> Light | None:
    """The designed light that makes a hosted synthetic light exactly (None for the two
    background choices, which are the uploaded image)."""
    if light_source == C.AMBIENT:
        return Light(bright=C.AMBIENT_GREY, dark=C.AMBIENT_GREY)
    angle = PRESET_ANGLES.get(light_source)
    return None if angle is None else Light(angle=angle)


def rgb(name: str, color: Any) -> tuple[int, int, int]:
    """`#rrggbb`, `#rgb` or a CSS colour name, as Pillow reads them."""
    if not isinstance(color, str):
        raise InputError(f"{name}: {color!r} is not a colour; use #rrggbb or a CSS colour name")
    try:
        return ImageColor.getrgb(color)[:3]
    except ValueError:
        raise InputError(f"{name}: {color!r} is not a colour; use #rrggbb or a CSS colour name") from None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name}: {value!r} is not a number")
    return float(value)


def _within(name: str, value: Any, low: float, high: float) -> float:
    number = _number(name, value)
    if not low <= number <= high:
        raise InputError(f"{name}: {value!r} is out of range; allowed {low:g} to {high:g}")
    return number


# -- making the image ------------------------------------------------------------------------------


def design(light: Light, width: int, height: int, default_angle: float = 180.0) -> np.ndarray:
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


# -- the condition ----------------------------------------------------------------------------------


def condition_image(
    light_source: str,
    background: np.ndarray | None,
    width: int,
    height: int,
    light: Light | None = None,
    light_map: np.ndarray | None = None,
    mix: float | None = None,
) -> np.ndarray:
    """What conditions the UNet for these settings (before it is resized and cropped).

    With none of `light`, `light_map` and `mix`, this is the hosted model's choice. With `mix`,
    the light is made at the background's size and blended into it: 0 the background alone, 1
    the light alone."""
    mixing = mix is not None and mix < 1.0
    if mixing and background is None:
        raise InputError("light_mix: needs a background image to mix the light with")
    if mixing and light is None and light_map is None and light_source not in PRESET_ANGLES:
        raise InputError(f"light_mix: light_source {light_source!r} has no light to mix; pick a light or design one")
    size = (background.shape[1], background.shape[0]) if mixing else (width, height)
    lit = _light(light_source, background, *size, light, light_map)
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
) -> np.ndarray:
    if light_map is not None and light is not None:
        raise InputError("light_map: cannot be combined with light settings (light_angle, light_color, ...)")
    if (light_map is not None or light is not None) and light_source not in (C.BACKGROUND_IMAGE, *PRESET_ANGLES):
        what = "light_map" if light_map is not None else "light settings"
        raise InputError(f"light_source: {light_source!r} contradicts {what}; use a gradient or the default")
    if light_map is not None:
        return light_map
    if light is None:
        return light_background(light_source, width, height, background)
    preset = PRESET_ANGLES.get(light_source)
    if preset is not None and light.angle is not None and light.angle % 360 != preset:
        raise InputError(f"light_angle: {light.angle:g} contradicts light_source {light_source!r} ({preset:g})")
    return design(light, width, height, default_angle=180.0 if preset is None else preset)
