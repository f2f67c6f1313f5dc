"""`python -m benchmarks.gpucheck --device cpu --quick`: the GPU check, end to end on the CPU, so
that it keeps working on machines without a GPU. It includes torch.compile with
Inductor: a cold boot writes the cache, then a fresh boot loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu-check")
    weights = tmp_path_factory.mktemp("gpucheck-weights")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICLIGHT_", "TORCHINDUCTOR_"))}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "benchmarks.gpucheck", str(out), "--device", "cpu", "--quick"]
    cmd += ["--weights", str(weights)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "gpu-check.json").read_text()), run.stdout


def test_every_section_ran(report) -> None:
    data, printed = report
    assert data["mode"] == "quick" and data["machine"]["device"] == "cpu"
    assert data["weights"]["size"] == "tiny" and data["setup"]["ours_s"] > 0
    assert "no --reference" in data["parity"]["skipped"]
    assert set(data["speed"]) == {"1 image", "4 images, Left Light", "compute_normal"}
    assert all(s["ours_s"] > 0 and "background removal" in s["stages_s"] for s in data["speed"].values())
    for s in data["speed"].values():  # the stages without the image encoding
        encoding = s["stages_s"]["image encoding"] / (s["ours_s"] / s["ours_per_image_s"])
        assert 0 < s["gpu_per_image_s"] <= s["ours_per_image_s"] - encoding + 1e-9
    assert "s/image of the stages, without encoding the images" in printed
    assert data["memory"]["flat"] and len(data["memory"]["samples"]) == 5
    assert all(b["status"] == "completed" and b["next_prediction_s"] > 0 for b in data["big"].values())
    for part in ("parity with the hosted code", "speed (best of runs)", "big requests", "eager", "compile"):
        assert part in printed
    sections = ("weights", "setup", "parity", "speed", "memory", "settings", "compile", "big")
    assert list(data["sections_s"]) == list(sections) and not data["skipped"]


def test_settings_against_eager(report) -> None:
    rows = {r["setting"]: r for r in report[0]["settings"]}
    assert {"eager", "fused_qkv", "channels_last", "attention=math"} <= rows.keys()
    for row in rows.values():
        assert "error" not in row, row
        assert row["within_tolerance"] and row["gain"] > 0


def test_compile_cache_is_written_then_loaded(report) -> None:
    boots = report[0]["compile"]
    cold, warm = boots["cold"], boots["warm"]
    assert cold["warm_cache"] is False and cold["fx_cache_misses"] >= 1, cold
    assert warm["warm_cache"] is True and warm["fx_cache_hits"] >= 1 and warm["fx_cache_misses"] == 0
    for boot in (cold, warm):  # both measured: a time limit may end the run after the cold boot
        assert boot["graphs"] == 1  # one dynamic graph for both passes and four sizes
        assert boot["vs_eager"]["mean"] <= 1.0
        assert 0 < boot["one_image_gpu_s"] < boot["one_image_s"] and 0 < boot["gpu_per_image_s"] < boot["per_image_s"]
    assert warm["compile_s"] < cold["compile_s"]


def test_host_syncs_are_counted_per_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting itself (CUDA's sync debug mode is stood in for: this is a CPU build)."""
    import types
    import warnings

    import torch

    from benchmarks.gpucheck import host_syncs

    modes = []
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def pipe(syncs: int):
        def call(**kwargs):
            for _ in range(syncs):
                warnings.warn("called a synchronizing CUDA operation", stacklevel=1)
            return "latents"

        return call

    t2i, i2i = pipe(1), pipe(3)
    fake = types.SimpleNamespace(device=torch.device("cuda"), t2i=t2i, i2i=i2i)
    with host_syncs(fake) as counts:
        assert fake.t2i(prompt="x") == "latents" and fake.i2i() == "latents" and fake.i2i() == "latents"
    assert counts == {"low-res pass": 1, "high-res pass": 6}
    assert fake.t2i is t2i and fake.i2i is i2i and modes == ["warn", "default"] * 3


