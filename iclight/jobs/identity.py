"""What a job's id holds beyond its options and the paths of its files: the content of every file
it reads, and the model it runs with.

An output folder keeps the content of each file its jobs read as it first saw it
(`.contents/files.json`: the inputs, the LoRAs, the model's weights). A job's id names the files
whose content has changed since; a job whose files are as they were keeps the id it had before
contents counted (and a rerun skips it), and a changed file makes a new job beside the old one.
A base model and VAE of the user's own, which the first ids did not see at all, count by content
wherever they are given. Files are hashed once (remembered by size and modification time); a
driver that cannot read a file (a Ray driver without the weights) leaves it out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.lora import Lora
from ..core.spec import RelightSpec
from ..matting import mattes as matting
from ..store import layout
from ..store.basemodel import BaseModel
from ..store.fetch import sha256_of

CONTENTS = ".contents/files.json"  # in the output folder
# The bundled SD1.5's weights (its config files aside).
SD_WEIGHTS = tuple(
    f.dest for f in layout.MANIFEST if f.dest.startswith(layout.SD_DIR) and f.dest.endswith(".safetensors")
)


class Contents:
    """The content of each file an output folder's jobs read, as the folder first saw it."""

    def __init__(self, out: Path) -> None:
        self.path = out / CONTENTS
        try:
            self._seen: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._seen = {}

    def changed(self, path: str | os.PathLike) -> str | None:
        """`path`'s sha256 where its content differs from what this folder first saw of it; None where
        it is the same, is seen for the first time now (and remembered), or cannot be read."""
        target = Path(path).resolve()
        try:
            st = target.stat()
            if not target.is_file():
                return None
            key, known = str(target), self._seen.get(str(target))
            if known is None:
                digest = sha256_of(target)
                self._seen[key] = [st.st_size, st.st_mtime_ns, digest, digest]
                return None
            if known[:2] != [st.st_size, st.st_mtime_ns]:
                known[:] = [st.st_size, st.st_mtime_ns, known[2], sha256_of(target)]
        except OSError:
            return None
        return None if known[3] == known[2] else known[3]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self._seen, sort_keys=True))
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Model:
    """The model a batch's relights run with beyond their options: the weights folder (the bundled
    SD1.5 parts, the IC-Light offset, the matting models), a base model and VAE of the user's own,
    the matting model and LoRAs a relight gets where it names none."""

    weights: Path
    base: BaseModel | None = None
    matting: str = matting.RMBG
    loras: tuple[Lora, ...] = field(default_factory=tuple)

    def files(self, spec: RelightSpec) -> list[Path]:
        """Every file the relight's model is made of: the bundled weights and its model's offset, its
        base model's, its matting model's (where one runs), its LoRAs'."""
        found = [self.weights / rel for rel in (*SD_WEIGHTS, layout.OFFSET_FILES[spec.model])]
        found += [self.weights / rel for rel in matting.FILES[spec.matting or self.matting]]
        found += list(self.base.files) if self.base else []
        return found + [Path(lora.path) for lora in (self.loras if spec.loras is None else spec.loras)]

    def chosen(self, spec: RelightSpec) -> dict[str, Any]:
        """What the first ids did not see, where it is given: a base model and its VAE by content,
        and the LoRAs a relight that names none gets (`ICLIGHT_LORAS`)."""
        found: dict[str, Any] = {} if self.base is None else {"base_model": self.base.sha256()}
        if spec.loras is None and self.loras:
            found["default_loras"] = [lora.record() for lora in self.loras]
        return found


@dataclass(frozen=True)
class Identity:
    """What a job's id counts beyond its options (see the module's docstring)."""

    contents: Contents
    model: Model

    def of(self, spec: RelightSpec, inputs: list[str], folder: Path) -> dict[str, Any]:
        """The id's part for a job: the files whose content changed (by path, as the id names
        them) and the chosen model; empty where there is nothing to add."""
        paths = [*inputs, *(str(p) for p in self.model.files(spec))]
        changed = {_named(p, folder): d for p in paths if (d := self.contents.changed(p)) is not None}
        return ({"changed": changed} if changed else {}) | self.model.chosen(spec)


def _named(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:
        return path
