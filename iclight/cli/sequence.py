"""`iclight sequence`: a video's frames or a product's views relit with one light."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from ..core import options as O
from ..core.hooks import Hooks
from ..jobs.manifest import make_job, safe_name
from ..jobs.run import relight_one
from .options import (
    ENVIRONMENT,
    OUTPUTS,
    add_model_options,
    add_options,
    epilog,
    files,
    given,
    identity,
    job_settings,
    load_relighter,
)

EXAMPLES = """\
python -m iclight sequence turntable.mp4 studio.jpg --prompt "soft studio light" -o out
python -m iclight sequence views/ --prompt "sunset" --light-source "Left Light" --window 8 --consistency 0.5 -o out
python -m iclight sequence walk.mov street.mp4 --prompt "neon" --background-fit loop --start 0 --end 120 -o out
python -m iclight sequence spin.mp4 --prompt "golden hour" --hdri sky.exr --hdri-turn 3 -o out
    (run the same command again to go on after the last finished window)"""


def register(command) -> None:
    p = command(
        "sequence",
        "relight a video, a folder of frames or a product's views with one light",
        "Relight every frame of INPUT (a video, or a folder of images in name order) against BACKGROUND "
        "with one consistent light (docs/sequences.md). Writes each frame as NAME-frame-NNNNN.FMT, the "
        "video (MP4/H.264, else WebM/VP9, with the source's audio) where INPUT is one, and NAME.json, the "
        "recipe (`iclight reproduce NAME.json` makes the same frames).",
        epilog(EXAMPLES, OUTPUTS, ENVIRONMENT),
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="a video file or a folder of images")
    p.add_argument(
        "background", type=Path, nargs="?",
        help="the background: a photo, or a video or a folder of images (frame k under frame k; optional with a "
        "synthetic light)",
    )  # fmt: skip
    add_model_options(p, sequence=True)
    add_options(p, O.SEQUENCE)
    p.set_defaults(run=cmd_sequence)


def cmd_sequence(args: argparse.Namespace) -> int:
    entry = {"id": safe_name(args.input.stem)[:100], "sequence": str(args.input)}
    entry |= {"background": args.background and str(args.background)}
    entry |= {k: v for k, v in files(args).items() if k != "mask"}
    entry |= {k: str(v) if isinstance(v, Path) else v for k, v in given(args, O.SEQUENCE).items()}
    named = identity(args)
    job = make_job(entry, job_settings(args), Path.cwd(), str(args.input), identity=named)
    named.contents.save()
    with FramesBar() as bar:
        record = relight_one(load_relighter(args), job, args.out, Hooks(step_progress=False, frames_done=bar))
    for path in record["outputs"]:
        print(path)
    return 0


class FramesBar:
    """Frames done of all, seconds per frame and time left (tqdm), from the run's first report:
    a run that goes on after an earlier one counts only its own frames in its pace."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, initial=done, unit="frame", desc="frames", dynamic_ncols=True)
        else:
            self.bar.update(done - self.bar.n)

    def __enter__(self) -> FramesBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
