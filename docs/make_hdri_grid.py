"""Draw docs/hdri.png: the condition images one made-up panorama gives at four headings, and the
panorama itself (tone-mapped), with where its light was found.

python docs/make_hdri_grid.py [OUT.png]      (make docs-hdri)
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iclight.imaging import hdri

CELL_W, CELL_H, LABEL = 192, 240, 40
HEADINGS = (0.0, 90.0, 180.0, 270.0)


def panorama(width: int = 1024, height: int = 512) -> np.ndarray:
    """A made-up evening: a graded sky, a low warm sun at longitude 120, a street of coloured
    facades on the ground, linear radiance."""
    lat = 90 - (np.arange(height) + 0.5) / height * 180
    lon = (np.arange(width) + 0.5) / width * 360 - 180
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    sky = np.array([0.25, 0.35, 0.6]) * (0.4 + 0.6 * np.cos(la)[..., None])
    ground = np.array([0.06, 0.05, 0.05])
    out = np.where(la[..., None] > 0, sky, ground)
    facades = [(-150, (0.5, 0.2, 0.15)), (-80, (0.2, 0.4, 0.55)), (-20, (0.55, 0.5, 0.3)), (40, (0.3, 0.45, 0.25))]
    for centre, colour in facades:
        near = (np.abs((np.degrees(lo) - centre + 180) % 360 - 180) < 22) & (np.degrees(la) < 18) & (la > -0.05)
        out[near] = colour
    sun_lon, sun_lat = math.radians(120), math.radians(12)
    cos_d = np.sin(la) * math.sin(sun_lat) + np.cos(la) * math.cos(sun_lat) * np.cos(lo - sun_lon)
    glow = np.exp((cos_d - 1) * 60)[..., None] * np.array([8.0, 5.0, 2.5])
    out = out + glow
    out[cos_d > math.cos(math.radians(1.5))] = np.array([3000.0, 2200.0, 1300.0])
    return out.astype(np.float32)


def draw(out: Path) -> Path:
    pano = hdri.Panorama(panorama(), True)
    light = hdri.dominant(pano)
    font = ImageFont.load_default(size=12)
    strip = Image.fromarray(hdri.tone_map(pano.radiance, -1.0, True)).resize((len(HEADINGS) * CELL_W, 2 * CELL_W))
    pen = ImageDraw.Draw(strip)
    x = (light.longitude / 360 + 0.5) * strip.width
    y = (0.5 - light.latitude / 180) * strip.height
    pen.ellipse((x - 9, y - 9, x + 9, y + 9), outline="white", width=2)
    said = f"light found: longitude {light.longitude:.0f}, latitude {light.latitude:.0f}"
    pen.text((x - 12 - pen.textlength(said, font=font), y - 6), said, fill="white", font=font)
    sheet = Image.new("RGB", (strip.width, CELL_H + LABEL + strip.height), "white")
    pen = ImageDraw.Draw(sheet)
    for i, heading in enumerate(HEADINGS):
        image, _, designed, mix = hdri.condition(pano, light, CELL_W, CELL_H, heading, 0.0, 60.0, -1.0, 0.5)
        sheet.paste(Image.fromarray(image), (i * CELL_W, 0))
        said = "no light added" if designed is None else f"light from {designed.angle:.0f} deg, mix {mix:g}"
        pen.text((i * CELL_W + 4, CELL_H + 4), f"heading {heading:.0f}", fill="black", font=font)
        pen.text((i * CELL_W + 4, CELL_H + 20), said, fill="black", font=font)
    sheet.paste(strip, (0, CELL_H + LABEL))
    sheet.save(out)
    return out


if __name__ == "__main__":
    print(draw(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("hdri.png"))))
