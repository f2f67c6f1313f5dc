"""Job lists for batch relighting: each entry made into a checked job at the door.

A batch reads a folder of images, a text file listing images (one path per line), or a
JSONL manifest with one job per line:

    {"subject": "shoe.jpg", "background": "beach.jpg", "prompt": "sunset", "seed": 7}
    {"id": "bag-left", "subject": "bag.png", "prompt": "neon", "light_source": "Left Light"}
    {"id": "turntable", "sequence": "turn.mp4", "background": "studio.jpg", "prompt": "soft light"}

A line may hold any option of `core/options.py` (the hosted inputs, the extras, a designed
light's settings, a sequence's settings); the command line gives the defaults. Relative paths
are relative to the list's folder. Every job has a stable id (its `id`, or one derived from
everything that decides its images: its options, as the table says each counts, its files, and,
with an `Identity`, their content and the model, `identity.py`) and its files are named from it,
so that a rerun recognises finished work. A bad line fails that job, never the batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from ..core import options as O
from ..core.lora import parse as parse_loras
from ..core.spec import Encoding, RelightSpec, SequenceSpec, encoding, relight_spec, sequence_spec
from ..core.validation import InputError
from ..imaging.images import IMAGE_SUFFIXES
from .identity import Identity
from .job import ID_PATTERN, Job

MANIFEST_SUFFIX = ".jsonl"
DOORS = ("subject", "background")  # the images a relight's door takes itself (a sequence's frames: "sequence")
# Every field a line may have: the images, and every option but a `Light` object (a line gives
# a light's settings one by one).
OPTION_FIELDS = tuple(o.name for o in (*O.RELIGHT, *O.OUTPUT, *O.SEQUENCE) if o.kind is not None and not o.is_file)
FIELDS = ("id", *DOORS, "sequence", *O.FILES, *OPTION_FIELDS)
SEQUENCE_ONLY = tuple(o.name for o in O.SEQUENCE)


def read_jobs(
    source: Path,
    backgrounds: list[Path] | None = None,
    settings: dict[str, Any] | None = None,
    files: dict[str, str | None] | None = None,
    save_matte: bool = False,
    identity: Identity | None = None,
) -> list[Job]:
    """Jobs from a folder, a list file or a JSONL manifest; `settings` are every job's defaults
    (option names, as the command line gives them), `files` the files every job gets unless its
    line names its own (mask, light_map, hdri); `identity` (the output folder's contents and the
    model) counts in the derived ids."""
    base = {k: v for k, v in (settings or {}).items() if v is not None}
    defaults = {k: None if v is None else str(v) for k, v in (files or {}).items()}
    made = partial(make_job, defaults=defaults, save_matte=save_matte, identity=identity)
    if source.is_file() and source.suffix.lower() == MANIFEST_SUFFIX:
        jobs = _manifest_jobs(source, base, made)
    else:
        folder = source if source.is_dir() else source.parent
        jobs = [
            made({"subject": str(s), "background": _str(b)}, base, folder, str(s))
            for s in _listed_images(source)
            for b in (backgrounds or [None])
        ]
    if identity is not None:
        identity.contents.save()
    return _unique(jobs)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _listed_images(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    lines = [line.strip() for line in source.read_text().splitlines()]
    return [source.parent / line for line in lines if line and not line.startswith("#")]


def _manifest_jobs(source: Path, base: dict[str, Any], made) -> list[Job]:
    jobs = []
    for n, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source.name}:{n}"
        try:
            entry = json.loads(line)
        except ValueError as e:
            jobs.append(_bad(source, n, where, f"not valid JSON ({e})"))
            continue
        if not isinstance(entry, dict):
            jobs.append(_bad(source, n, where, "expected a JSON object"))
            continue
        jobs.append(made(entry, base, source.parent, where))
    return jobs


def _bad(source: Path, line: int, where: str, reason: str) -> Job:
    return Job(id=f"{safe_name(source.stem)}-line{line}", spec=None, source=where, error=reason)


def make_job(
    entry: dict[str, Any],
    base: dict[str, Any],
    folder: Path,
    where: str,
    defaults: dict[str, Any] | None = None,
    save_matte: bool = False,
    identity: Identity | None = None,
) -> Job:
    """A job from one entry (a manifest line, a listed file, the command line's or the web app's
    inputs), checked now: a bad one fails at once without taking a worker's time. `base`: the
    defaults of every job; `defaults`: files every job gets unless it names its own (mask,
    light_map); `identity`: what its key counts beyond its options and file paths."""
    fallback_id = (
        f"{safe_name(Path(str(entry.get('subject') or entry.get('sequence') or 'job')).stem)}-{_digest(entry)}"
    )
    try:
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise InputError(f"{unknown[0]}: unknown field; a job may have {', '.join(FIELDS)}")
        files = _files(entry, folder, defaults or {})
        values = base | {k: v for k, v in entry.items() if k in OPTION_FIELDS}
        values["loras"] = parse_loras(values.get("loras"), folder)
        spec, encoded = _spec(entry, files, values)
        key = _key(files, spec, encoded, values, save_matte, folder, identity)
        job_id = entry.get("id") or f"{_stem(files)}-{key}"
        if not isinstance(job_id, str) or not ID_PATTERN.match(job_id):
            raise InputError(f"id: {job_id!r} must be 1-120 letters, digits, '.', '_' or '-', starting alphanumeric")
    except InputError as e:
        safe_id = entry.get("id") if isinstance(entry.get("id"), str) and ID_PATTERN.match(entry["id"]) else None
        return Job(id=safe_id or fallback_id, spec=None, source=where, error=str(e))
    return Job(job_id, spec, encoded, where, save_matte=save_matte and isinstance(spec, RelightSpec), key=key)


def _files(entry: dict[str, Any], folder: Path, defaults: dict[str, Any]) -> dict[str, str | None]:
    """Every file a line names, relative to the list's folder; a sequence's frames are its subject."""
    sequence = "sequence" in entry
    if sequence and "subject" in entry:
        raise InputError("sequence: a line has either a subject or a sequence, not both")
    if not sequence:
        extra = sorted(set(entry) & set(SEQUENCE_ONLY))
        if extra:
            raise InputError(f'{extra[0]}: a field of sequence jobs; this line has no "sequence"')
    key = "sequence" if sequence else "subject"
    if not isinstance(entry.get(key), str) or not entry[key]:
        raise InputError(f"{key}: required (a path to the {'frames' if sequence else 'subject image'})")
    found = {name: _path(entry.get(name), folder, name) for name in ("background", *O.FILES)}
    for name, given in defaults.items():
        if found[name] is None and given is not None:
            found[name] = str(given)
    return found | {"subject": _path(entry[key], folder, key), "sequence": sequence}


def _spec(entry: dict[str, Any], files: dict[str, Any], values: dict[str, Any]):
    encoded = encoding(values.pop("output_format", None), values.pop("output_quality", None))
    images = {name: files[name] for name in O.RELIGHT_FILES}
    if files["sequence"]:
        values = values | images | {name: files[name] for name in O.FILES if name not in O.RELIGHT_FILES}
        return sequence_spec(files["subject"], files["background"], **values), encoded
    values = {k: v for k, v in values.items() if k not in SEQUENCE_ONLY}
    return relight_spec(files["subject"], files["background"], **values | images), encoded


def _path(value: Any, folder: Path, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"{name}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else folder / path)


def _stem(files: dict[str, Any]) -> str:
    """`subject[__background]`, the start of a derived id."""
    subject, background = Path(files["subject"]), files["background"]
    stem = subject.stem if background is None else f"{subject.stem}__{Path(background).stem}"
    return safe_name(stem)[:80]


def _key(
    files: dict[str, Any],
    spec: RelightSpec | SequenceSpec,
    encoded,
    values: dict[str, Any],
    save_matte: bool,
    folder: Path,
    identity: Identity | None,
) -> str:
    """A hash of everything that decides a job's images: its files (relative to the list), every
    option as the table says each counts (a drawn seed is no part of it), and with `identity` the
    content of its files and the model. The same job keeps its key, and its derived id, across
    runs; a changed one does not."""
    relight = spec.relight if isinstance(spec, SequenceSpec) else spec
    named = {o.name: files[o.name] for o in O.RELIGHT if o.is_file and (o.in_id != O.WHERE_SET or files[o.name])}
    key = {k: None if v is None else _relative(v, folder) for k, v in ({d: files[d] for d in DOORS} | named).items()}
    params = {o.name: _id_value(o, relight, values, encoded) for o in (*O.RELIGHT, *O.OUTPUT) if _counts(o, relight)}
    if isinstance(spec, SequenceSpec):
        own = {o.name: getattr(spec, o.name) for o in O.SEQUENCE if not o.is_file and _counts(o, spec)}
        params["sequence"] = own | {"masks": files["masks"] and _relative(files["masks"], folder)}
    found = {"files": key, "params": params, "save_matte": save_matte}
    if identity is not None:
        inputs = [path for name, path in files.items() if name != "sequence" and path]
        found |= identity.of(relight, inputs, folder)
    return _digest(found)


def _counts(option: O.Option, spec: RelightSpec | SequenceSpec) -> bool:
    """Whether a job's id counts `option`: an option of the first ids always, a later one where set."""
    if option.kind is None or option.is_file:  # a `Light` (its settings count one by one); files count as files
        return False
    return option.in_id != O.WHERE_SET or getattr(spec, option.name) != option.default


def _id_value(option: O.Option, spec: RelightSpec, values: dict[str, Any], encoded: Encoding) -> Any:
    """The option's value as the id counts it (`options.ALWAYS` and the others)."""
    if option.in_id == O.AS_GIVEN:
        return values.get(option.name)
    if option.in_id == O.WHERE_GIVEN and values.get(option.name) is None:
        return None
    if option in O.OUTPUT:
        return getattr(encoded, option.name.removeprefix("output_"))
    value = getattr(spec, option.name)
    return [lora.record() for lora in value] if option.name == "loras" and value is not None else value


def _relative(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:
        return path


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def safe_name(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned or "job"


def _unique(jobs: list[Job]) -> list[Job]:
    """A second job with an id already taken fails (it would overwrite the first one's files)."""
    seen: dict[str, str] = {}
    out = []
    for job in jobs:
        if job.id in seen:
            reason = f"id: {job.id!r} is already used by {seen[job.id]}"
            job = replace(job, id=f"{job.id}-dup-{_digest(job.source)}", spec=None, error=reason)
        seen.setdefault(job.id, job.source)
        out.append(job)
    return out
