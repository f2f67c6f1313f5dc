"""Fetching, locking, verifying and preparing weights, all against loopback servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from fileserver import FileServer

from iclight import cli
from iclight.core import constants as C
from iclight.pipeline import Relighter, loading
from iclight.store import fetch, layout

FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, seed=9)
# The stand-in weights: every file of the layout but BiRefNet's general model (see conftest).
STANDIN_FILES = [f.dest for f in layout.MANIFEST if f.dest != layout.BIREFNET_FILE]
WEIGHTS_URL = "ICLIGHT_WEIGHTS_URL"


def _weights(argv: list[str]) -> int:
    """`iclight weights ...` in this process."""
    return cli.main(["weights", *argv])


@pytest.fixture(scope="module")
def mirror_dir(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A locked copy of the stand-in weights, as a team would publish it."""
    root = tmp_path_factory.mktemp("mirror") / "w"
    shutil.copytree(weights_dir, root, ignore=shutil.ignore_patterns(".hashes.json", "prepared", "manifest.json"))
    fetch.lock(root)
    return root


def _same_tree(a: Path, b: Path) -> None:
    for rel in STANDIN_FILES:
        assert fetch.sha256_of(a / rel) == fetch.sha256_of(b / rel), rel


def _relight(root: Path, subject_array: np.ndarray, background_array: np.ndarray) -> np.ndarray:
    mask = np.full(subject_array.shape[:2], 255, np.uint8)  # skip background removal: it isn't under test
    out = Relighter.load(root, device="cpu").relight(subject_array, background_array, "sun", mask=mask, **FAST)
    return np.asarray(out.images[0])


def test_lock_and_verify(mirror_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "c"
    shutil.copytree(mirror_dir, copy)
    assert fetch.verify(copy) == []
    with open(copy / layout.OFFSET_FILE, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    (copy / layout.RMBG_FILE).unlink()
    problems = fetch.verify(copy)
    assert any(p.startswith(f"{layout.OFFSET_FILE}: sha256") for p in problems)
    assert any(p.startswith(f"{layout.RMBG_FILE}: missing") for p in problems)
    assert _weights(["verify", str(copy)]) == 1
    assert _weights(["verify", str(mirror_dir)]) == 0


def test_a_deployment_fetches_only_the_offsets_it_serves(mirror_dir: Path, tmp_path: Path) -> None:
    """`weights fetch --model fc` from a mirror holding both offsets (and a prepared fbc UNet):
    fc's offset comes, fbc's and its prepared UNet do not; the folder verifies as it is."""
    mirror = tmp_path / "mirror"
    shutil.copytree(mirror_dir, mirror)
    (mirror / layout.PREPARED_DIR).mkdir()
    (mirror / layout.PREPARED_DIR / "unet-float16.safetensors").write_bytes(b"fbc's, prepared")
    fetch.lock(mirror)
    dest = tmp_path / "dest"
    with FileServer(mirror) as srv:
        argv = ["fetch", "--dest", str(dest), "--from", srv.url, "--model", "fc", "--matting", "none"]
        assert _weights(argv) == 0
    assert (dest / layout.OFFSET_FILES[C.FC]).is_file() and not (dest / layout.OFFSET_FILES[C.FBC]).exists()
    assert not (dest / layout.PREPARED_DIR).exists()
    assert fetch.verify(dest) == []
    assert [f.dest for f in layout.MANIFEST if layout.model_of_file(f.dest)] == list(layout.OFFSET_FILES.values())


def test_fetch_from_mirror_then_nothing_twice(
    mirror_dir: Path, tmp_path: Path, subject_array: np.ndarray, background_array: np.ndarray
) -> None:
    dest = tmp_path / "dest"
    with FileServer(mirror_dir) as srv:
        got = fetch.fetch(dest, srv.url, workers=3)
        assert len(got) == len(STANDIN_FILES)
        _same_tree(mirror_dir, dest)
        before = len(srv.file_gets())
        assert fetch.fetch(dest, srv.url) == []
        assert len(srv.file_gets()) == before  # the second run downloaded nothing
    assert not list(dest.rglob("*.part"))
    assert fetch.verify(dest) == []
    assert _relight(dest, subject_array, background_array).shape == (256, 256, 3)


def test_workers_booting_together_download_once(mirror_dir: Path, tmp_path: Path) -> None:
    """Several actors on one node fetch into one folder at once: one downloads, the rest wait."""
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "dest"
    with FileServer(mirror_dir) as srv, ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: fetch.fetch(dest, srv.url, workers=2), range(3)))
        assert sorted(len(r) for r in results) == [0, 0, len(STANDIN_FILES)]
        assert len(srv.file_gets()) == len(STANDIN_FILES)
    assert fetch.verify(dest) == []


