"""Command line: relight one subject, a whole batch, or reproduce an output from its recipe."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from . import config, fetch, layout, matting
from . import constants as C
from .imaging import ImageInputError
from .jobs import PARAMS, Job, JobFailed, defaults, make_job, read_jobs, relight_one, safe_name
from .loading import DeviceError
from .recipe import read_recipe
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
      python -m iclight batch jobs.jsonl --prompt "soft window light" -o out --ray --workers 2
      ray job submit --working-dir . -- python -m iclight batch jobs.jsonl -o /shared/out \\
          --ray auto --workers 8 --gpus-per-worker 1
      python -m iclight reproduce out/astronaut-12345-0.json -o again

    jobs (batch):
      A JSONL manifest has one job per line: "subject", "background" (optional with a
      synthetic light), "prompt", an optional "id", and any input above or extra, e.g.
        {"id": "shoe-1", "subject": "shoe.jpg", "background": "beach.jpg", "prompt": "sunset", "seed": 7}
      Relative paths are relative to the manifest. A job's files are named from its id
      (given, or derived from its inputs and settings), ID-N.FMT, so a rerun skips it.

    outputs:
      Each image NAME.FMT comes with NAME.json, its recipe (every parameter, the seed,
      the sha256 of the inputs and of the weights, package versions); the same recipe
      is embedded in the image (PNG text, or EXIF ImageDescription for jpg and webp).

    weights:
      python -m iclight weights fetch --dest weights          # or: python -m iclight.weights fetch ...
      python -m iclight weights prepare weights

    environment (every variable: docs/configuration.md):
      ICLIGHT_WEIGHTS_DIR   weights folder (default: weights/ at the repository root)
      ICLIGHT_DEVICE        auto (default), cpu or cuda
      ICLIGHT_WEIGHTS_URL   mirror to fetch missing weights from (default: the Hugging Face Hub)
      ICLIGHT_OFFLINE=1     never download; fail at once when weights are missing
      ICLIGHT_DEBUG=1       show the whole traceback of an error (as --debug does)
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


def add_model_options(p: argparse.ArgumentParser, prompt_required: bool = True) -> None:
    """Every hosted input but the images, from the one contract in `constants`."""
    g = p.add_argument_group("relighting options (the hosted model's inputs)")
    for spec in C.INPUTS:
        if spec.type is object:
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
            type=spec.type,
            required=spec.required and prompt_required,
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
    e.add_argument(
        "--matting",
        choices=matting.CHOICES,
        default=None,
        help="the matting model for a subject without mask or alpha: rmbg-1.4 (the hosted model's; "
        "non-commercial licence), birefnet or birefnet-lite (MIT licence), or none (a mask or an alpha "
        "channel is then required); default ICLIGHT_MATTING, else rmbg-1.4",
    )
    add_light_options(p)
    add_runtime_options(p)


LIGHT_OPTIONS: dict[str, tuple[type, str, str]] = {  # setting -> (type, metavar, help)
    "light_angle": (
        float,
        "DEGREES",
        "the side the light comes from, counter-clockwise from the right: 0 right, "
        "90 top, 180 left (the default), 270 bottom; a gradient light_source gives its own",
    ),
    "light_color": (str, "COLOR", "#rrggbb or a CSS colour name (default white)"),
    "light_bright": (float, "LEVEL", "0..255: the lit side's level (default 224, as the hosted lights)"),
    "light_dark": (float, "LEVEL", "0..255: the far side's level (default 32)"),
    "light_shape": (str, "SHAPE", "linear (a gradient, the default) or spot (a soft spot: frontal or overhead)"),
    "light_x": (float, "X", "0..1: the spot's centre from the left (default 0.5)"),
    "light_y": (float, "Y", "0..1: the spot's centre from the top (default 0.5)"),
    "light_radius": (float, "R", "the spot's radius, a fraction of the shorter side (default 0.5)"),
    "fill_angle": (float, "DEGREES", "a second light (rim or fill) from this side"),
    "fill_color": (str, "COLOR", "the second light's colour (default white)"),
    "fill_strength": (float, "S", "0..1: how much the second light adds (default 0.5)"),
    "light_mix": (float, "MIX", "0..1: blend the background with the light (0 the background, 1 the light)"),
}


def add_light_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("light and colour (beyond the hosted model; see docs/lighting.md)")
    for name, (kind, metavar, helptext) in LIGHT_OPTIONS.items():
        g.add_argument(_flag(name), type=kind, default=None, metavar=metavar, help=helptext)
    g.add_argument(
        "--light-map", type=Path, default=None, help="an image used as the light (a painted map, a panorama crop)"
    )
    g.add_argument(
        "--keep-colors", type=float, default=0.0, metavar="STRENGTH",
        help="0..1: inside the matte keep the subject's own colours (CIELAB chroma), the relit lightness (default 0)",
    )  # fmt: skip


def add_runtime_options(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    add_debug_option(p)
    r = p.add_argument_group("where")
    if outputs:
        r.add_argument("-o", "--out", type=Path, default=Path("out"), help="output folder (default: out)")
    r.add_argument(
        "--weights", type=Path, default=None, help="weights folder (default: ICLIGHT_WEIGHTS_DIR or weights/)"
    )
    r.add_argument("--device", default=None, help="auto, cpu or cuda (default: ICLIGHT_DEVICE or auto)")


def add_debug_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="on an error, show the whole traceback (or ICLIGHT_DEBUG=1)")


def add_weights_commands(sub) -> None:
    """`weights fetch|lock|verify|prepare`, also run as `python -m iclight.weights ...`."""
    fmt = argparse.RawDescriptionHelpFormatter
    w = sub.add_parser(
        "weights",
        help="fetch, lock, verify and prepare the weights folder",
        description="Fetch, lock, verify and prepare the IC-Light weights folder.",
        formatter_class=fmt,
    )
    cmds = w.add_subparsers(dest="weights_command", required=True, metavar="WEIGHTS_COMMAND")
    p = cmds.add_parser("fetch", help="download every missing or invalid file, verified")
    p.add_argument("--dest", type=Path, default=None, help="weights folder (default: ICLIGHT_WEIGHTS_DIR or weights/)")
    p.add_argument(
        "--from", dest="source", default=None, help="HTTP(S) mirror with manifest.json (or ICLIGHT_WEIGHTS_URL)"
    )
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument(
        "--matting",
        nargs="+",
        choices=matting.CHOICES,
        default=None,
        help="the matting models to fetch (default: ICLIGHT_MATTING, else rmbg-1.4); none fetches no matting model",
    )
    add_debug_option(p)
    p = cmds.add_parser("lock", help="write DIR/manifest.json (path, size, sha256 of every file)")
    p.add_argument("dir", type=Path)
    add_debug_option(p)
    p = cmds.add_parser("verify", help="check DIR against its manifest.json")
    p.add_argument("dir", type=Path)
    add_debug_option(p)
    p = cmds.add_parser("prepare", help="write the merged UNet in the device's dtype for a fast boot")
    p.add_argument("dir", type=Path, nargs="?", default=None)
    p.add_argument(
        "--dtype",
        choices=["float16", "float32", "bfloat16"],
        default=None,
        help="default: what ICLIGHT_DEVICE resolves to needs (float16 on CUDA, float32 on the CPU)",
    )
    p.add_argument("--force", action="store_true", help="write the prepared UNet even if it is up to date")
    p.add_argument(
        "--compile",
        nargs="?",
        const="unet",
        default=None,
        type=_compile_mode,
        metavar="WHAT",
        help="then compile for this GPU (1 or unet, the default; all: the VAE too; graphs: the UNet with CUDA graphs) "
        "and keep the cache beside the weights, so that serving with the same ICLIGHT_COMPILE boots without "
        "compiling",
    )
    add_debug_option(p)


def _compile_mode(text: str) -> str:
    try:
        return config.COMPILE.value_of(text)
    except config.ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r}; use {config.COMPILE.allowed}") from None


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog or ("iclight" if os.path.basename(sys.argv[0]) == "iclight" else "python -m iclight"),
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
        "relight many subjects, locally or on a Ray cluster; resumable",
        "Relight every job in JOBS: a folder of images or a text file listing one image path per line (each "
        "against every --background), or a JSONL manifest with one job per line. The options are every job's "
        "defaults. Finished jobs are skipped when run again; OUT/results.jsonl says what became of each job.",
    )
    p.add_argument("subjects", type=Path, metavar="JOBS", help="folder of images, list file, or JSONL manifest")
    p.add_argument("--background", type=Path, action="append", default=[], help="a background (repeatable)")
    add_model_options(p, prompt_required=False)
    r = p.add_argument_group("distributed (Ray Data; needs the `ray` extra)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS joins RAY_ADDRESS if set, else starts a local Ray; 'auto' or "
        "'ray://HOST:10001' joins a cluster",
    )
    r.add_argument("--workers", type=int, default=1, help="actors, each holding one model (default 1)")
    r.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per actor (default: 1 if the cluster has GPUs, else 0)",
    )
    r.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and torch threads) per actor (default 1)")
    p = command(
        "ui",
        "a local web app for relighting (needs the `ui` extra)",
        "Serve a web page for relighting on http://HOST:PORT: uploads, the matte, quick prompts, every "
        "option, progress, a gallery, downloads with the recipe embedded. One relight at a time; others wait "
        "in a queue. Listens on 127.0.0.1 only unless --host says otherwise.",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 lets anyone who can reach "
        "this machine use the page, its GPU and its disk space)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    add_runtime_options(p, outputs=False)
    p = command("reproduce", "make an output again from its sidecar JSON or from the image itself")
    p.add_argument("recipe", type=Path, help="NAME.json, or an image that carries a recipe")
    add_runtime_options(p)
    add_weights_commands(sub)
    return parser


def job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every job setting from the command line: hosted inputs and extras."""
    settings = {name: getattr(args, name) for name in PARAMS}
    extras = {"detail_transfer": args.detail_transfer, "keep_background": args.keep_background}
    extras |= {"keep_colors": args.keep_colors, "matting": args.matting}
    return settings | extras | {n: getattr(args, n) for n in LIGHT_OPTIONS}