def test_a_time_limit_skips_late_sections_and_a_partial_report_prints(tmp_path, capsys) -> None:
    from benchmarks.gpucheck import Progress, Report, main

    report = Report("full", {"device": "cuda", "torch": "2.11.0", "torch_cuda": "13.0"})
    progress = Progress(report, tmp_path, limit=0.0, skip={"big"})
    with progress.section("parity"):
        report.parity = {"skipped": "no --reference"}
    assert not progress.wants("big") and not progress.wants("memory")
    progress.save()
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert saved["skipped"] == {"big": "--skip", "memory": "out of time (--time-limit)"}
    assert saved["sections_s"]["parity"] >= 0 and saved["speed"] == {}

    assert main([str(tmp_path / "gpu-check.json"), "--table"]) == 0
    printed = capsys.readouterr().out
    assert "parity with the hosted code" in printed and "speed (best of runs)" not in printed
    assert "skipped: memory (out of time (--time-limit))" in printed and "skipped: big (--skip)" in printed


def test_a_compile_process_stops_at_the_time_limit(tmp_path) -> None:
    from benchmarks.gpucheck import Progress, Report, _child

    progress = Progress(Report("full", {}), tmp_path, limit=1.0, skip=set())
    sleeper = [
        sys.executable,
        "-c",
        "import sys, time; print('compiling', file=sys.stderr, flush=True); time.sleep(60)",
    ]
    stopped = {"error": "stopped after 1 s (--time-limit or 30 min); it had said: compiling"}
    assert _child(sleeper, dict(os.environ), progress) == stopped  # where it got to, for the next run
    assert _child(sleeper, dict(os.environ), progress) == {"skipped": "out of time (--time-limit)"}
    assert (
        _child(
            [sys.executable, "-c", "print('ok')"], dict(os.environ), Progress(Report("full", {}), tmp_path, None, set())
        )
        == "ok\n"
    )


def test_compiled_boots_make_their_own_eager_image_where_the_settings_did_not(
    weights_dir, tmp_path, monkeypatch
) -> None:
    """A run that measures only compiling (--skip settings, to fit a time limit)
    still compares the compiled pixels with eager float16; the settings section's image is kept."""
    import numpy as np
    import torch
    from PIL import Image

    from benchmarks import gpucheck as g

    subject, background = g.inputs(tmp_path)
    images = (g.with_alpha(subject, tmp_path), background)
    booted = []

    def compiled_child(cmd: list[str], env: dict[str, str], progress: g.Progress) -> str:
        booted.append(env[g.COMPILE_ENV])
        eager = np.asarray(Image.open(tmp_path / g.EAGER_IMAGE))  # made before the first boot
        Image.fromarray(255 - eager).save(tmp_path / "compiled.png")
        return "compiling...\n" + json.dumps({"image": str(tmp_path / "compiled.png")}) + "\n"

    def boots() -> g.Report:
        report = g.Report("quick", {})
        g.compiled_boots(
            weights_dir, torch.device("cpu"), g.QUICK, images, tmp_path, g.Progress(report, tmp_path, None, set())
        )
        return report

    monkeypatch.setattr(g, "_child", compiled_child)
    report = boots()
    eager = np.asarray(Image.open(tmp_path / g.EAGER_IMAGE), dtype=np.float32)
    assert booted == ["1", "1"] and eager.std() > 0  # a relit image, not a blank
    for boot in ("cold", "warm"):
        assert report.compile[boot]["vs_eager"]["mean"] == pytest.approx(np.abs(2 * eager - 255).mean())

    Image.new("RGB", (8, 8), 77).save(tmp_path / g.EAGER_IMAGE)  # as the settings section left it
    boots()
    assert np.asarray(Image.open(tmp_path / g.EAGER_IMAGE)).max() == 77


def test_non_finite_values_are_counted_when_the_block_ends() -> None:
    """Counted on the device and read once at the end, so that no step waits for the host."""
    import torch

    from benchmarks.gpucheck import non_finite

    layer = torch.nn.Identity()
    with non_finite(layer) as bad:
        layer(torch.tensor([1.0, float("nan"), float("inf")]))
        layer(torch.tensor([float("-inf"), 0.0]))
        assert bad == [0]
    assert bad == [3]