def test_corrupt_file_on_mirror_fails_naming_it(mirror_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    with FileServer(mirror_dir) as srv:
        srv.corrupt.add(layout.OFFSET_FILE)
        with pytest.raises(fetch.FetchError, match=f"{layout.OFFSET_FILE}: sha256"):
            fetch.fetch(dest, srv.url)
    assert not (dest / layout.OFFSET_FILE).exists()  # never trusted
    assert (dest / layout.RMBG_FILE).is_file()  # the good files landed


def test_cut_download_resumes(mirror_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    size = (mirror_dir / layout.RMBG_FILE).stat().st_size
    with FileServer(mirror_dir) as srv:
        srv.cut_once.add(layout.RMBG_FILE)
        with pytest.raises(fetch.FetchError, match=layout.RMBG_FILE):
            fetch.fetch(dest, srv.url)
        part = dest / (layout.RMBG_FILE + ".part")
        assert 0 < part.stat().st_size < size and not (dest / layout.RMBG_FILE).exists()
        fetch.fetch(dest, srv.url)
        ranges = [r for m, p, r in srv.requests if p.endswith(layout.RMBG_FILE) and r]
    assert ranges == [f"bytes={size // 2}-"]  # resumed from where it stopped
    assert fetch.verify(dest) == []


def test_setup_fetches_missing_files_from_mirror(
    mirror_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subject_array, background_array
) -> None:
    dest = tmp_path / "dest"
    with FileServer(mirror_dir) as srv:
        monkeypatch.setenv(WEIGHTS_URL, srv.url)
        monkeypatch.delenv("ICLIGHT_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        image = _relight(dest, subject_array, background_array)
    assert image.shape == (256, 256, 3)


@pytest.mark.parametrize("env", ["ICLIGHT_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_setup_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "1")
    monkeypatch.setenv(WEIGHTS_URL, "http://127.0.0.1:9/never-contacted")
    with pytest.raises(layout.MissingWeightsError, match="iclight_sd15_fbc.safetensors"):
        Relighter.load(tmp_path, device="cpu")


def test_fetch_from_hub_endpoint(mirror_dir: Path, tmp_path: Path) -> None:
    """The hub path through huggingface_hub itself, against a loopback HF_ENDPOINT."""
    dest = tmp_path / "dest"
    with FileServer(mirror_dir) as srv:
        srv.hub_repos = {
            "stablediffusionapi/realistic-vision-v51": mirror_dir / layout.SD_DIR,
            "lllyasviel/ic-light": mirror_dir,
            "briaai/RMBG-1.4": mirror_dir / "RMBG-1.4",
            "ZhengPeng7/BiRefNet_lite": mirror_dir / "BiRefNet_lite",
        }
        env = {**os.environ, "HF_ENDPOINT": srv.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_XET": "1"}
        env.pop(WEIGHTS_URL, None)
        cmd = [sys.executable, "-m", "iclight.weights", "fetch", "--dest", str(dest)]
        cmd += ["--matting", "rmbg-1.4", "birefnet-lite", "--model", "both"]
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        _same_tree(mirror_dir, dest)
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert "all files present and valid" in again.stdout
        srv.corrupt.add("model.safetensors")  # RMBG's file in its repo
        (dest / layout.RMBG_FILE).unlink()
        shutil.rmtree(tmp_path / "hf")
        bad = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and f"{layout.RMBG_FILE}: sha256" in bad.stderr


def test_prepared_weights_same_pixels_and_stale_ignored(
    mirror_dir: Path, tmp_path: Path, subject_array, background_array
) -> None:
    root = tmp_path / "w"
    shutil.copytree(mirror_dir, root)
    merged_at_boot = _relight(root, subject_array, background_array)
    assert _weights(["prepare", str(root), "--dtype", "float32"]) == 0
    prepared = loading.prepared_unet(root, torch.float32)
    assert prepared is not None
    assert np.array_equal(_relight(root, subject_array, background_array), merged_at_boot)
    written = prepared.stat().st_mtime_ns
    assert _weights(["prepare", str(root), "--dtype", "float32"]) == 0  # up to date: left alone
    assert prepared.stat().st_mtime_ns == written
    assert _weights(["prepare", str(root), "--dtype", "float32", "--force"]) == 0
    assert prepared.stat().st_mtime_ns != written

    # A prepared-only layout (what a mirror can serve) boots without the sources.
    lean = tmp_path / "lean"
    shutil.copytree(root, lean)
    shutil.rmtree(lean / layout.SD_DIR / "unet")
    (lean / layout.OFFSET_FILE).unlink()
    with pytest.MonkeyPatch.context() as offline:
        offline.setenv("ICLIGHT_OFFLINE", "on")
        assert np.array_equal(_relight(lean, subject_array, background_array), merged_at_boot)

    # Change the offset: the prepared file is stale and must not be used.
    from safetensors.torch import load_file, save_file

    offset = load_file(str(root / layout.OFFSET_FILE))
    offset["conv_out.bias"] = offset["conv_out.bias"] + 0.5
    save_file(offset, str(root / layout.OFFSET_FILE))
    assert loading.prepared_unet(root, torch.float32) is None
    assert not np.array_equal(_relight(root, subject_array, background_array), merged_at_boot)
    assert _weights(["prepare", str(root), "--dtype", "float32"]) == 0  # stale: made again
    assert loading.prepared_unet(root, torch.float32) is not None


def test_manifest_lists_only_loaded_files() -> None:
    dests = [f.dest for f in layout.MANIFEST]
    assert len(dests) == len(set(dests))
    assert all(d.endswith((".json", ".txt", ".safetensors")) for d in dests)
    assert {f.repo for f in layout.MANIFEST} == {
        "stablediffusionapi/realistic-vision-v51",
        "lllyasviel/ic-light",
        "briaai/RMBG-1.4",
        "ZhengPeng7/BiRefNet",
        "ZhengPeng7/BiRefNet_lite",
    }


def test_setup_fetches_only_what_is_missing_from_the_hub(
    weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "w"
    shutil.copytree(weights_dir, root)
    (root / layout.RMBG_FILE).unlink()
    asked: list[str] = []

    def fake_hub(dest: Path, workers: int = 4, files=()) -> list[str]:
        asked.extend(f.dest for f in files)
        shutil.copyfile(weights_dir / layout.RMBG_FILE, dest / layout.RMBG_FILE)
        return asked

    monkeypatch.setattr(fetch, "fetch_hub", fake_hub)
    for env in ("ICLIGHT_OFFLINE", "HF_HUB_OFFLINE", WEIGHTS_URL):
        monkeypatch.delenv(env, raising=False)
    loading.ensure_present(root, skip=(layout.BIREFNET_FILE,))
    assert asked == [layout.RMBG_FILE]


def test_prepare_compile_boots_with_the_compile_setting_asked_for(
    mirror_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`prepare --compile all`: the boot that compiles and writes the cache runs with ICLIGHT_COMPILE=all
    (the compiling itself runs for real in gpucheck's cold boot)."""
    root = tmp_path / "w"
    shutil.copytree(mirror_dir, root)
    monkeypatch.setenv("ICLIGHT_COMPILE", "0")  # the option, not the environment, says what to compile
    booted = []

    class Booted:
        def __init__(self) -> None:
            self.compile_report = {"compile_s": 12.5}

    def load(path: Path, device: str, speed, model=None) -> Booted:
        booted.append((path, device, speed.label))
        return Booted()

    monkeypatch.setattr(Relighter, "load", staticmethod(load))
    assert _weights(["prepare", str(root), "--dtype", "float32", "--compile", "all"]) == 0
    assert booted == [(root, "cpu", "compile+compile_vae")]
    assert f"compiled for cpu in 12.5 s; cache in {root / 'compile-cache'}" in capsys.readouterr().out