def load_relighter(args: argparse.Namespace):
    from .pipeline import Relighter

    # The matting asked for is the one loaded (and fetched where missing): no other is.
    return Relighter.load(args.weights, device=args.device, matting_choice=getattr(args, "matting", None))


def run_one(args: argparse.Namespace, job: Job) -> list[str]:
    return relight_one(load_relighter(args), job, args.out)["outputs"]


def single_job(args: argparse.Namespace, subject: Path, background: Path | None, settings: dict[str, Any]) -> Job:
    entry = {"id": safe_name(subject.stem)[:100], "subject": str(subject), "background": background and str(background)}
    return make_job(entry, defaults(settings), Path.cwd(), str(subject), args.mask, args.save_matte, args.light_map)


def cmd_relight(args: argparse.Namespace) -> int:
    for path in run_one(args, single_job(args, args.subject, args.background, job_settings(args))):
        print(path)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import report, run_batch

    if not args.subjects.exists():
        raise InputError(f"JOBS: {args.subjects} does not exist")
    jobs = read_jobs(args.subjects, args.background, job_settings(args), args.mask, args.save_matte, args.light_map)
    logging.getLogger("iclight").setLevel(logging.WARNING)  # per-stage timings would drown the job bar
    if args.ray is not None:
        if args.workers < 1:
            raise InputError(f"--workers: {args.workers} is out of range; at least 1")
        try:
            from .distributed import RaySettings, ray_executor
        except ImportError as e:
            raise InputError(f"--ray: needs the `ray` extra ({e}); pip install 'iclight-background[ray]'") from e
        settings = RaySettings(
            address=args.ray or None,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            weights=None if args.weights is None else str(args.weights),
            device=args.device,
        )
        executor = ray_executor(settings)
    else:
        executor = local_executor(args)
    summary = run_batch(jobs, args.out, executor)
    print(report(summary))
    return 1 if summary.failures else 0


