"""`iclight ui`: the local web app."""

from __future__ import annotations

import argparse
import sys

from ..core import constants as C
from ..core.validation import InputError
from .options import ENVIRONMENT, add_runtime_options, epilog, load_relighter

EXAMPLES = """\
python -m iclight ui                              # http://127.0.0.1:7860
python -m iclight ui --port 8080 --device cuda
python -m iclight ui --model fbc                  # one model: less memory, a faster boot"""


def register(command) -> None:
    p = command(
        "ui",
        "a local web app for relighting (needs the `ui` extra)",
        "Serve a web page for relighting on http://HOST:PORT: uploads, the matte, quick prompts, every "
        "option, progress, a gallery, downloads with the recipe embedded. One relight at a time; others wait "
        "in a queue. Listens on 127.0.0.1 only unless --host says otherwise.",
        epilog(EXAMPLES, ENVIRONMENT),
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 lets anyone who can reach "
        "this machine use the page, its GPU and its disk space)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--model",
        choices=C.MODEL_CHOICES,
        default=C.BOTH,
        help="the IC-Light models the page offers (default both: fbc to a background, fc from a prompt and a light)",
    )
    add_runtime_options(p, outputs=False)
    p.set_defaults(run=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        from ..web import app as ui
    except ImportError as e:
        raise InputError(
            f"ui: needs the `ui` extra and Gradio ({e}): pip install 'iclight-background[ui]' && "
            "pip install --no-deps gradio==6.31.0"
        ) from e
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the page", file=sys.stderr)
    ui.launch(load_relighter(args), args.host, args.port)
    return 0
