"""gpu-check's report as text (`python -m benchmarks.gpucheck --table FILE`); sections not (yet)
run are left out, and the skipped ones named."""

from __future__ import annotations

from typing import Any

from .plan import Report


def table(r: Report) -> str:
    """The report as text; sections not (yet) run are left out, and the skipped ones named."""
    lines = _head(r) + _parity_lines(r.parity) + _speed_lines(r) + _memory_lines(r) + _settings_lines(r)
    lines += [f"skipped: {name} ({why})" for name, why in r.skipped.items()]
    lines += [f"FAILED: {name}: {error.strip().splitlines()[-1]}" for name, error in r.errors.items()]
    return "\n".join(lines)


def _head(r: Report) -> list[str]:
    m, w, s = r.machine, r.weights, r.setup
    lines = [
        f"gpu-check ({r.mode}) on {m.get('gpu', m['device'])}, driver {m.get('driver', '-')}, torch {m['torch']}"
        f" (CUDA {m['torch_cuda']}), {r.seconds:.0f} s"
    ]
    if w:
        lines.append(
            f"weights: {w['size']} stand-ins, written in {w['write_s']:.1f} s, prepared in {w['prepare_s']:.1f} s"
        )
    if s:
        hosted = f", hosted setup {s['hosted_s']:.2f} s" if "hosted_s" in s else ""
        lines.append(f"setup from prepared weights {s['ours_s']:.2f} s ({s['settings']}){hosted}")
        if s.get("ours_cuda_gb"):
            hosted = f", the hosted code's {s['hosted_cuda_gb']:.2f} GB" if s.get("hosted_cuda_gb") else ""
            lines.append(f"weights on the GPU: ours {s['ours_cuda_gb']:.2f} GB{hosted}")
    return lines


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    if not parity:
        return []
    lines = ["", "parity with the hosted code (mean / p99 grey levels per image; non-finite values):"]
    for name, p in parity.items():
        if name == "skipped":
            lines.append(f"  skipped: {p}")
            continue
        diffs = ", ".join(f"{d['mean']:.2f}/{d['p99']:.0f}" for d in p["images"])
        lines.append(f"  {name:<22} {diffs}  NaN/inf {p['non_finite']}  {'ok' if p['ok'] else 'FAIL'}")
    return lines


def _speed_lines(r: Report) -> list[str]:
    if not r.speed:
        return []
    lines = [
        "",
        f"{'speed (best of runs)':<24} {'ours s':>8} {'s/image':>8} {'hosted s':>9} {'speedup':>8} {'peak GB':>8}"
        f" {'working GB ours/hosted':>23}",
    ]
    for name, s in r.speed.items():
        hosted = f"{s['hosted_s']:>9.2f} {s['speedup']:>7.2f}x" if "hosted_s" in s else f"{'-':>9} {'-':>8}"
        peak = f"{s['peak_cuda_gb']:>8.2f}" if s.get("peak_cuda_gb") else f"{'-':>8}"
        both = (s.get("working_cuda_gb"), s.get("hosted_working_cuda_gb"))
        working = "/".join(f"{gb:.2f}" if gb else "-" for gb in both)
        lines.append(f"  {name:<22} {s['ours_s']:>8.2f} {s['ours_per_image_s']:>8.2f} {hosted} {peak} {working:>23}")
    gpu = [f"{name} {s['gpu_per_image_s']:.2f}" for name, s in r.speed.items() if "gpu_per_image_s" in s]
    if gpu:
        lines.append(f"  s/image of the stages, without encoding the images (GPU time on CUDA): {'; '.join(gpu)}")
    if r.setup.get("unet_graphs"):
        lines.append(f"  UNet CUDA graphs: {_graph_counts(r.setup['unet_graphs'])}")
    if r.machine["device"].startswith("cuda"):
        syncs = "; ".join(
            f"{n}: {s['host_syncs']['low-res pass']}/{s['host_syncs']['high-res pass']}" for n, s in r.speed.items()
        )
        lines.append(f"  host syncs inside the passes (low-res/high-res): {syncs}")
    return lines


