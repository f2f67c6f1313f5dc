"""Draw docs/lights.png: condition images the light designer makes, each under its setting.

python docs/make_light_grid.py [OUT.png]      (make docs-lights)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iclight.core import constants as C
from iclight.core.light import Fill, Light
from iclight.imaging.lighting import condition_image, design, preset

CELL, LABEL, COLUMNS = 160, 34, 5
GRID: list[tuple[str, Light]] = [
    ("Left Light (preset)", preset(C.LEFT_LIGHT)),
    ("Top Light (preset)", preset(C.TOP_LIGHT)),
    ("Ambient (preset)", preset(C.AMBIENT)),
    ("angle 45", Light(angle=45)),
    ("angle 225", Light(angle=225)),
    ("angle 0, orange", Light(angle=0, color="orange")),
    ("angle 135, #3366ff", Light(angle=135, color="#3366ff")),
    ("angle 90, 255 to 0", Light(angle=90, bright=255, dark=0)),
    ("spot 0.5, 0.5, r 0.5", Light(shape="spot")),
    ("spot 0.5, 0.1, gold", Light(shape="spot", y=0.1, radius=0.4, color="gold")),
    ("left + blue rim right", Light(angle=180, fill=Fill(0, "#4488ff", 0.6))),
    ("warm top + cool fill", Light(angle=90, color="#ffcc88", fill=Fill(200, "#6688ff", 0.4))),
    ("spot + magenta rim", Light(shape="spot", x=0.3, color="white", fill=Fill(0, "magenta", 0.7))),
    ("teal, 200 to 60", Light(angle=300, color="teal", bright=200, dark=60)),
]


def background(width: int, height: int) -> np.ndarray:
    """A made-up scene for the mix cell: a sky over a field."""
    y = np.linspace(0, 1, height)[:, None, None]
    sky, field = np.array([120, 170, 230]), np.array([70, 120, 60])
    image = np.where(y < 0.55, sky * (1 - 0.4 * y), field * (1.2 - 0.4 * y))
    return np.broadcast_to(image, (height, width, 3)).clip(0, 255).astype(np.uint8).copy()


def cells() -> list[tuple[str, np.ndarray]]:
    found = [(label, design(light, CELL, CELL)) for label, light in GRID]
    scene = background(CELL, CELL)
    found.append(("scene + Right Light, mix 0.5", condition_image(C.RIGHT_LIGHT, scene, CELL, CELL, mix=0.5)))
    return found


def draw(out: Path) -> Path:
    items = cells()
    rows = -(-len(items) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * CELL, rows * (CELL + LABEL)), "white")
    pen = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, (label, image) in enumerate(items):
        x, y = (i % COLUMNS) * CELL, (i // COLUMNS) * (CELL + LABEL)
        sheet.paste(Image.fromarray(image), (x, y))
        pen.text((x + 4, y + CELL + 4), label, fill="black", font=font)
    sheet.save(out)
    return out


if __name__ == "__main__":
    print(draw(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("lights.png"))))