def local_executor(args: argparse.Namespace):
    from .jobs import execute

    def run(jobs: list[Job]):
        relighter = load_relighter(args)  # only once there is something to run
        relighter.show_step_progress(False)
        for job in jobs:
            yield execute(relighter, job)

    return run


def cmd_reproduce(args: argparse.Namespace) -> int:
    recipe = read_recipe(args.recipe)
    path = {name: Path(rec["path"]) if rec else None for name, rec in recipe["inputs"].items()}
    args.mask, args.save_matte, args.light_map = path.get("mask"), False, path.get("light_map")
    args.matting = recipe["parameters"].get("matting")
    job = single_job(args, path["subject_image"], path.get("background_image"), dict(recipe["parameters"]))
    print(run_one(args, job)[recipe["index"]])
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from . import ui
    except ImportError as e:
        raise InputError(
            f"ui: needs the `ui` extra and Gradio ({e}): pip install 'iclight-background[ui]' && "
            "pip install --no-deps gradio==6.31.0"
        ) from e
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the page", file=sys.stderr)
    ui.launch(load_relighter(args), args.host, args.port)
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    try:
        return WEIGHTS_COMMANDS[args.weights_command](args)
    except OSError as e:  # a folder that cannot be read or written: the message names it
        raise fetch.FetchError(str(e)) from e


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    root = layout.weights_dir(args.dest)
    unused = matting.not_needed(*(args.matting or [config.MATTING.read()]))  # only what is asked for
    got = fetch.fetch(root, args.source, args.workers, [f.dest for f in layout.MANIFEST if f.dest not in unused])
    print(f"{len(got)} file(s) downloaded into {root}" if got else f"all files present and valid in {root}")
    return 0


