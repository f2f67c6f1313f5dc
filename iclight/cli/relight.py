"""`iclight relight` and `iclight reproduce`: one subject, from options or from a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core import constants as C
from ..core import options as O
from ..jobs.job import Job
from ..jobs.manifest import make_job, safe_name
from ..jobs.recipe import check_models, read_recipe
from ..jobs.run import relight_one
from .options import (
    ENVIRONMENT,
    FILE_OPTIONS,
    OUTPUTS,
    add_model_options,
    add_runtime_options,
    epilog,
    files,
    job_settings,
    load_relighter,
)

EXAMPLES = """\
python -m iclight relight examples/astronaut.png examples/coffee.png \\
    --prompt "sunshine from window" --seed 12345 -o out
python -m iclight relight subject.png bg.jpg --prompt "neon light" --mask subject-mask.png \\
    --detail-transfer 0.8 --keep-background --save-matte -o out
python -m iclight relight bottle.png --prompt "studio" --light-source "Left Light" --light-color orange -o out
python -m iclight relight subject.png --prompt "dusk" --hdri sky.exr --hdri-heading 90 -o out
python -m iclight relight subject.png bg.jpg --prompt "film" --lora style.safetensors:0.8 --sampler euler -o out"""
REPRODUCE_EXAMPLES = """\
python -m iclight reproduce out/astronaut-12345-0.json -o again
python -m iclight reproduce out/astronaut-12345-0.webp -o again     # the recipe embedded in the image"""


def register(command) -> None:
    p = command(
        "relight", "relight one subject against one background", "Relight SUBJECT so that it belongs in BACKGROUND.",
        epilog(EXAMPLES, OUTPUTS, ENVIRONMENT),
    )  # fmt: skip
    p.add_argument("subject", type=Path, help="the subject photo (any format Pillow reads)")
    p.add_argument("background", type=Path, nargs="?", help="the background photo (optional with a synthetic light)")
    add_model_options(p)
    p.set_defaults(run=cmd_relight)


def register_reproduce(command) -> None:
    p = command(
        "reproduce", "make an output again from its sidecar JSON or from the image itself", None,
        epilog(REPRODUCE_EXAMPLES, ENVIRONMENT),
    )  # fmt: skip
    p.add_argument("recipe", type=Path, help="NAME.json, or an image that carries a recipe")
    add_runtime_options(p)
    p.set_defaults(run=cmd_reproduce)


def cmd_relight(args: argparse.Namespace) -> int:
    job = _job(args.subject, args.background, job_settings(args), files(args), args.save_matte)
    for path in relight_one(load_relighter(args), job, args.out)["outputs"]:
        print(path)
    return 0


def _job(subject: Path, background: Path | None, settings: dict[str, Any], files: dict, save_matte: bool) -> Job:
    entry = {"id": safe_name(subject.stem)[:100], "subject": str(subject), "background": background and str(background)}
    entry |= {k: str(v) for k, v in files.items() if v is not None}
    return make_job(entry, settings, Path.cwd(), str(subject), save_matte=save_matte)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """The same pixels as the recipe's: its settings and files through the same door."""
    recipe = read_recipe(args.recipe)
    models = recipe.get("models") or {}
    if models.get("base_model") and args.base_model is None:
        args.base_model = Path(models["base_model"]["path"])
    check_models(models, args.base_model)
    inputs = {name: rec["path"] for name, rec in recipe["inputs"].items() if rec}
    # A recipe written before the fc model was served is an fbc relight's.
    settings = {"model": C.FBC} | {k: v for k, v in recipe["parameters"].items() if k in O.BY_NAME}
    relighter = load_relighter(args, matting=settings.get("matting"), model=settings["model"])
    if recipe.get("kind") == "sequence":
        entry = {"id": safe_name(Path(recipe["frames"]).stem)[:100], "sequence": recipe["frames"]}
        entry |= {"background": inputs.get("background_image")} | {
            n: inputs.get(n) for n in FILE_OPTIONS if n != "mask"
        }
        job = make_job(entry | recipe["sequence"], settings, Path.cwd(), recipe["frames"])
        for path in relight_one(relighter, job, args.out)["outputs"]:
            print(path)
        return 0
    named = {name: inputs.get(name) for name in FILE_OPTIONS}
    background = inputs.get("background_image")
    job = _job(Path(inputs["subject_image"]), background and Path(background), settings, named, False)
    print(relight_one(relighter, job, args.out)["outputs"][recipe["index"]])
    return 0
