"""Light-A-Video's consistent light attention function, read from its own code where
`make reference-lav` exported it (.ref/light-a-video/, never committed): the function is nested
in its script's `main`, so it is taken out of the syntax tree and compiled alone."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ref" / "light-a-video" / "lav_relight.py"
NAME = "custom_forward_CLA"


def load(script: Path = SCRIPT) -> Callable | None:
    """Its attention forward (called as `fn(attention_module, hidden_states, gamma=...)`), or None."""
    if not script.is_file():
        return None
    found = [n for n in ast.walk(ast.parse(script.read_text())) if isinstance(n, ast.FunctionDef) and n.name == NAME]
    if not found:
        return None
    module = ast.fix_missing_locations(ast.Module(body=[found[0]], type_ignores=[]))
    namespace = {"torch": torch, "F": F, "config": {}}  # its default gamma reads a config dict
    exec(compile(module, str(script), "exec"), namespace)
    return namespace[NAME]
