"""Job lists (folders, list files, JSONL manifests), stable ids, and the local batch:
resumable, a bad line or file failing only its job, results.jsonl for every job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iclight import cli
from iclight.jobs import files, run
from iclight.jobs.manifest import read_jobs

SMALL = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1.0"]


@pytest.fixture
def catalogue(tmp_path: Path, subject_array: np.ndarray, background_array: np.ndarray) -> Path:
    """subjects/{a,b,c}.png (own alpha: no background removal), subjects/broken.png, bg.png."""
    folder = tmp_path / "subjects"
    folder.mkdir()
    for name in ("a", "b", "c"):
        img = Image.fromarray(subject_array).convert("RGBA")
        img.putalpha(Image.fromarray(np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8)))
        img.save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    Image.fromarray(background_array).save(tmp_path / "bg.png")
    return tmp_path


def _manifest(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_manifest_lines_become_jobs_with_cli_defaults(catalogue: Path) -> None:
    manifest = _manifest(
        catalogue / "jobs.jsonl",
        [
            {"id": "shoe-1", "subject": "subjects/a.png", "background": "bg.png", "prompt": "sunset", "seed": 7},
            {"subject": "subjects/b.png", "prompt": "neon", "light_source": "Left Light", "number_of_images": 2},
            "# a comment",
            "",
            {"subject": "subjects/c.png", "background": "bg.png", "mask": "subjects/a.png", "detail_transfer": 0.5},
        ],
    )
    got = read_jobs(manifest, settings={"prompt": "studio", "steps": 3})
    assert [j.error for j in got] == [None, None, None]
    first, second, third = got
    assert first.id == "shoe-1" and first.spec.seed == 7 and first.spec.steps == 3
    assert first.spec.subject == str(catalogue / "subjects/a.png")
    assert first.spec.background == str(catalogue / "bg.png")
    assert second.spec.background is None and second.spec.number_of_images == 2 and second.spec.prompt == "neon"
    assert third.spec.prompt == "studio" and third.spec.mask == str(catalogue / "subjects/a.png")
    assert third.spec.detail_transfer == 0.5 and third.source == "jobs.jsonl:5"


def test_bad_lines_fail_only_their_job(catalogue: Path) -> None:
    manifest = _manifest(
        catalogue / "jobs.jsonl",
        [
            {"subject": "subjects/a.png", "background": "bg.png", "prompt": "ok"},
            "{not json",
            '["a", "list"]',
            {"subject": "subjects/a.png", "prompt": "x", "colour": "red"},
            {"background": "bg.png", "prompt": "no subject"},
            {"subject": "subjects/a.png", "background": "bg.png", "prompt": "x", "width": 500},
            {"subject": "subjects/a.png", "prompt": "x"},  # needs a background for the default light
            {"id": "../escape", "subject": "subjects/a.png", "background": "bg.png", "prompt": "x"},
            {"subject": "subjects/a.png", "background": "bg.png", "prompt": "x", "detail_transfer": 3},
            {"id": "twin", "subject": "subjects/a.png", "background": "bg.png", "prompt": "x"},
            {"id": "twin", "subject": "subjects/b.png", "background": "bg.png", "prompt": "x"},
        ],
    )
    got = read_jobs(manifest)
    errors = [j.error for j in got]
    assert errors[0] is None and errors[9] is None
    expected = [
        "not valid JSON",
        "expected a JSON object",
        "colour: unknown field",
        "subject: required",
        "width: 500 is not allowed",
        "background_image: required",
        "id: '../escape'",
        "detail_transfer: 3 is out of range",
        "id: 'twin' is already used by jobs.jsonl:10",
    ]
    for want, error in zip(expected, errors[1:9] + errors[10:], strict=True):
        assert error and want in error, (want, error)
    assert len({j.id for j in got}) == len(got)  # even failed jobs have distinct ids


def test_ids_are_stable_and_follow_the_inputs(catalogue: Path) -> None:
    folder = catalogue / "subjects"
    once = read_jobs(folder, [catalogue / "bg.png"], {"prompt": "sun"})
    again = read_jobs(folder, [catalogue / "bg.png"], {"prompt": "sun"})
    other = read_jobs(folder, [catalogue / "bg.png"], {"prompt": "moon"})
    assert [j.id for j in once] == [j.id for j in again]
    assert [j.id.split("-")[0] for j in once] == ["a__bg", "b__bg", "broken__bg", "c__bg"]
    assert not {j.id for j in once} & {j.id for j in other}
    listed = catalogue / "list.txt"
    listed.write_text("subjects/a.png\n# skipped\nsubjects/b.png\n")
    assert [j.spec.subject for j in read_jobs(listed, [catalogue / "bg.png"], {"prompt": "x"})] == [
        str(catalogue / "subjects/a.png"),
        str(catalogue / "subjects/b.png"),
    ]


def test_derived_ids_are_those_of_earlier_versions(tmp_path: Path) -> None:
    """A batch half done before an upgrade is recognised after it: the same lines, the same ids
    (these were derived by version 0.2.0 before the relight became one checked value)."""
    lines = [
        {"subject": "subject.png", "background": "background.png", "prompt": "sunset"},
        {"subject": "subject.png", "prompt": "neon", "light_source": "Left Light", "seed": 5, "keep_colors": 0.5,
         "light_color": "orange"},
        {"subject": "subject.png", "background": "background.png", "prompt": "x", "sampler": "euler",
         "light_start": 0.7, "output_format": "png"},
    ]  # fmt: skip
    got = [j.id for j in read_jobs(_manifest(tmp_path / "jobs.jsonl", lines))]
    assert got == ["subject__background-dd53c08742", "subject-fc6bc469ab", "subject__background-ca02b687f8"]
    clip_skip = read_jobs(_manifest(tmp_path / "skip.jsonl", [lines[0] | {"clip_skip": 2}]))[0].id
    assert clip_skip != got[0]  # an option newer than the ids counts where it is set


def _batch(weights_dir: Path, source: Path, out: Path, *extra: str) -> int:
    argv = ["batch", str(source), "--prompt", "sun", *SMALL, "-o", str(out), *extra]
    return cli.main([*argv, "--weights", str(weights_dir), "--device", "cpu"])


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_local_batch_resumes_and_reports_failures(weights_dir: Path, catalogue: Path, monkeypatch, capsys) -> None:
    out = catalogue / "out"
    source, bg = catalogue / "subjects", str(catalogue / "bg.png")
    real, calls = run.execute, []

    def interrupted(relighter, job):
        calls.append(job.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(relighter, job)

    monkeypatch.setattr(run, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _batch(weights_dir, source, out, "--background", bg, "--seed", "21")
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.webp")}
    assert sorted(n.split("-")[0] for n in first) == ["a__bg", "b__bg"]
    # A run killed after b's files but before its done-marker: the rerun must do b again.
    (b_marker,) = (out / files.DONE_DIR).glob("b__bg*.json")
    b_marker.unlink()
    b_image = next(n for n in first if n.startswith("b__bg"))
    b_bytes = (out / b_image).read_bytes()

    monkeypatch.setattr(run, "execute", real)
    capsys.readouterr()
    assert _batch(weights_dir, source, out, "--background", bg, "--seed", "21") == 1  # one file failed
    text = capsys.readouterr().out
    assert "4 jobs: 1 already done, 3 to run" in text
    assert "FAILED broken__bg" in text and "broken.png" in text and "subject_image" in text
    untouched = {n: t for n, t in first.items() if n != b_image}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.webp") if p.name in untouched} == untouched
    assert (out / b_image).stat().st_mtime_ns != first[b_image] and (out / b_image).read_bytes() == b_bytes
    assert (out / files.DONE_DIR / b_marker.name).is_file()
    assert len(list(out.glob("*.webp"))) == 3 and not list(out.rglob("*.part"))
    results = _results(out)
    assert [r["status"] for r in results] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert all(r["seed"] == 21 for r in results)
    assert "not an image" in results[2]["error"] and results[2]["outputs"] == []
    for r in results[:2] + results[3:]:
        (path,) = r["outputs"]
        assert Path(path).is_file() and Path(path).with_suffix(".json").is_file()


def test_random_seeds_are_recorded(weights_dir: Path, catalogue: Path) -> None:
    out = catalogue / "out"
    manifest = _manifest(catalogue / "jobs.jsonl", [{"id": "r", "subject": "subjects/a.png", "background": "bg.png"}])
    assert _batch(weights_dir, manifest, out) == 0
    (record,) = _results(out)
    assert isinstance(record["seed"], int)
    recipe = json.loads(Path(record["outputs"][0]).with_suffix(".json").read_text())
    assert recipe["parameters"]["seed"] == record["seed"]
