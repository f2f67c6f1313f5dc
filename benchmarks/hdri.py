"""What a 4k panorama costs a relight: reading it (.hdr and .exr), finding its light, and
projecting the view at the hosted defaults' sizes.

    python -m benchmarks.hdri [--width 4096] [--repeat 3]

The panorama is docs/make_hdri_grid.py's made-up evening, at the width asked (2:1), written here
as Radiance and OpenEXR; the best of `--repeat` runs of each step, in seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

from iclight.imaging import hdri

ROOT = Path(__file__).resolve().parents[1]


def _made_up(width: int):
    spec = importlib.util.spec_from_file_location("make_hdri_grid", ROOT / "docs" / "make_hdri_grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    return grid.panorama(width, width // 2)


def best(step, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return round(min(times), 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    cv2 = hdri._cv2()
    radiance = _made_up(args.width)
    found: dict = {"panorama": f"{args.width}x{args.width // 2}"}
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".hdr", ".exr"):
            path = Path(tmp) / f"pano{suffix}"
            cv2.imwrite(str(path), radiance[..., ::-1])
            found[f"read{suffix}_s"] = best(lambda p=path: hdri.read(p), args.repeat)
            found[f"size{suffix}_mb"] = round(path.stat().st_size / 1e6, 1)
    pano = hdri.Panorama(radiance, True)
    found["find_the_light_s"] = best(lambda: hdri.dominant(pano), args.repeat)
    light = hdri.dominant(pano)
    for width, height in ((512, 640), (768, 960)):
        view = lambda w=width, h=height: hdri.condition(pano, light, w, h, 30.0, 0.0, 60.0, 0.0, 0.5)  # noqa: E731
        found[f"view_and_light_{width}x{height}_s"] = best(view, args.repeat)
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