def _memory_lines(r: Report) -> list[str]:
    lines = []
    if r.memory:
        mem = r.memory
        lines += [
            "",
            f"{len(mem['samples'])} in a row: {mem['measure']} {mem['samples'][0]:.3f} -> {mem['samples'][-1]:.3f}"
            f" ({'flat' if mem['flat'] else 'GROWING'})",
        ]
    if r.big:
        lines.append("big requests:")
    for name, b in r.big.items():
        done = f"{b['status']} in {b['seconds']:.1f} s" if b["status"] == "completed" else b["status"]
        lines.append(f"  {name:<22} {done}; next prediction {b['next_prediction_s']:.2f} s")
    return lines


def _graph_counts(g: dict[str, int]) -> str:
    return f"{g['recorded']} recorded, {g['replays']} replays, {g['eager']} calls eager, {g['failed']} failed"


def _settings_lines(r: Report) -> list[str]:
    if not (r.settings or r.compile):
        return []
    lines = ["", f"settings, {r.sweep_case} (s: the whole prediction; mean/p99: difference from eager; from hosted)"]
    lines.append(f"{'setting':<34} {'s':>7} {'gain':>6} {'mean':>6} {'p99':>5}")
    for s in r.settings:
        if "vs_eager" not in s:
            lines.append(f"  {s['setting']:<32} {'unavailable: ' + s['error'][:70] if 'error' in s else s['skipped']}")
            continue
        d = s["vs_eager"]
        flag = "" if s["within_tolerance"] else "  > tolerance"
        hosted = f"; {s['vs_hosted']['mean']:.2f}/{s['vs_hosted']['p99']:.0f}" if "vs_hosted" in s else ""
        figures = f"{s['predict_s']:>7.2f} {s['gain']:>5.2f}x {d['mean']:>6.2f} {d['p99']:>5.0f}"
        graphs = f"  (UNet CUDA graphs: {_graph_counts(s['unet_graphs'])})" if s.get("unet_graphs") else ""
        if "one_image_s" in s:
            one = s["one_image_vs_eager"]
            hosted += f"; 1 image {s['one_image_s']:.2f} s, {s['one_image_gain']:.2f}x"
            hosted += f", {one['mean']:.2f}/{one['p99']:.0f}"
        lines.append(f"  {s['setting']:<32} {figures}{hosted}{flag}{graphs}")
    for name, b in r.compile.items():
        if "error" in b or "skipped" in b:
            lines.append(f"  compiled, {name}: {b.get('skipped') or 'failed: ' + b['error'][-300:]}")
        elif "wall_s" in b:
            lines.append(f"  compile, {name}: {b['wall_s']:.1f} s (process start, load, compile, cache written)")
        else:
            diff = f", vs eager {b['vs_eager']['mean']:.2f}/{b['vs_eager']['p99']:.0f}" if "vs_eager" in b else ""
            if b.get("cuda_graph_skips"):
                diff += f", ran without CUDA graphs {b['cuda_graph_skips']}x (TORCH_LOGS=cudagraphs)"
            if b.get("reserved_cuda_gb"):
                diff += f", peak {b['peak_cuda_gb']:.1f} GB, reserved after 4 sizes {b['reserved_cuda_gb']:.1f} GB"
            label = f"{b['setting']} ({name})"
            one = f", 1 image {b['one_image_s']:.2f} s" if "one_image_s" in b else ""
            if "gpu_per_image_s" in b:
                one += f"; GPU s/image {b['gpu_per_image_s']:.2f}, 1 image {b['one_image_gpu_s']:.2f}"
            lines.append(
                f"  {label:<32} {b['predict_s']:>7.2f}{one}  boot {b['boot_s']:.1f} s (compile {b['compile_s']:.1f}"
                f" s), graphs {b['graphs']}, FX cache hits {b['fx_cache_hits']}{diff}"
            )
    return lines
