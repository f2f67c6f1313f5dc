"""What the commands share: the relighting options, made from the one table of `core/options.py`,
the runtime options, the epilog, and turning the parsed options into job settings and a relighter."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from ..core import options as O

# What every command's --help ends with, after its own examples (`epilog`).
OUTPUTS = """\
outputs:
  Each image NAME.FMT comes with NAME.json, its recipe (every parameter, the seed,
  the sha256 of the inputs and of the weights, package versions); the same recipe
  is embedded in the image (PNG text, or EXIF ImageDescription for jpg and webp).
"""
ENVIRONMENT = """\
environment (every variable: docs/configuration.md):
  ICLIGHT_WEIGHTS_DIR   weights folder (default: weights/ at the repository root)
  ICLIGHT_DEVICE        auto (default), cpu or cuda
  ICLIGHT_WEIGHTS_URL   mirror to fetch missing weights from (default: the Hub)
  ICLIGHT_OFFLINE=1     never download; fail at once when weights are missing
  ICLIGHT_DEBUG=1       show the whole traceback of an error (as --debug does)
"""


def epilog(examples: str, *sections: str) -> str:
    """A command's --help ending: its own examples, then the sections that concern it."""
    return "\n".join(["examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  ") + "\n", *sections])


EPILOG = epilog(
    """\
    python -m iclight relight examples/astronaut.png examples/coffee.png --prompt "sunshine from window" -o out
    python -m iclight sequence turntable.mp4 studio.jpg --prompt "soft light" -o out
    python -m iclight batch photos/ --background studio.jpg --prompt "soft window light" -o out
    python -m iclight reproduce out/astronaut-12345-0.json -o again
    python -m iclight ui
    python -m iclight weights fetch --dest weights
    (python -m iclight COMMAND --help: each command's own examples)""",
    ENVIRONMENT,
)


GROUPS = {
    "hosted": "relighting options (the hosted model's inputs)",
    "output": "output (the hosted model's inputs)",
    "extras": "beyond the hosted model",
    "light": "light and colour (beyond the hosted model; see docs/lighting.md)",
    "hdri": "light from an HDRI (beyond the hosted model; see docs/lighting.md)",
    "models": "LoRAs, sampler, light as the start, clip skip (beyond the hosted model; see docs/models.md)",
    "sequence": "sequence",
}


def add_options(p: argparse.ArgumentParser, table: tuple[O.Option, ...], prompt_required: bool = True) -> None:
    """A flag for every option of `table` a command line can give (not a `Light` object), in
    groups; unset flags are None, so that the option's default is the table's."""
    groups: dict[str, Any] = {}
    for option in table:
        if option.kind is None:
            continue
        if option.group not in groups:
            groups[option.group] = p.add_argument_group(GROUPS[option.group])
        _flag(groups[option.group], option, prompt_required)


def _flag(g, option: O.Option, prompt_required: bool) -> None:
    helptext = option.help
    if option.default is not None and option.kind is not bool and "default" not in helptext:
        helptext += f" (default: {option.default})"
    kw: dict[str, Any] = {"dest": option.name, "default": None, "help": helptext}
    if option.kind is bool:  # a switch: on (or, negated, off) where given
        kw["action"] = "store_const"
        kw["const"] = not option.default if option.flag else True
    elif option.kind is list:
        kw |= {"action": "append", "metavar": option.metavar}
    else:
        kw |= {"type": option.kind, "metavar": option.metavar or option.name.upper()}
        if option.choices is not None and option.group not in ("hosted", "output"):  # (the door names a bad hosted one)
            kw["choices"] = option.choices
            kw.pop("metavar")
        kw["required"] = option.required and prompt_required
    g.add_argument(option.cli_flag, **kw)


def given(args: argparse.Namespace, table: tuple[O.Option, ...]) -> dict[str, Any]:
    """The options of `table` the command line gave (unset ones are left to their defaults)."""
    return {o.name: getattr(args, o.name) for o in table if getattr(args, o.name, None) is not None}


def add_model_options(p: argparse.ArgumentParser, prompt_required: bool = True, sequence: bool = False) -> None:
    """Every relight option (a sequence's: those a sequence takes), the output's, --save-matte,
    and where the models come from."""
    table = tuple(o for o in (*O.RELIGHT, *O.OUTPUT) if not (sequence and o.single))
    add_options(p, table, prompt_required)
    if not sequence:
        p.add_argument(
            "--save-matte",
            action="store_true",
            help="also save the matte and the subject-on-grey that conditioned the model",
        )
    add_runtime_options(p)


def add_runtime_options(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    add_debug_option(p)
    r = p.add_argument_group("where")
    if outputs:
        r.add_argument("-o", "--out", type=Path, default=Path("out"), help="output folder (default: out)")
    r.add_argument(
        "--weights", type=Path, default=None, help="weights folder (default: ICLIGHT_WEIGHTS_DIR or weights/)"
    )
    r.add_argument("--device", default=None, help="auto, cpu or cuda (default: ICLIGHT_DEVICE or auto)")
    add_base_model_options(r)


def add_base_model_options(g) -> None:
    g.add_argument(
        "--base-model", type=Path, default=None, metavar="PATH",
        help="an SD1.5 diffusers folder or single-file .safetensors checkpoint in place of the bundled "
        "Realistic Vision 5.1 (default ICLIGHT_BASE_MODEL)",
    )  # fmt: skip
    g.add_argument(
        "--base-vae", type=Path, default=None, metavar="FILE",
        help="the base model's VAE file (default: its own, or NAME.vae.safetensors beside it)",
    )  # fmt: skip


def add_debug_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="on an error, show the whole traceback (or ICLIGHT_DEBUG=1)")


# The options of a relight that name a file: every job of a batch gets them unless its line names its own.
FILE_OPTIONS = O.RELIGHT_FILES


def job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every job setting the command line gave: relight options and the output's (not the files,
    `files`, which are the job's own)."""
    found = given(args, (*O.RELIGHT, *O.OUTPUT))
    return {k: v for k, v in found.items() if k not in FILE_OPTIONS}


def files(args: argparse.Namespace) -> dict[str, str | None]:
    """The files the command line named for the job (FILE_OPTIONS), as paths."""
    return {name: None if getattr(args, name, None) is None else str(getattr(args, name)) for name in FILE_OPTIONS}


def identity(args: argparse.Namespace):
    """What the derived ids of a run into `args.out` count beyond options (`jobs/identity.py`): the
    output folder's contents as first seen, and the model the command line's settings load."""
    from ..core import config
    from ..core.lora import parse as parse_loras
    from ..jobs.identity import Contents, Identity, Model
    from ..store import layout
    from ..store.basemodel import resolve

    base = resolve(args.base_model or config.BASE_MODEL.read(), args.base_vae)
    matting = getattr(args, "matting", None) or config.MATTING.read()
    loras = parse_loras([(str(p), s) for p, s in config.LORAS.read()]) or ()
    weights = layout.weights_dir(args.weights)
    return Identity(Contents(args.out), Model(weights, base, matting, loras))


def load_relighter(args: argparse.Namespace, matting: str | None = None, model: str | None = None):
    """The relighter a command runs on: the matting asked for is the one loaded (and fetched where
    missing), no other; `model` (default `--model`, else ICLIGHT_MODEL): the IC-Light models served."""
    from ..pipeline import Relighter

    return Relighter.load(
        args.weights,
        device=args.device,
        matting_choice=matting or getattr(args, "matting", None),
        base_model=getattr(args, "base_model", None),
        base_vae=getattr(args, "base_vae", None),
        model=model or getattr(args, "model", None),
    )
