"""The GPU reports kept in docs/gpu: each still prints, with the figures the docs quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "name, gpu, parity, in_a_row",
    [
        ("h200-2026-11-26-gpu-check.json", "NVIDIA H200", "0.47/2", "2.483 -> 2.483"),
        ("h100-2026-11-26-gpu-check.json", "NVIDIA H100 80GB HBM3", "0.00/0", "2.586 -> 2.586"),
    ],
)
def test_the_gpu_reports_in_docs_still_print(capsys, name: str, gpu: str, parity: str, in_a_row: str) -> None:
    """The GPU runs that docs/performance.md quotes: the report format stays readable."""
    from benchmarks.gpucheck import main

    assert main([str(ROOT / "docs/gpu" / name), "--table"]) == 0
    printed = capsys.readouterr().out
    assert f"{gpu}, driver 580.159.04" in printed
    assert f"1 image                {parity}" in printed
    assert f"20 in a row: allocated CUDA GB {in_a_row} (flat)" in printed


def test_the_h100_compile_report_prints_its_compiled_figures(capsys) -> None:
    """The compiled-UNet run docs/performance.md quotes: the warm boot's GPU s/image, the boots that stopped."""
    from benchmarks.gpucheck import main

    assert main([str(ROOT / "docs/gpu/h100-2026-11-26-compile.json"), "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    warm = next(line for line in lines if "(warm)" in line)
    assert warm.startswith("  fused_qkv+compile (warm)") and "GPU s/image 1.01, 1 image 1.61" in warm
    assert "graphs 1, FX cache hits 1" in warm
    assert any(line.startswith("  compile, cold (weights prepare --compile): 437.8 s") for line in lines)
    assert any(line.startswith("  compiled, CUDA graphs: failed: stopped after 155 s") for line in lines)


def test_the_h100_channels_last_and_vae_report_prints_the_target_met(capsys) -> None:
    """The run that met the 1.0 s per image target: both compiled settings under it, within 1 grey level of eager."""
    from benchmarks.gpucheck import main

    assert main([str(ROOT / "docs/gpu/h100-2026-11-27-compile.json"), "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {name: next(line for line in lines if f"({name})" in line) for name in ("cold", "warm", "with the VAE")}
    assert rows["cold"].startswith("  fused_qkv+channels_last+compile (cold)") and "GPU s/image 0.97" in rows["cold"]
    assert "GPU s/image 0.95, 1 image 1.95  boot 46.1 s" in rows["warm"]
    assert rows["with the VAE"].startswith("  fused_qkv+channels_last+compile+compile_vae (with the VAE)")
    assert "GPU s/image 0.92, 1 image 1.28" in rows["with the VAE"]
    assert all("vs eager 0.47/2" in row for row in rows.values())


def test_a_boot_that_ran_without_cuda_graphs_says_so() -> None:
    from benchmarks.gpu.plan import Report
    from benchmarks.gpu.tables import table

    report = Report(**json.loads((ROOT / "docs/gpu/h200-2026-11-26-gpu-check.json").read_text()))
    warm = report.compile["warm"]
    report.compile["CUDA graphs"] = {**warm, "setting": "fused_qkv+compile+cuda_graphs", "cuda_graph_skips": 2}
    lines = table(report).splitlines()
    graphs = next(line for line in lines if "(CUDA graphs)" in line)
    assert "ran without CUDA graphs 2x" in graphs
    assert not any("without CUDA graphs" in line for line in lines if "(warm)" in line)


def test_memory_is_shown_beside_the_hosted_codes() -> None:
    from benchmarks.gpu.plan import Report
    from benchmarks.gpu.tables import table

    report = Report(**json.loads((ROOT / "docs/gpu/h200-2026-11-26-gpu-check.json").read_text()))
    report.setup |= {"ours_cuda_gb": 2.31, "hosted_cuda_gb": 2.4}
    report.speed["1 image"] |= {"working_cuda_gb": 1.5, "hosted_working_cuda_gb": 2.25}
    printed = table(report)
    assert "weights on the GPU: ours 2.31 GB, the hosted code's 2.40 GB" in printed
    one = next(line for line in printed.splitlines() if line.startswith("  1 image") and "1.85" in line)
    assert one.endswith("1.50/2.25") and "working GB ours/hosted" in printed


def test_the_unet_graphs_counts_are_shown() -> None:
    from benchmarks.gpu.plan import Report
    from benchmarks.gpu.tables import table

    report = Report(**json.loads((ROOT / "docs/gpu/h200-2026-11-26-gpu-check.json").read_text()))
    counts = {"recorded": 2, "replays": 150, "eager": 75, "failed": 0, "kept": 2}
    report.setup["unet_graphs"] = counts
    one = {"one_image_s": 1.31, "one_image_gain": 1.41, "one_image_vs_eager": {"mean": 0.0, "p99": 0.0, "max": 0.0}}
    row = {**report.settings[0], "setting": "unet_graphs", "unet_graphs": counts | {"replays": 50}, **one}
    report.settings.append(row)
    lines = table(report).splitlines()
    assert "  UNet CUDA graphs: 2 recorded, 150 replays, 75 calls eager, 0 failed" in lines
    line = next(line for line in lines if line.startswith("  unet_graphs "))
    assert "; 1 image 1.31 s, 1.41x, 0.00/0  (UNet CUDA graphs: 2 recorded, 50 replays" in line
