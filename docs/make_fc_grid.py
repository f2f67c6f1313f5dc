"""Draw docs/fc-lights.png: the fc model's light sources, each as the light its first pass starts
from and as relit on random stand-in weights (they show what the code does with each light, not a
real relight: the real weights cannot be shipped here).

python docs/make_fc_grid.py [OUT.png] [--weights DIR]      (make docs-fc)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iclight import Relighter
from iclight.core import constants as C
from iclight.imaging.lighting import light_background
from iclight.pipeline.standins import write_tiny_weights

CELL, LABEL = 192, 30
SIZE = dict(width=256, height=256, steps=12, seed=11, highres_pass=False, matting="none")
NOTE = "relit rows: random stand-in weights, not the real model"


def subject() -> np.ndarray:
    """A made-up photo: a warm ball on a table against a wall."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float64)
    image = np.where(yy[..., None] < 170, [150, 140, 130], [90, 70, 50]).astype(np.float64)
    ball = (xx - 128) ** 2 + (yy - 120) ** 2 < 60**2
    image[ball] = [210, 120, 60]
    return image.astype(np.uint8)


def cells(weights: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    relighter = Relighter.load(weights, device="cpu", model="fc", matting_choice="none")
    found = []
    for source in C.FC_LIGHT_SOURCES:
        light = light_background(source, 256, 256, None, C.FC)
        shown = np.full((256, 256, 3), 127, np.uint8) if light is None else light  # no light: noise
        relit = relighter.relight(subject(), None, "sunlight", model="fc", light_source=source, **SIZE).images[0]
        found.append((source if light is not None else "None (from noise)", shown, np.asarray(relit)))
    return found


def draw(out: Path, weights: Path) -> Path:
    items = cells(weights)
    sheet = Image.new("RGB", (len(items) * CELL, 2 * (CELL + LABEL) + LABEL), "white")
    pen = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for i, (label, light, relit) in enumerate(items):
        x = i * CELL
        for row, (image, caption) in enumerate(((light, label), (relit, "relit (stand-ins)"))):
            y = row * (CELL + LABEL)
            sheet.paste(Image.fromarray(image).resize((CELL, CELL)), (x, y))
            pen.text((x + 4, y + CELL + 4), caption, fill="black", font=font)
    pen.text((4, 2 * (CELL + LABEL) + 6), NOTE, fill="black", font=font)
    sheet.save(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path, nargs="?", default=Path(__file__).with_name("fc-lights.png"))
    p.add_argument("--weights", type=Path, default=None, help="default: tiny stand-ins in a temporary folder")
    args = p.parse_args()
    weights = args.weights or write_tiny_weights(Path(tempfile.mkdtemp()) / "weights", matting_models=())
    print(draw(args.out, weights))


if __name__ == "__main__":
    main()
