"""Job lists for batch relighting, and how one job runs and lands on disk.

A batch reads a folder of images, a text file listing images (one path per line), or a
JSONL manifest with one job per line:

    {"subject": "shoe.jpg", "background": "beach.jpg", "prompt": "sunset", "seed": 7}
    {"id": "bag-left", "subject": "bag.png", "prompt": "neon", "light_source": "Left Light"}

A line may hold any hosted input (`seed`, `light_source`, `number_of_images`, ...) and the
extras (`mask`, `detail_transfer`, `keep_background`, `keep_colors`, `matting`, the light
settings of `lighting.FIELDS` and `light_map`); the command line gives the defaults.
Relative paths are relative to the list's folder. Every job has a stable id (its `id`,
or one derived from its inputs and settings) and its files are named from it, so that a
rerun recognises finished work. A bad line fails that job, never the batch.

Running is split in two so that a job can run on one machine and be written on another:
`execute` relights and encodes (on a worker), `commit` writes the files (on the driver),
each under a temporary name renamed once complete, then a done-marker, last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import constants as C
from . import lighting, matting, samplers
from .imaging import IMAGE_SUFFIXES, encode_image
from .loras import Lora
from .loras import parse as lora_list
from .recipe import encode_with_recipe, input_records, make_recipe, sidecar_text
from .validation import InputError, denoise, fraction, random_seed, validate

log = logging.getLogger("iclight")

MANIFEST_SUFFIX = ".jsonl"
DONE_DIR = ".done"
RESULTS_FILE = "results.jsonl"
PART = ".part"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
EXTRAS: dict[str, Any] = {
    "detail_transfer": 0.0,
    "keep_background": False,
    "keep_colors": 0.0,
    "matting": None,  # None: the relighter's own
    "loras": None,  # None: the relighter's own; else [FILE[:SCALE], ...] (relative to the list)
    "sampler": samplers.HOSTED,
    "light_start": None,
    **lighting.FIELDS,
}
# Hosted inputs a job may set (the images are `subject` and `background`).
PARAMS = tuple(s.name for s in C.INPUTS if s.type is not object)
FILE_FIELDS = ("subject", "background", "mask", "light_map")
# A sequence job (`iclight sequence`, or a manifest line with "sequence" in place of "subject"):
# its frames (a video or a folder), one mask per frame (a folder) and how they are relit together.
SEQUENCE: dict[str, Any] = {
    "consistency": 0.5,
    "shared_noise": True,
    "smooth_mattes": True,
    "window": 8,
    "layers": "up-but-last",
    "start": 0,
    "end": None,
    "stride": 1,
}
FIELDS = ("id", *FILE_FIELDS, *PARAMS, *EXTRAS, "sequence", "masks", *SEQUENCE)


@dataclass(frozen=True)
class Job:
    """One subject to relight: its files, every setting, and where it came from."""

    id: str
    subject: str | None
    background: str | None = None
    mask: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # hosted inputs and extras, all resolved
    save_matte: bool = False
    source: str = ""  # "list.jsonl:3", or the subject's path
    error: str | None = None  # set for a job that cannot run (a bad line)
    light_map: str | None = None
    sequence: dict[str, Any] | None = None  # a sequence job's settings and masks (SEQUENCE)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Job:
        return cls(**json.loads(text))

    def with_seed(self, seed: int) -> Job:
        return replace(self, params={**self.params, "seed": seed})


def defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Every job setting: the hosted defaults and extras, overridden by `params`."""
    base = {name: C.default(name) for name in PARAMS} | EXTRAS
    unknown = sorted(set(params) - set(base))
    if unknown:
        raise InputError(f"{unknown[0]}: not a job setting; expected one of {sorted(base)}")
    return base | params


