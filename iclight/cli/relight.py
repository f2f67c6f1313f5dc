"""`iclight relight` and `iclight reproduce`: one subject, from options or from a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..jobs import Job, defaults, make_job, relight_one, safe_name
from ..loras import Lora
from ..recipe import read_recipe
from ..validation import InputError
from .options import add_model_options, add_runtime_options, job_settings, load_relighter


def register(command) -> None:
    p = command(
        "relight", "relight one subject against one background", "Relight SUBJECT so that it belongs in BACKGROUND."
    )
    p.add_argument("subject", type=Path, help="the subject photo (any format Pillow reads)")
    p.add_argument("background", type=Path, nargs="?", help="the background photo (optional with a synthetic light)")
    add_model_options(p)
    p.set_defaults(run=cmd_relight)


def register_reproduce(command) -> None:
    p = command("reproduce", "make an output again from its sidecar JSON or from the image itself")
    p.add_argument("recipe", type=Path, help="NAME.json, or an image that carries a recipe")
    add_runtime_options(p)
    p.set_defaults(run=cmd_reproduce)


def run_one(args: argparse.Namespace, job: Job) -> list[str]:
    return relight_one(load_relighter(args), job, args.out)["outputs"]


def single_job(args: argparse.Namespace, subject: Path, background: Path | None, settings: dict[str, Any]) -> Job:
    entry = {"id": safe_name(subject.stem)[:100], "subject": str(subject), "background": background and str(background)}
    return make_job(entry, defaults(settings), Path.cwd(), str(subject), args.mask, args.save_matte, args.light_map)


def cmd_relight(args: argparse.Namespace) -> int:
    for path in run_one(args, single_job(args, args.subject, args.background, job_settings(args))):
        print(path)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    recipe = read_recipe(args.recipe)
    if recipe.get("kind") == "sequence":
        return _reproduce_sequence(args, recipe)
    path = {name: Path(rec["path"]) if rec else None for name, rec in recipe["inputs"].items()}
    args.mask, args.save_matte, args.light_map = path.get("mask"), False, path.get("light_map")
    args.matting = recipe["parameters"].get("matting")
    models = recipe.get("models") or {}
    base = models.get("base_model")
    if base and args.base_model is None:
        args.base_model = Path(base["path"])
    check_models(models, args.base_model)
    job = single_job(args, path["subject_image"], path.get("background_image"), dict(recipe["parameters"]))
    print(run_one(args, job)[recipe["index"]])
    return 0


def check_models(models: dict[str, Any], base_model: Path | None) -> None:
    """An InputError naming the base model or LoRA file a recipe needs that is missing or differs."""
    from ..basemodel import resolve

    recorded = (models.get("base_model") or {}).get("files", {})
    if recorded:
        found = resolve(base_model) if base_model is not None and Path(base_model).exists() else None
        now = found.sha256() if found else {}
        for file, digest in recorded.items():
            if now.get(file) != digest:
                state = "is missing" if file not in now else "differs from the recipe's (sha256)"
                raise InputError(f"base_model: {file} {state}")
    for lora in models.get("loras") or []:
        if not Path(lora["path"]).is_file():
            raise InputError(f"loras: {lora['path']} is missing")
        if Lora(lora["path"], lora["scale"]).record()["sha256"] != lora["sha256"]:
            raise InputError(f"loras: {lora['path']} differs from the recipe's (sha256)")


def _reproduce_sequence(args: argparse.Namespace, recipe: dict[str, Any]) -> int:
    """The same frames (and video) as a sequence's recipe says."""
    params = {k: v for k, v in recipe["parameters"].items() if k in defaults({})}
    seq = dict(recipe["sequence"])
    background = (recipe["inputs"].get("background_image") or {}).get("path")
    light_map = (recipe["inputs"].get("light_map") or {}).get("path")
    args.matting = params.get("matting")
    models = recipe.get("models") or {}
    if models.get("base_model") and args.base_model is None:
        args.base_model = Path(models["base_model"]["path"])
    check_models(models, args.base_model)
    entry = {"id": safe_name(Path(recipe["frames"]).stem)[:100], "sequence": recipe["frames"], "background": background}
    entry |= seq
    job = make_job(entry, defaults(params), Path.cwd(), recipe["frames"], None, False, light_map and Path(light_map))
    for path in relight_one(load_relighter(args), job, args.out)["outputs"]:
        print(path)
    return 0
