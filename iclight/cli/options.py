"""What the commands share: the relighting options (from the one contract in `constants`), the
runtime options, the epilog, and turning the options into job settings and a relighter."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from .. import constants as C
from .. import matting, samplers
from ..jobs import PARAMS

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
    add_model_choice_options(p)
    add_runtime_options(p)


def add_model_choice_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRAs, sampler, light as the start (beyond the hosted model; see docs/models.md)")
    g.add_argument(
        "--lora", action="append", default=None, metavar="FILE[:SCALE]",
        help="a LoRA (.safetensors, kohya/A1111 or diffusers layout) at SCALE (default 1); repeatable; "
        "default ICLIGHT_LORAS",
    )  # fmt: skip
    g.add_argument(
        "--sampler", choices=list(samplers.SAMPLERS), default=samplers.HOSTED,
        help=f"the sampler (default {samplers.HOSTED}, the hosted model's)",
    )  # fmt: skip
    g.add_argument(
        "--light-start", type=float, default=None, metavar="DENOISE",
        help="(0..1] start the first pass from the light's latent at this denoise (lower: more of the light)",
    )  # fmt: skip


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


def job_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Every job setting from the command line: hosted inputs and extras."""
    settings = {name: getattr(args, name) for name in PARAMS}
    extras = {"detail_transfer": args.detail_transfer, "keep_background": args.keep_background}
    extras |= {"keep_colors": args.keep_colors, "matting": args.matting}
    extras |= {"loras": args.lora, "sampler": args.sampler, "light_start": args.light_start}
    return settings | extras | {n: getattr(args, n) for n in LIGHT_OPTIONS}


def load_relighter(args: argparse.Namespace):
    from ..pipeline import Relighter

    # The matting asked for is the one loaded (and fetched where missing): no other is.
    return Relighter.load(
        args.weights,
        device=args.device,
        matting_choice=getattr(args, "matting", None),
        base_model=getattr(args, "base_model", None),
        base_vae=getattr(args, "base_vae", None),
    )
