"""A designed light, as a value: the side it comes from, its colour, levels, shape and a second
light. `imaging/lighting.py` turns it into the condition image the UNet sees.

- direction: `angle` in degrees, the side the light comes from, counter-clockwise from the
  right: 0 is light from the right, 90 from the top, 180 from the left, 270 from the bottom
  (the hosted Right, Top, Left and Bottom Light, which these angles make exactly);
- colour (`#rrggbb` or a CSS colour name) and the bright and dark levels (the hosted 224 and 32);
- shape: a linear gradient, or a soft `spot` at (x, y) (fractions of the width and height from
  the top left) with a radius (a fraction of the shorter side): frontal or overhead light;
- a second light (`fill`): a rim or fill light with its own angle, colour and strength, which
  adds its bright side to the first.

The command line, manifests, the web app and recipes carry a light as flat settings (`FIELDS`);
`from_fields` makes the value from them and `Light.fields` gives them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import ImageColor

from . import constants as C
from .validation import InputError, number

SHAPES = ("linear", "spot")
DEFAULT_ANGLE = 180.0  # from the left, where neither the light nor a gradient light_source says
BACKGROUND_SOURCES = (C.BACKGROUND_IMAGE, C.FLIPPED_BACKGROUND_IMAGE)  # the uploaded image is the light
# The hosted gradient presets as angles (the side the light comes from).
PRESET_ANGLES: dict[str, float] = {C.RIGHT_LIGHT: 0.0, C.TOP_LIGHT: 90.0, C.LEFT_LIGHT: 180.0, C.BOTTOM_LIGHT: 270.0}
# The flat settings of a light, as the command line, manifests, the web app and recipes carry them.
FIELDS = (
    "light_angle",
    "light_color",
    "light_bright",
    "light_dark",
    "light_shape",
    "light_x",
    "light_y",
    "light_radius",
    "fill_angle",
    "fill_color",
    "fill_strength",
)


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
            number("light_angle", self.angle)
        rgb("light_color", self.color)
        for name, level in (("light_bright", self.bright), ("light_dark", self.dark)):
            number(name, level, 0, 255)
        if self.shape not in SHAPES:
            raise InputError(f"light_shape: {self.shape!r} is not allowed; choose one of {list(SHAPES)}")
        for name, value in (("light_x", self.x), ("light_y", self.y)):
            number(name, value, 0, 1)
        number("light_radius", self.radius, 0.01, 4)
        if self.fill is not None:
            if not isinstance(self.fill, Fill):
                raise InputError(f"fill_angle: expected a Fill, got {type(self.fill).__name__}")
            number("fill_angle", self.fill.angle)
            rgb("fill_color", self.fill.color)
            number("fill_strength", self.fill.strength, 0, 1)
        return self

    def fields(self) -> dict[str, Any]:
        """The flat settings that make this light again (`from_fields`)."""
        d = asdict(self)
        fill = d.pop("fill") or {}
        found = {f"light_{k}": v for k, v in d.items()}
        return found | {f"fill_{k}": v for k, v in fill.items()}


def from_fields(values: dict[str, Any]) -> Light | None:
    """The designed light the flat settings describe, checked; None where none is given."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise InputError(f"{unknown[0]}: not a light setting; expected one of {sorted(FIELDS)}")
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        return None
    fill_keys = {k for k in given if k.startswith("fill_")}
    if fill_keys and "fill_angle" not in given:
        raise InputError(f"{sorted(fill_keys)[0]}: needs fill_angle, the side the second light comes from")
    light = {k.removeprefix("light_"): v for k, v in given.items() if k.startswith("light_")}
    fill = {k.removeprefix("fill_"): v for k, v in given.items() if k.startswith("fill_")}
    return Light(**light, fill=Fill(**fill) if fill else None).check()


def no_fields() -> dict[str, None]:
    """The flat settings of no designed light."""
    return dict.fromkeys(FIELDS)


def rgb(name: str, color: Any) -> tuple[int, int, int]:
    """`#rrggbb`, `#rgb` or a CSS colour name, as Pillow reads them."""
    if not isinstance(color, str):
        raise InputError(f"{name}: {color!r} is not a colour; use #rrggbb or a CSS colour name")
    try:
        return ImageColor.getrgb(color)[:3]
    except ValueError:
        raise InputError(f"{name}: {color!r} is not a colour; use #rrggbb or a CSS colour name") from None
