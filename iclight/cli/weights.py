"""`iclight weights fetch|lock|verify|prepare`, also run as `python -m iclight.weights ...`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core import config
from ..core import constants as C
from ..matting import mattes as matting
from ..store import fetch, layout
from .options import ENVIRONMENT, add_base_model_options, add_debug_option, epilog

EXAMPLES = """\
python -m iclight weights fetch --dest weights          # or: python -m iclight.weights fetch ...
python -m iclight weights fetch --dest weights --matting birefnet
python -m iclight weights fetch --dest weights --model fc   # the fc model's offset, not fbc's
python -m iclight weights prepare weights --compile     # a fast boot, and the compile cache for this GPU
python -m iclight weights lock weights && python -m iclight weights verify weights"""


def register(sub) -> None:
    """`weights fetch|lock|verify|prepare`, also run as `python -m iclight.weights ...`."""
    fmt = argparse.RawDescriptionHelpFormatter
    w = sub.add_parser(
        "weights",
        help="fetch, lock, verify and prepare the weights folder",
        description="Fetch, lock, verify and prepare the IC-Light weights folder.",
        epilog=epilog(EXAMPLES, ENVIRONMENT),
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
    _add_model_option(p, "the IC-Light offsets to fetch")
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
    _add_model_option(p, "the IC-Light models whose UNets to prepare")
    add_base_model_options(p)
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
    w.set_defaults(run=cmd_weights)


def _add_model_option(p: argparse.ArgumentParser, what: str) -> None:
    help = f"{what}: fbc, fc or both (default: ICLIGHT_MODEL, else fbc)"
    p.add_argument("--model", choices=C.MODEL_CHOICES, default=None, help=help)


def _served(args: argparse.Namespace) -> tuple[str, ...]:
    return C.served(args.model or config.MODEL.read())


def _compile_mode(text: str) -> str:
    try:
        return config.COMPILE.value_of(text)
    except config.ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r}; use {config.COMPILE.allowed}") from None


def cmd_weights(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.weights_command](args)
    except OSError as e:  # a folder that cannot be read or written: the message names it
        raise fetch.FetchError(str(e)) from e


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    root = layout.weights_dir(args.dest)
    unused = (*matting.not_needed(*(args.matting or [config.MATTING.read()])), *layout.not_served(*_served(args)))
    wanted = [f.dest for f in layout.MANIFEST if f.dest not in unused]
    got = fetch.fetch(root, args.source, args.workers, wanted, skip=layout.not_served(*_served(args)))
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

    from ..pipeline.loading import dtypes_for, prepared_unet, resolve_device, write_prepared
    from ..store.basemodel import resolve

    root = layout.weights_dir(args.dir)
    dtype = getattr(torch, args.dtype) if args.dtype else dtypes_for(resolve_device()).unet
    base = resolve(args.base_model or config.BASE_MODEL.read(), args.base_vae)
    for model in _served(args):
        existing = None if args.force else prepared_unet(root, dtype, base, model)
        if existing:
            print(f"{existing} is up to date with the sources present (--force writes it again)")
            continue
        start = time.perf_counter()
        path = write_prepared(root, dtype, base, model)
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    if args.compile not in (None, "off"):
        from ..models.speed import SpeedSettings
        from ..pipeline import Relighter

        device = resolve_device()
        speed = SpeedSettings.default(device, args.compile)
        chosen = {"base_model": base.path} if base else {}
        relighter = Relighter.load(root, device=str(device), speed=speed, model=args.model, **chosen)
        report = relighter.compile_report or {}
        print(f"compiled for {device} in {report.get('compile_s', 0):.1f} s; cache in {root / 'compile-cache'}")
    return 0


COMMANDS = {
    "fetch": cmd_weights_fetch,
    "lock": cmd_weights_lock,
    "verify": cmd_weights_verify,
    "prepare": cmd_weights_prepare,
}
