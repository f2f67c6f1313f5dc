"""`iclight sequence`: a video's frames or a product's views relit with one light."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..constants import SEQUENCE_MAX_WINDOW as MAX_WINDOW
from ..jobs import SEQUENCE, defaults, make_job, relight_one, safe_name
from ..validation import InputError
from .options import add_model_options, job_settings, load_relighter


def register(command) -> None:
    p = command(
        "sequence",
        "relight a video, a folder of frames or a product's views with one light",
        "Relight every frame of INPUT (a video, or a folder of images in name order) against BACKGROUND "
        "with one consistent light (docs/sequences.md). Writes each frame as NAME-frame-NNNNN.FMT, the "
        "video (MP4/H.264, else WebM/VP9, with the source's audio) where INPUT is one, and NAME.json, the "
        "recipe (`iclight reproduce NAME.json` makes the same frames).",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="a video file or a folder of images")
    p.add_argument("background", type=Path, nargs="?", help="the background photo (optional with a synthetic light)")
    add_model_options(p)
    g = p.add_argument_group("sequence")
    g.add_argument("--consistency", type=float, default=SEQUENCE["consistency"], metavar="GAMMA",
                   help="0..1: consistent light attention's mix (0: every frame on its own; default 0.5)")  # fmt: skip
    g.add_argument("--independent-noise", action="store_true", help="a seed per frame (default: one noise for all)")
    g.add_argument("--no-smooth-mattes", action="store_true", help="leave each frame's estimated matte as it is")
    g.add_argument("--window", type=int, default=SEQUENCE["window"],
                   help=f"frames diffused together, 1 to {MAX_WINDOW} (default {SEQUENCE['window']})")  # fmt: skip
    g.add_argument("--layers", default=SEQUENCE["layers"],
                   help="the attention layers consistency acts on: up-but-last (Light-A-Video's) or a regular "
                   "expression over the UNet's module names")  # fmt: skip
    g.add_argument("--masks", type=Path, default=None, help="a folder with one mask per frame, in name order")
    g.add_argument("--start", type=int, default=0, help="the first frame (default 0)")
    g.add_argument("--end", type=int, default=None, help="the frame to stop before (default: the last)")
    g.add_argument("--stride", type=int, default=1, help="every N-th frame (default 1)")
    p.set_defaults(run=cmd_sequence)


def cmd_sequence(args: argparse.Namespace) -> int:
    if args.mask is not None:
        raise InputError("--mask: a sequence takes one mask per frame: --masks FOLDER")
    entry = {"id": safe_name(args.input.stem)[:100], "sequence": str(args.input)}
    entry |= {"background": args.background and str(args.background), "masks": args.masks and str(args.masks)}
    entry |= {"consistency": args.consistency, "shared_noise": not args.independent_noise}
    entry |= {"smooth_mattes": not args.no_smooth_mattes, "window": args.window, "layers": args.layers}
    entry |= {"start": args.start, "end": args.end, "stride": args.stride}
    job = make_job(entry, defaults(job_settings(args)), Path.cwd(), str(args.input), None, False, args.light_map)
    for path in relight_one(load_relighter(args), job, args.out)["outputs"]:
        print(path)
    return 0