def read_jobs(
    source: Path,
    backgrounds: list[Path] | None = None,
    settings: dict[str, Any] | None = None,
    mask: Path | None = None,
    save_matte: bool = False,
    light_map: Path | None = None,
) -> list[Job]:
    """Jobs from a folder, a list file or a JSONL manifest; `settings` are every job's defaults."""
    base = defaults(settings or {})
    if source.is_file() and source.suffix.lower() == MANIFEST_SUFFIX:
        jobs = _manifest_jobs(source, base, mask, save_matte, light_map)
    else:
        folder = source if source.is_dir() else source.parent
        jobs = [
            make_job({"subject": str(s), "background": _str(b)}, base, folder, str(s), mask, save_matte, light_map)
            for s in _listed_images(source)
            for b in (backgrounds or [None])
        ]
    return _unique(jobs)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _listed_images(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    lines = [line.strip() for line in source.read_text().splitlines()]
    return [source.parent / line for line in lines if line and not line.startswith("#")]


def _manifest_jobs(
    source: Path, base: dict[str, Any], mask: Path | None, save_matte: bool, light_map: Path | None
) -> list[Job]:
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
        jobs.append(make_job(entry, base, source.parent, where, mask, save_matte, light_map))
    return jobs


def _bad(source: Path, line: int, where: str, reason: str) -> Job:
    return Job(id=f"{safe_name(source.stem)}-line{line}", subject=None, source=where, error=reason)


def make_job(
    entry: dict[str, Any],
    base: dict[str, Any],
    folder: Path,
    where: str,
    mask: Path | None,
    save_matte: bool,
    light_map: Path | None = None,
) -> Job:
    """A job from one entry (manifest line or listed file), its settings checked now so
    that a bad one fails at once without taking a worker's time."""
    unknown = sorted(set(entry) - set(FIELDS))
    fallback_id = f"{safe_name(Path(str(entry.get('subject', 'job'))).stem)}-{_digest(entry)}"
    try:
        if unknown:
            raise InputError(f"{unknown[0]}: unknown field; a job may have {', '.join(FIELDS)}")
        entry, sequence = _sequence(entry, folder)
        if not isinstance(entry.get("subject"), str) or not entry["subject"]:
            raise InputError("subject: required (a path to the subject image)")
        files = {k: _path(entry.get(k), folder, k) for k in FILE_FIELDS}
        for name, given in (("mask", mask), ("light_map", light_map)):
            if files[name] is None and given is not None:
                files[name] = str(given)
        params = base | {k: v for k, v in entry.items() if k in PARAMS or k in EXTRAS}
        if entry.get("loras") is not None:
            params["loras"] = _relative_loras(entry["loras"], folder)
        params = _checked(params, files["background"], files["light_map"])
        job_id = entry.get("id") or _derived_id(files, params, save_matte, folder)
        if not isinstance(job_id, str) or not ID_PATTERN.match(job_id):
            raise InputError(f"id: {job_id!r} must be 1-120 letters, digits, '.', '_' or '-', starting alphanumeric")
    except InputError as e:
        safe_id = entry.get("id") if isinstance(entry.get("id"), str) and ID_PATTERN.match(entry["id"]) else None
        return Job(id=safe_id or fallback_id, subject=None, source=where, error=str(e))
    subject, background, mask = files["subject"], files["background"], files["mask"]
    light_map = files["light_map"]
    return Job(job_id, subject, background, mask, params, save_matte, where, light_map=light_map, sequence=sequence)


def _sequence(entry: dict[str, Any], folder: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A sequence line as a subject line (its frames in "subject") and its sequence settings."""
    if "sequence" not in entry:
        extra = sorted(set(entry) & {"masks", *SEQUENCE})
        if extra:
            raise InputError(f'{extra[0]}: a field of sequence jobs; this line has no "sequence"')
        return entry, None
    from .sequence import SequenceOptions

    if "subject" in entry:
        raise InputError("sequence: a line has either a subject or a sequence, not both")
    found = {k: entry.get(k, v) for k, v in SEQUENCE.items()}
    SequenceOptions(found["consistency"], found["shared_noise"], found["smooth_mattes"], found["window"]).check()
    for name in ("start", "stride", "end"):
        value = found[name]
        low = 1 if name == "stride" else 0
        if not (value is None and name == "end") and (
            isinstance(value, bool) or not isinstance(value, int) or value < low
        ):
            raise InputError(f"{name}: {value!r} is out of range; a whole number, at least {low}")
    found["masks"] = _path(entry.get("masks"), folder, "masks")
    rest = {k: v for k, v in entry.items() if k not in ("sequence", "masks", *SEQUENCE)}
    return rest | {"subject": entry["sequence"]}, found


def _path(value: Any, folder: Path, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"{name}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else folder / path)


def _checked(params: dict[str, Any], background: str | None, light_map: str | None) -> dict[str, Any]:
    hosted = {k: params[k] for k in PARAMS}
    checked = validate({**hosted, "subject_image": "-", "background_image": background}, optional=("background_image",))
    light, _ = lighting.from_fields({k: params[k] for k in lighting.FIELDS})  # a bad light setting fails now
    needs_background = params["light_source"] in (C.BACKGROUND_IMAGE, C.FLIPPED_BACKGROUND_IMAGE)
    if needs_background and background is None and light is None and light_map is None:
        raise InputError(f"background: required with light_source {params['light_source']!r}")
    fractions = {name: fraction(name, params[name]) for name in ("detail_transfer", "keep_colors")}
    if not isinstance(params["keep_background"], bool):
        raise InputError(f"keep_background: expected true or false, got {params['keep_background']!r}")
    out = {k: checked[k] for k in PARAMS} | {k: params[k] for k in lighting.FIELDS}
    if params["matting"] is not None:
        matting.check(params["matting"])
    models = {"loras": lora_records(params["loras"]), "sampler": samplers.check(params["sampler"])}
    start = params["light_start"]
    models["light_start"] = None if start is None else denoise("light_start", start)
    extras = {"keep_background": params["keep_background"], "matting": params["matting"]}
    return out | fractions | extras | models


def lora_records(loras: Any) -> list[dict[str, Any]] | None:
    """LoRAs as a job keeps them: [{"path", "scale"}], each checked; None: the relighter's own."""
    found = lora_list(loras)
    return None if found is None else [{"path": lo.path, "scale": lo.scale} for lo in found]


def _relative_loras(loras: Any, folder: Path) -> Any:
    """A manifest's LoRAs with their paths relative to the manifest made absolute."""
    items = [loras] if isinstance(loras, str | dict) else loras
    if not isinstance(items, list):
        return loras  # _checked names what is wrong with it
    found = []
    for item in items:
        lora = Lora.of(item)
        path = Path(lora.path)
        found.append({"path": str(path if path.is_absolute() else folder / path), "scale": lora.scale})
    return found


def _derived_id(files: dict[str, str | None], params: dict[str, Any], save_matte: bool, folder: Path) -> str:
    """`subject[__background]-HASH`: the hash covers the files (relative to the list) and every
    setting, so the same job keeps its id across runs and a changed one gets a new one."""
    subject, background = Path(files["subject"] or "job"), files["background"]
    stem = subject.stem if background is None else f"{subject.stem}__{Path(background).stem}"
    key = {k: None if v is None else _relative(v, folder) for k, v in files.items()}
    return f"{safe_name(stem)[:80]}-{_digest({'files': key, 'params': params, 'save_matte': save_matte})}"


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
            job = replace(job, id=f"{job.id}-dup-{_digest(job.source)}", subject=None, error=reason)
        seen.setdefault(job.id, job.source)
        out.append(job)
    return out


# -- running one job -----------------------------------------------------------------------------


@dataclass
class OutputFile:
    name: str
    data: bytes
    recipe: dict[str, Any] | None = None  # images carry one, also written as NAME.json


@dataclass
class Outcome:
    """What became of one job, with its encoded files (not yet written)."""

    id: str
    error: str | None
    seed: int | None
    seconds: float
    files: list[OutputFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def execute(relighter, job: Job) -> Outcome:
    """Relight one job and encode its files; a failure becomes the outcome's error."""
    start = time.perf_counter()
    if job.error:
        return Outcome(job.id, job.error, job.params.get("seed"), 0.0)
    try:
        files, seed = _relight(relighter, job)
    except (InputError, ValueError, OSError) as e:
        return Outcome(job.id, str(e), job.params.get("seed"), time.perf_counter() - start)
    except Exception as e:  # one job's surprise must not end a catalogue's batch
        log.exception("job %s failed", job.id)
        return Outcome(job.id, f"{type(e).__name__}: {e}", job.params.get("seed"), time.perf_counter() - start)
    return Outcome(job.id, None, seed, time.perf_counter() - start, files)


def _keywords(relighter, job: Job) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    """(the settings a recipe records, the extras `relight` takes beyond them, format, quality)."""
    params = dict(job.params)
    fmt, quality = params.pop("output_format"), params.pop("output_quality")
    light, mix = lighting.from_fields({k: params.pop(k) for k in lighting.FIELDS})
    params["matting"] = params.get("matting") or relighter.matting  # recorded as used
    for name in ("loras", "sampler", "light_start"):  # a job made before these existed
        params.setdefault(name, EXTRAS[name])
    params["light_fields"] = {**lighting.FIELDS, **(light.fields() if light else {}), "light_mix": mix}
    return params, {"light": light, "light_mix": mix, "light_map": job.light_map}, fmt, quality


def _relight(relighter, job: Job) -> tuple[list[OutputFile], int]:
    if job.sequence is not None:
        return _relight_sequence(relighter, job)
    params, extras, fmt, quality = _keywords(relighter, job)
    light_fields = params.pop("light_fields")
    result = relighter.relight(job.subject, job.background, mask=job.mask, **params, **extras)
    files = {"subject_image": job.subject, "background_image": job.background, "mask": job.mask}
    inputs = input_records(files | {"light_map": job.light_map})
    weights, device = relighter.weights_hashes(), str(relighter.device)
    models = relighter.models_record(params["loras"])
    files = []
    for i, image in enumerate(result.images):
        settings = {**params, **light_fields}
        recipe = make_recipe(
            {**settings, "output_format": fmt, "output_quality": quality}, result.seed, i, inputs, weights, device
        )
        recipe["models"] = models
        files.append(OutputFile(f"{job.id}-{i}.{fmt}", encode_with_recipe(image, fmt, quality, recipe), recipe))
    if job.save_matte:
        matte = Image.fromarray((result.matte * 255).round().astype("uint8"))
        files.append(OutputFile(f"{job.id}-matte.png", _png(matte)))
        files.append(OutputFile(f"{job.id}-subject-on-grey.png", _png(Image.fromarray(result.subject_on_grey))))
    return files, result.seed


def _relight_sequence(relighter, job: Job) -> tuple[list[OutputFile], int]:
    """Every frame as ID-frame-NNNNN.FMT, the video as ID.mp4 (or .webm) where the frames came from
    one, and the recipe as ID.json, written last."""
    import tempfile

    from . import video

    params, extras, fmt, quality = _keywords(relighter, job)
    light_fields, seed = params.pop("light_fields"), params.pop("seed")
    seq = dict(job.sequence or {})
    masks = seq.pop("masks")
    result = relighter.relight_sequence(job.subject, job.background, masks=masks, seed=seed, **seq, **params, **extras)
    files = [
        OutputFile(f"{job.id}-frame-{i:05d}.{fmt}", encode_image(image, fmt, quality))
        for i, image in enumerate(result.images)
    ]
    if result.clip is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = video.write(
                [np.asarray(im) for im in result.images], result.clip.rate, Path(tmp) / job.id, result.clip
            )
            files.append(OutputFile(path.name, path.read_bytes()))
    inputs = input_records({"frames": job.subject if Path(job.subject).is_file() else None})
    inputs |= input_records({"background_image": job.background, "light_map": job.light_map})
    settings = {**params, **light_fields, "seed": seed, "output_format": fmt, "output_quality": quality}
    recipe = make_recipe(settings, result.seeds[0], 0, inputs, relighter.weights_hashes(), str(relighter.device))
    recipe |= {"kind": "sequence", "frames": job.subject, "sequence": job.sequence, "seeds": result.seeds}
    recipe |= {"windows": result.windows, "models": relighter.models_record(params["loras"])}
    files.append(OutputFile(f"{job.id}.json", sidecar_text(recipe).encode()))
    return files, result.seeds[0]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class JobFailed(RuntimeError):
    """A single relight that could not be done; the message says why (naming the input)."""


def relight_one(relighter, job: Job, out: Path) -> dict[str, Any]:
    """One job in this process, its files written into `out` as NAME-SEED-N.FMT (the command
    line's `relight` and the web app). Returns its record; raises JobFailed."""
    if job.error:
        raise JobFailed(job.error)
    seed = job.params["seed"] if job.params["seed"] is not None else random_seed()
    job = replace(job.with_seed(seed), id=f"{job.id}-{seed}")
    outcome = execute(relighter, job)
    if outcome.error:
        raise JobFailed(outcome.error)
    return commit(out, job, outcome, mark_done=False)


# -- writing ---------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + PART)
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def commit(out: Path, job: Job, outcome: Outcome, mark_done: bool = True) -> dict[str, Any]:
    """Write the outcome's files (each complete before it gets its name), then, for a
    success, the done-marker that tells a rerun to skip the job. Returns its record."""
    out.mkdir(parents=True, exist_ok=True)
    for f in outcome.files:
        write_atomic(out / f.name, f.data)
        if f.recipe is not None:
            write_atomic((out / f.name).with_suffix(".json"), sidecar_text(f.recipe))
    names = [f.name for f in outcome.files]
    if outcome.ok and mark_done:
        done = out / DONE_DIR
        done.mkdir(exist_ok=True)
        marker = {"id": job.id, "files": names, "seed": outcome.seed, "seconds": round(outcome.seconds, 3)}
        write_atomic(done / f"{job.id}.json", json.dumps(marker))
    return _record(out, job, names, outcome.seed, outcome.error, outcome.seconds)


def _record(out: Path, job: Job, names: list[str], seed: int | None, error: str | None, seconds: float) -> dict:
    """One line of results.jsonl."""
    return {
        "id": job.id,
        "status": "failed" if error else "succeeded",
        "outputs": [str(out / name) for name in names],
        "seed": seed,
        "error": error,
        "seconds": round(seconds, 3),
        "source": job.source,
    }


def finished(out: Path, job: Job) -> dict[str, Any] | None:
    """The record of a job a previous run completed, if its files are all still there."""
    try:
        marker = json.loads((out / DONE_DIR / f"{job.id}.json").read_text())
        names = [str(n) for n in marker["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not names or not all((out / n).is_file() for n in names):
        return None
    return _record(out, job, names, marker.get("seed"), None, marker.get("seconds", 0.0))


def remove_partials(out: Path, jobs: list[Job]) -> int:
    """Delete half-written files a killed run left for these jobs (only ours: `ID-*.part`)."""
    if not out.is_dir():
        return 0
    ids = {job.id for job in jobs}
    removed = 0
    for path in [*out.glob(f"*{PART}"), *(out / DONE_DIR).glob(f"*{PART}")]:
        if any(path.name.startswith((f"{i}-", f"{i}.")) for i in ids):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
