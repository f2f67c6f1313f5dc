"""The command line: `iclight relight|sequence|batch|ui|reproduce|weights`, one module per command group
(each registers its parser and what it runs), the relighting options shared in `options`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..core import config
from ..core.validation import InputError
from ..jobs.job import JobFailed
from ..store import fetch, layout
from . import batch, relight, sequence, ui, weights
from .options import EPILOG


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog or ("iclight" if os.path.basename(sys.argv[0]) == "iclight" else "python -m iclight"),
        description="Relight a subject photo so that it belongs in a background (IC-Light, background-conditioned).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str | None, examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description or summary, epilog=examples, formatter_class=fmt
        )

    relight.register(command)
    sequence.register(command)
    batch.register(command)
    ui.register(command)
    relight.register_reproduce(command)
    weights.register(sub)
    return parser


# What a user can act on from the message alone: it names the input, the variable or the file.
USER_ERRORS = (InputError, JobFailed, config.ConfigError)
SETUP_ERRORS = (fetch.FetchError, layout.MissingWeightsError, config.DeviceError)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config.check()
        return args.run(args)
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
