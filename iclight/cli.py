"""Command line: relight one subject, a whole batch, or reproduce an output from its recipe."""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import constants as C
from .imaging import IMAGE_SUFFIXES, ImageInputError
from .recipe import make_recipe, read_recipe, save_with_recipe
from .validation import InputError

log = logging.getLogger("iclight")

EPILOG = textwrap.dedent(
    """\
    examples:
      python -m iclight relight examples/astronaut.png examples/coffee.png \\
          --prompt "sunshine from window" --seed 12345 -o out
      python -m iclight relight subject.png bg.jpg --prompt "neon light" --mask subject-mask.png \\
          --detail-transfer 0.8 --keep-background --save-matte -o out
      python -m iclight batch photos/ --background studio.jpg --background street.jpg \\
          --prompt "soft window light" -o out        # run it again to resume
      python -m iclight reproduce out/astronaut-12345-0.json -o again

    outputs:
      Each image NAME.FMT comes with NAME.json, its recipe (every parameter, the seed,
      the sha256 of the inputs and of the weights, package versions); the same recipe
      is embedded in the image (PNG text, or EXIF ImageDescription for jpg and webp).

    environment:
      ICLIGHT_WEIGHTS_DIR   weights folder (default: weights/ at the repository root)
      ICLIGHT_DEVICE        auto (default), cpu or cuda
      ICLIGHT_WEIGHTS_URL   mirror to fetch missing weights from (default: the Hugging Face Hub)
      ICLIGHT_OFFLINE=1     never download; fail at once when weights are missing
    """
)

