"""`python -m benchmarks.gpucheck --device cpu --quick`: the GPU check on the CPU, so that it keeps
working on machines without a GPU: its speed sections end to end, and each other part on its own
(the compiled boots with a stand-in child process, the time limit, the report)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.gpu import boots as boots_module
from benchmarks.gpu import hosted as hosted_module
from benchmarks.gpu.boots import _child
from benchmarks.gpu.common import host_syncs, inputs, non_finite, with_alpha
from benchmarks.gpu.plan import COMPILE_ENV, EAGER_IMAGE, EXTRA_BOOTS, QUICK, SKIPPABLE, Report
from benchmarks.gpu.progress import Progress
from benchmarks.gpu.tables import table
from benchmarks.gpucheck import main

REPORT = "gpu-check.json"
FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=1, light_source="Left Light")


def test_the_cpu_mode_measures_speed_end_to_end(tmp_path: Path, capsys) -> None:
    """The sections that measure one relighter, on the CPU with tiny weights; the compiled boots
    and the settings sweep are checked piece by piece below (`make gpu-quick`'s CPU mode runs
    every setting through every feature: tests/models/test_deployment.py)."""
    out = tmp_path / "out"
    argv = [str(out), "--device", "cpu", "--quick", "--weights", str(tmp_path / "w")]
    assert main([*argv, "--skip", "memory,settings,compile,big"]) == 0
    data = json.loads((out / "gpu-check.json").read_text())
    assert data["mode"] == "quick" and data["weights"]["size"] == "tiny" and data["setup"]["ours_s"] > 0
    assert set(data["speed"]) == {"1 image", "4 images, Left Light", "compute_normal"} and not data["errors"]
    for s in data["speed"].values():  # the stages without the image encoding
        encoding = s["stages_s"]["image encoding"] / (s["ours_s"] / s["ours_per_image_s"])
        assert 0 < s["gpu_per_image_s"] <= s["ours_per_image_s"] - encoding + 1e-9
    printed = capsys.readouterr().out
    assert "speed (best of runs)" in printed and "s/image of the stages, without encoding the images" in printed


def test_host_syncs_are_counted_in_both_real_passes(relighter, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting wraps the two diffusion passes a relight really runs (CUDA's sync debug mode is
    stood in for: this is a CPU build, where the counts stay 0)."""
    from iclight.pipeline.passes import Diffusion

    modes, passes = [], (Diffusion._first_pass, Diffusion._second_pass)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)
    with host_syncs(torch.device("cuda")) as counts:
        relighter.relight(np.zeros((64, 64, 3), np.uint8), None, "x", mask=np.full((64, 64), 255, np.uint8), **FAST)
    assert counts == {"low-res pass": 0, "high-res pass": 0} and modes == ["warn", "default"] * 2
    assert (Diffusion._first_pass, Diffusion._second_pass) == passes


def test_a_time_limit_skips_late_sections_and_a_partial_report_prints(tmp_path, capsys) -> None:
    report = Report("full", {"device": "cuda", "torch": "2.11.0", "torch_cuda": "13.0"})
    progress = Progress(report, tmp_path, limit=0.0, skip={"big"}, name=REPORT)
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
    progress = Progress(Report("full", {}), tmp_path, limit=1.0, skip=set(), name=REPORT)
    sleeper = [
        sys.executable,
        "-c",
        "import sys, time; print('compiling', file=sys.stderr, flush=True); time.sleep(60)",
    ]
    stopped = {"error": "stopped after 1 s (--time-limit or 30 min); it had said: compiling"}
    assert _child(sleeper, dict(os.environ), progress) == stopped  # where it got to, for the next run
    assert _child(sleeper, dict(os.environ), progress) == {"skipped": "out of time (--time-limit)"}
    unlimited = Progress(Report("full", {}), tmp_path, None, set(), REPORT)
    assert _child([sys.executable, "-c", "print('ok')"], dict(os.environ), unlimited) == "ok\n"


def test_compiled_boots_make_their_own_eager_image_where_the_settings_did_not(
    weights_dir, tmp_path, monkeypatch
) -> None:
    """A run that measures only compiling (--skip settings, to fit a time limit)
    still compares the compiled pixels with eager float16; the settings section's image is kept."""
    from PIL import Image

    subject, background = inputs(tmp_path)
    images = (with_alpha(subject, tmp_path), background)
    booted = []

    def compiled_child(cmd: list[str], env: dict[str, str], progress: Progress) -> str:
        booted.append(env[COMPILE_ENV])
        eager = np.asarray(Image.open(tmp_path / EAGER_IMAGE))  # made before the first boot
        Image.fromarray(255 - eager).save(tmp_path / "compiled.png")
        return "compiling...\n" + json.dumps({"image": str(tmp_path / "compiled.png")}) + "\n"

    def boots() -> Report:
        report = Report("quick", {})
        progress = Progress(report, tmp_path, None, set(), REPORT)
        boots_module.compiled_boots(weights_dir, torch.device("cpu"), QUICK, images, tmp_path, progress)
        return report

    monkeypatch.setattr(boots_module, "_child", compiled_child)
    report = boots()
    eager = np.asarray(Image.open(tmp_path / EAGER_IMAGE), dtype=np.float32)
    assert booted == ["1", "1"] and eager.std() > 0  # a relit image, not a blank
    for boot in ("cold", "warm"):
        assert report.compile[boot]["vs_eager"]["mean"] == pytest.approx(np.abs(2 * eager - 255).mean())

    Image.new("RGB", (8, 8), 77).save(tmp_path / EAGER_IMAGE)  # as the settings section left it
    boots()
    assert np.asarray(Image.open(tmp_path / EAGER_IMAGE)).max() == 77


def test_non_finite_values_are_counted_when_the_block_ends() -> None:
    """Counted on the device and read once at the end, so that no step waits for the host."""
    layer = torch.nn.Identity()
    with non_finite(layer) as bad:
        layer(torch.tensor([1.0, float("nan"), float("inf")]))
        layer(torch.tensor([float("-inf"), 0.0]))
        assert bad == [0]
    assert bad == [3]


def test_every_section_can_be_skipped_for_a_second_run(tmp_path, capsys) -> None:
    """A second run measures only what the first one left out."""
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
    report = Report("full", {"device": "cuda", "torch": "2.11.0", "torch_cuda": "13.0"})
    progress = Progress(report, tmp_path, limit=None, skip=set(), name=REPORT)
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
        hosted_module, "save_image", lambda image, path, fmt, quality: saved.append((int(image[0, 0, 0]), fmt, quality))
    )
    try:
        hosted = hosted_module.Hosted(ref, tmp_path, torch.device("cpu"), (tmp_path / "s.png", tmp_path / "b.png"))
        run = hosted.run({"output_quality": 70})
    finally:
        sys.modules.pop("ref_run", None)
    assert saved == [(1, "webp", 70), (2, "webp", 70), (3, "webp", 70)]
    images = run["images"]
    assert [int(i[0, 0, 0]) for i in images] == [3, 2, 1] and run["predict_s"] > 0
    assert "working_cuda_gb" not in run and hosted.cuda_gb is None  # no CUDA memory on the CPU
    assert isinstance(images[0], np.ndarray)
