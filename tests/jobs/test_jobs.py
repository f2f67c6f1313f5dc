"""Job lists (folders, list files, JSONL manifests), stable ids, and the local batch:
resumable, a bad line or file failing only its job, results.jsonl for every job."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from iclight import cli
from iclight.core import options as O
from iclight.core.lora import Lora
from iclight.jobs import files, identity, run
from iclight.jobs.identity import Contents, Identity, Model
from iclight.jobs.manifest import read_jobs
from iclight.pipeline import standins
from iclight.store import layout
from iclight.store.basemodel import resolve

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


@pytest.fixture
def user_lora(weights_dir: Path, tmp_path: Path) -> Path:
    return standins.write_lora(weights_dir, tmp_path / "style.safetensors")


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


# -- a job's id covers everything that makes its images --------------------------------------------

# A value other than the default for every option a line can hold (light settings under a designed
# light's rules, an HDRI's under a panorama); a new option needs one here, or the walk fails.
OTHER = {
    "prompt": "moon", "appended_prompt": "", "negative_prompt": "blur", "compute_normal": True, "width": 320,
    "height": 320, "steps": 4, "cfg": 3.0, "highres_scale": 2.0, "highres_denoise": 0.7,
    "light_source": "Right Light", "seed": 9, "number_of_images": 2, "output_format": "png",
    "output_quality": 90, "detail_transfer": 0.5, "keep_background": True, "matting": "birefnet-lite",
    "light_angle": 30.0, "light_color": "orange", "light_bright": 200.0, "light_dark": 10.0, "light_shape": "spot",
    "light_x": 0.2, "light_y": 0.3, "light_radius": 0.4, "fill_angle": 90.0, "fill_color": "blue",
    "fill_strength": 0.3, "light_mix": 0.5, "hdri_heading": 90.0, "hdri_pitch": 10.0, "hdri_fov": 70.0,
    "hdri_exposure": 1.0, "hdri_light": 0.2, "keep_colors": 0.5, "sampler": "euler", "light_start": 0.8,
    "clip_skip": 2, "consistency": 0.2, "shared_noise": False, "smooth_mattes": False, "window": 4,
    "layers": "attn1", "background_fit": "loop", "hdri_turn": 10.0, "start": 1, "end": 3, "stride": 2,
    "model": "fc", "lowres_denoise": 0.5, "highres_pass": False, "batch_noise": True,
}  # fmt: skip
FILE_OPTIONS = {"mask": "subjects/b.png", "light_map": "bg.png", "hdri": "pano.png", "masks": "subjects"}


def _ids(catalogue: Path, lines: list[dict], identity=None) -> list[str]:
    jobs = read_jobs(_manifest(catalogue / "ids.jsonl", lines), identity=identity)
    assert [j.error for j in jobs] == [None] * len(jobs), [j.error for j in jobs]
    return [j.id for j in jobs]


def _line(name: str) -> dict:
    """A line that can take option `name`, with and without the background it needs."""
    sequence = name in [o.name for o in O.SEQUENCE]
    line = {"sequence": "subjects"} if sequence else {"subject": "subjects/a.png"}
    line |= {"prompt": "sun", "background": "bg.png"}
    if name in ("model", "lowres_denoise"):  # the fc model: a subject and a light, no background
        del line["background"]
        line |= {"light_source": "Left Light"} | ({"model": "fc"} if name == "lowres_denoise" else {})
    if name.startswith("hdri") and name != "hdri_turn":
        del line["background"]
        line["hdri"] = "pano-2.png" if name == "hdri" else "pano.png"
    if name in ("mask", "light_map"):
        line[name] = "subjects/c.png"
    if name.startswith("fill_") and name != "fill_angle":
        line["fill_angle"] = 45.0
    if name == "light_mix":
        line["light_source"] = "Left Light"
    return line


def test_every_option_and_every_file_changes_the_id(catalogue: Path, user_lora: Path) -> None:
    for name in ("pano.png", "pano-2.png"):
        Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(catalogue / name)
    table = [o.name for o in (*O.RELIGHT, *O.OUTPUT, *O.SEQUENCE) if o.kind is not None]
    others = OTHER | FILE_OPTIONS | {"loras": [str(user_lora)]}
    assert sorted(set(table) - set(others)) == []
    for name in table:
        line = _line(name)
        other = line | {name: others[name]}
        base, changed = _ids(catalogue, [line, other])
        assert base != changed, name


def test_the_model_and_the_content_of_every_file_change_the_id(
    catalogue: Path, weights_dir: Path, tmp_path: Path, user_lora: Path
) -> None:
    """Each part of the model by content (the bundled SD1.5's, the IC-Light offset, the matting
    model, a LoRA's), a base model and VAE of one's own, the deployment's LoRAs: each makes a new
    job. A job whose files are as the output folder first saw them keeps the id it had before."""
    weights = tmp_path / "weights"
    shutil.copytree(weights_dir, weights)
    lines = [{"subject": "subjects/a.png", "background": "bg.png", "prompt": "sun", "loras": [str(user_lora)]}]
    legacy = _ids(catalogue, lines)[0]

    def ids(model: Model) -> str:
        return _ids(catalogue, lines, Identity(Contents(tmp_path / "out"), model))[0]

    bundled = Model(weights, None, "rmbg-1.4")
    assert ids(bundled) == legacy == ids(bundled)  # first seen now; the same after
    seen = {legacy}
    for rel in (layout.OFFSET_FILE, layout.RMBG_FILE, identity.SD_WEIGHTS[0], str(user_lora)):
        path = weights / rel if not Path(rel).is_absolute() else Path(rel)
        tensors = load_file(str(path))
        save_file({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}, str(path))
        seen.add(ids(bundled))
    assert len(seen) == 5  # each changed file made its own id
    single = standins.write_single_file(weights_dir, tmp_path / "own.safetensors")
    other = standins.write_single_file(weights_dir, tmp_path / "other.safetensors", with_vae=False)
    own = Model(weights, resolve(single), "rmbg-1.4")
    vae = Model(weights, resolve(single, other.with_name("other.vae.safetensors")), "rmbg-1.4")
    assert len(seen | {ids(own), ids(vae)}) == 7
    named_none = [{k: v for k, v in lines[0].items() if k != "loras"}]
    with_lora = Model(weights, None, "rmbg-1.4", (Lora(str(user_lora)),))
    served = (Identity(Contents(tmp_path / "out"), m) for m in (bundled, with_lora))
    assert len({_ids(catalogue, named_none, i)[0] for i in served}) == 2  # ICLIGHT_LORAS count too


def test_an_fc_jobs_id_follows_the_fc_offset_not_fbcs(catalogue: Path, weights_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(weights_dir, weights)
    lines = [{"subject": "subjects/a.png", "prompt": "sun", "model": "fc", "light_source": "Left Light"}]
    identity = Identity(Contents(tmp_path / "out"), Model(weights, None, "rmbg-1.4"))
    first = _ids(catalogue, lines, identity)[0]
    found = []
    for model in ("fbc", "fc"):
        path = weights / layout.OFFSET_FILES[model]
        save_file({k: v + 1 for k, v in load_file(str(path)).items()}, str(path))
        found.append(_ids(catalogue, lines, identity)[0])
    assert found[0] == first != found[1]  # the other model's offset is no part of it


def test_a_batch_with_another_base_model_relights_beside_the_first(
    weights_dir: Path, catalogue: Path, tmp_path: Path, capsys
) -> None:
    out, source, bg = catalogue / "out", catalogue / "subjects" / "a.png", str(catalogue / "bg.png")
    listed = catalogue / "one.txt"
    listed.write_text(f"{source}\n")
    assert _batch(weights_dir, listed, out, "--background", bg, "--seed", "3") == 0
    own = standins.write_single_file(weights_dir, tmp_path / "own.safetensors")
    capsys.readouterr()
    assert _batch(weights_dir, listed, out, "--background", bg, "--seed", "3", "--base-model", str(own)) == 0
    assert "done: 1 succeeded, 0 skipped" in capsys.readouterr().out
    assert len(list(out.glob("*.webp"))) == 2
    assert _batch(weights_dir, listed, out, "--background", bg, "--seed", "3") == 0
    assert "done: 0 succeeded, 1 skipped" in capsys.readouterr().out