EXTRAS_HELP = {
    "mask": "use this matte (white = subject) instead of background removal; a subject with "
    "a real alpha channel is used the same way",
    "detail_transfer": "0..1: restore the subject's fine detail (text, logos, faces) inside the matte (default 0)",
    "keep_background": "composite the relit subject over the background's own pixels",
    "save_matte": "also save the matte and the subject-on-grey that conditioned the model",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_model_options(p: argparse.ArgumentParser, with_prompt: bool = True) -> None:
    """Every hosted input but the images, from the one contract in `constants`."""
    g = p.add_argument_group("relighting options (the hosted model's inputs)")
    for spec in C.INPUTS:
        if spec.type is object or (spec.name == "prompt" and not with_prompt):
            continue
        helptext = spec.description
        if spec.choices is not None:
            helptext += f"; one of: {', '.join(map(str, spec.choices))}"
        elif spec.ge is not None:
            helptext += f"; {spec.ge:g} to {spec.le:g}"
        if spec.type is bool:
            g.add_argument(_flag(spec.name), action="store_true", help=helptext)
            continue
        if not spec.required and spec.default is not None:
            helptext += f" (default: {spec.default})"
        g.add_argument(
            _flag(spec.name),
            type=str if spec.type is object else spec.type,
            required=spec.required,
            default=spec.default,
            metavar=spec.name.upper(),
            help=helptext,
        )
    e = p.add_argument_group("beyond the hosted model")
    e.add_argument("--mask", type=Path, help=EXTRAS_HELP["mask"])
    e.add_argument(
        "--detail-transfer", type=float, default=0.0, metavar="STRENGTH", help=EXTRAS_HELP["detail_transfer"]
    )
    e.add_argument("--keep-background", action="store_true", help=EXTRAS_HELP["keep_background"])
    e.add_argument("--save-matte", action="store_true", help=EXTRAS_HELP["save_matte"])
    add_runtime_options(p)


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("where")
    r.add_argument("-o", "--out", type=Path, default=Path("out"), help="output folder (default: out)")
    r.add_argument(
        "--weights", type=Path, default=None, help="weights folder (default: ICLIGHT_WEIGHTS_DIR or weights/)"
    )
    r.add_argument("--device", default=None, help="auto, cpu or cuda (default: ICLIGHT_DEVICE or auto)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m iclight",
        description="Relight a subject photo so that it belongs in a background (IC-Light, background-conditioned).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description or summary, epilog=EPILOG, formatter_class=fmt
        )

    p = command(
        "relight", "relight one subject against one background", "Relight SUBJECT so that it belongs in BACKGROUND."
    )
    p.add_argument("subject", type=Path, help="the subject photo (any format Pillow reads)")
    p.add_argument("background", type=Path, nargs="?", help="the background photo (optional with a synthetic light)")
    add_model_options(p)
    p = command(
        "batch",
        "relight many subjects against one or more backgrounds, resumable",
        "Relight every subject in SUBJECTS (a folder, or a text file listing one path per line) against every "
        "--background. Finished outputs are skipped when run again.",
    )
    p.add_argument("subjects", type=Path, help="folder of images, or a text file with one image path per line")
    p.add_argument("--background", type=Path, action="append", default=[], help="a background (repeatable)")
    add_model_options(p)
    p = command("reproduce", "make an output again from its sidecar JSON or from the image itself")
    p.add_argument("recipe", type=Path, help="NAME.json, or an image that carries a recipe")
    add_runtime_options(p)
    return parser


@dataclass
class Job:
    subject: Path
    background: Path | None
    stem: str


def relight_args(args: argparse.Namespace) -> dict[str, Any]:
    names = [s.name for s in C.INPUTS if s.type is not object and s.name not in ("output_format", "output_quality")]
    kw = {n: getattr(args, n) for n in names}
    kw.update(detail_transfer=args.detail_transfer, keep_background=args.keep_background)
    return kw


def run_job(relighter, job: Job, kw: dict[str, Any], args: argparse.Namespace) -> list[Path]:
    result = relighter.relight(job.subject, job.background, mask=args.mask, **kw)
    files = {"subject_image": job.subject, "background_image": job.background, "mask": args.mask}
    weights, device = relighter.weights_hashes(), str(relighter.device)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, image in enumerate(result.images):
        path = args.out / f"{job.stem}-{result.seed}-{i}.{args.output_format}"
        recipe = make_recipe(
            {**kw, "output_format": args.output_format, "output_quality": args.output_quality},
            result.seed,
            i,
            files,
            weights,
            device,
        )
        save_with_recipe(image, path, args.output_format, args.output_quality, recipe)
        written.append(path)
    if args.save_matte:
        from PIL import Image

        Image.fromarray((result.matte * 255).round().astype("uint8")).save(args.out / f"{job.stem}-matte.png")
        Image.fromarray(result.subject_on_grey).save(args.out / f"{job.stem}-subject-on-grey.png")
    return written


def load_relighter(args: argparse.Namespace):
    from .pipeline import Relighter

    return Relighter.load(args.weights, device=args.device)


def cmd_relight(args: argparse.Namespace) -> int:
    relighter = load_relighter(args)
    for path in run_job(relighter, Job(args.subject, args.background, args.subject.stem), relight_args(args), args):
        print(path)
    return 0


def list_subjects(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    lines = [line.strip() for line in source.read_text().splitlines()]
    return [
        (source.parent / line) if not Path(line).is_absolute() else Path(line)
        for line in lines
        if line and not line.startswith("#")
    ]


def done_marker(args: argparse.Namespace, stem: str) -> Path:
    return args.out / f".done-{stem}"


def cmd_batch(args: argparse.Namespace) -> int:
    backgrounds = args.background or [None]
    jobs = [
        Job(s, b, s.stem if b is None else f"{s.stem}__{b.stem}")
        for s in list_subjects(args.subjects)
        for b in backgrounds
    ]
    todo = [j for j in jobs if not done_marker(args, j.stem).exists()]
    print(f"{len(jobs)} jobs: {len(jobs) - len(todo)} already done, {len(todo)} to run")
    failures: list[tuple[Job, str]] = []
    relighter = load_relighter(args) if todo else None
    kw = relight_args(args)
    for job in tqdm(todo, desc="batch", unit="job"):
        try:
            written = run_job(relighter, job, kw, args)
        except (InputError, ImageInputError, ValueError, OSError) as e:
            failures.append((job, str(e)))
            continue
        done_marker(args, job.stem).write_text("\n".join(p.name for p in written))
    print(f"done: {len(todo) - len(failures)} ran, {len(jobs) - len(todo)} skipped, {len(failures)} failed")
    for job, reason in failures:
        print(f"  FAILED {job.subject}" + (f" + {job.background}" if job.background else "") + f": {reason}")
    return 1 if failures else 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    recipe = read_recipe(args.recipe)
    params = dict(recipe["parameters"])
    fmt, quality = params.pop("output_format"), params.pop("output_quality")
    inputs = recipe["inputs"]
    ns = argparse.Namespace(
        **vars(args),
        output_format=fmt,
        output_quality=quality,
        save_matte=False,
        mask=Path(inputs["mask"]["path"]) if inputs.get("mask") else None,
    )
    bg = Path(inputs["background_image"]["path"]) if inputs.get("background_image") else None
    subject = Path(inputs["subject_image"]["path"])
    relighter = load_relighter(args)
    written = run_job(relighter, Job(subject, bg, subject.stem), params, ns)
    index = recipe["index"]
    print(written[index])
    return 0


COMMANDS = {"relight": cmd_relight, "batch": cmd_batch, "reproduce": cmd_reproduce}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return COMMANDS[args.command](args)
    except (InputError, ImageInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