def test_every_section_can_be_skipped_for_a_second_run(tmp_path, capsys) -> None:
    """A second run measures only what the first one left out."""
    from benchmarks.gpucheck import EAGER_IMAGE, EXTRA_BOOTS, SKIPPABLE, main

    out, weights = tmp_path / "out", tmp_path / "weights"
    out.mkdir()
    (out / EAGER_IMAGE).write_bytes(b"an earlier run's")  # never compared with this run's boots
    argv = [str(out), "--device", "cpu", "--quick", "--weights", str(weights), "--skip", ",".join(SKIPPABLE)]
    assert main(argv) == 0
    assert not (out / EAGER_IMAGE).exists()
    data = json.loads((out / "gpu-check.json").read_text())
    assert list(data["sections_s"]) == ["weights", "setup"] and set(data["skipped"]) == set(SKIPPABLE) - set(
        EXTRA_BOOTS
    )
    assert data["parity"] == data["speed"] == {} and data["settings"] == []
    assert "skipped: compile (--skip)" in capsys.readouterr().out


def test_a_failing_section_is_recorded_and_the_run_goes_on(tmp_path) -> None:
    from benchmarks.gpucheck import Progress, Report, table

    report = Report("full", {"device": "cuda", "torch": "2.11.0", "torch_cuda": "13.0"})
    progress = Progress(report, tmp_path, limit=None, skip=set())
    with progress.section("big"):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    with progress.section("compile"):
        report.compile["warm"] = {"skipped": "out of time (--time-limit)"}
    saved = json.loads((tmp_path / "gpu-check.json").read_text())
    assert "an illegal memory access" in saved["errors"]["big"] and set(saved["sections_s"]) == {"big", "compile"}
    assert "FAILED: big: RuntimeError: CUDA error: an illegal memory access" in table(report)
    with pytest.raises(ValueError), progress.section("setup", fatal=True):
        raise ValueError("no weights")
    assert (
        "setup" not in report.errors and "setup" in json.loads((tmp_path / "gpu-check.json").read_text())["sections_s"]
    )


def test_hosted_code_that_does_not_load_costs_only_its_own_figures(tmp_path, capsys, monkeypatch) -> None:
    from benchmarks.gpucheck import main

    monkeypatch.setattr(sys, "path", list(sys.path))  # Hosted puts the reference folder first,
    monkeypatch.delitem(sys.modules, "ref_run", raising=False)  # then imports its runner

    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "ref_predict.py").write_text("")
    (ref / "ref_run.py").write_text("def load_reference(*args):\n    raise ImportError('diffusers too old')\n")
    out = tmp_path / "out"
    skip = "speed,memory,settings,compile,big"
    argv = [str(out), "--device", "cpu", "--quick", "--weights", str(tmp_path / "w"), "--reference", str(ref)]
    try:
        assert main([*argv, "--skip", skip]) == 0
    finally:
        sys.modules.pop("ref_run", None)
    data = json.loads((out / "gpu-check.json").read_text())
    assert "diffusers too old" in data["errors"]["hosted setup"]
    assert data["parity"] == {"skipped": "the hosted code did not load: see FAILED"}
    assert "FAILED: hosted setup: ImportError: diffusers too old" in capsys.readouterr().out


def test_hosted_times_include_encoding_its_images(tmp_path, monkeypatch) -> None:
    """Ours are timed with the output files encoded, so the hosted code's are too, as its
    predictor does it: one after the other, in the requested format and quality."""
    import numpy as np

    import benchmarks.gpucheck as G

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "ref_run", raising=False)
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "ref_run.py").write_text(
        "import numpy as np\n"
        "def load_reference(*args):\n    return 'ref'\n"
        "def run_case(ref, case, folder):\n"
        "    return [np.full((8, 8, 3), v, np.uint8) for v in (1, 2, 3)]\n"
    )
    saved = []
    monkeypatch.setattr(
        G, "save_image", lambda image, path, fmt, quality: saved.append((int(image[0, 0, 0]), fmt, quality))
    )
    try:
        hosted = G.Hosted(ref, tmp_path, G.torch.device("cpu"), (tmp_path / "s.png", tmp_path / "b.png"))
        run = hosted.run({"output_quality": 70})
    finally:
        sys.modules.pop("ref_run", None)
    assert saved == [(1, "webp", 70), (2, "webp", 70), (3, "webp", 70)]
    images = run["images"]
    assert [int(i[0, 0, 0]) for i in images] == [3, 2, 1] and run["predict_s"] > 0
    assert "working_cuda_gb" not in run and hosted.cuda_gb is None  # no CUDA memory on the CPU
    assert isinstance(images[0], np.ndarray)