def cmd_weights_lock(args: argparse.Namespace) -> int:
    entries = fetch.lock(args.dir)
    print(f"wrote {args.dir / fetch.MANIFEST_NAME}: {len(entries)} files, {sum(e.size for e in entries)} bytes")
    return 0


def cmd_weights_verify(args: argparse.Namespace) -> int:
    problems = fetch.verify(args.dir)
    for line in problems:
        print(line)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_weights_prepare(args: argparse.Namespace) -> int:
    import torch

    from .loading import dtypes_for, prepare, prepared_unet, resolve_device

    root = layout.weights_dir(args.dir)
    dtype = getattr(torch, args.dtype) if args.dtype else dtypes_for(resolve_device()).unet
    existing = None if args.force else prepared_unet(root, dtype)
    if existing:
        print(f"{existing} is up to date with the sources present (--force writes it again)")
    else:
        start = time.perf_counter()
        path = prepare(root, dtype)
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    if args.compile not in (None, "off"):
        from .pipeline import Relighter
        from .speed import SpeedSettings

        device = resolve_device()
        relighter = Relighter.load(root, device=str(device), speed=SpeedSettings.default(device, args.compile))
        report = relighter.compile_report or {}
        print(f"compiled for {device} in {report.get('compile_s', 0):.1f} s; cache in {root / 'compile-cache'}")
    return 0


WEIGHTS_COMMANDS = {
    "fetch": cmd_weights_fetch,
    "lock": cmd_weights_lock,
    "verify": cmd_weights_verify,
    "prepare": cmd_weights_prepare,
}
COMMANDS = {
    "relight": cmd_relight,
    "batch": cmd_batch,
    "reproduce": cmd_reproduce,
    "ui": cmd_ui,
    "weights": cmd_weights,
}
# What a user can act on from the message alone: it names the input, the variable or the file.
USER_ERRORS = (InputError, ImageInputError, JobFailed, config.ConfigError)
SETUP_ERRORS = (fetch.FetchError, layout.MissingWeightsError, DeviceError)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config.check()
        return COMMANDS[args.command](args)
    except (*USER_ERRORS, *SETUP_ERRORS) as e:
        if args.debug or _debug_from_env():
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, USER_ERRORS) else 1


def _debug_from_env() -> bool:
    try:
        return config.DEBUG.read()
    except config.ConfigError:
        return False
