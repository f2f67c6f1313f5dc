"""Output folders of the Cog predictor stay bounded; nothing that is not ours is removed."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cogserver import cog_server, decode, image_uri, predict, uri_bytes
from PIL import Image

from iclight.core.config import KEEP_OUTPUTS, ConfigError
from iclight.store.outputs import DEFAULT_KEEP, MARKER, OutputFolders


def _write(folder: Path, name: str = "output_0.png") -> None:
    (folder / name).write_bytes(b"x" * 10)


def _ours(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / MARKER).exists())


def test_keeps_the_most_recent_folders(tmp_path: Path) -> None:
    store = OutputFolders(tmp_path, keep=3)
    made = []
    for _ in range(10):
        with store.folder() as folder:
            _write(folder)
            made.append(folder)
    store.prune()
    assert _ours(tmp_path) == made[-3:]
    assert all(not p.exists() for p in made[:-3])


def test_never_touches_what_is_not_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "someone-else"
    foreign.mkdir()
    (foreign / "output_0.png").write_bytes(b"keep me")
    (tmp_path / "loose-file.txt").write_text("keep me too")
    store = OutputFolders(tmp_path, keep=1)
    with store.folder() as first:
        _write(first)
    with store.folder() as second:
        _write(second)
    # A file dropped into one of our folders after it was finished is not ours: it stays.
    (second / "late.txt").write_text("late")
    for _ in range(3):
        with store.folder() as folder:
            _write(folder)
    assert (foreign / "output_0.png").read_bytes() == b"keep me"
    assert (tmp_path / "loose-file.txt").exists()
    assert not first.exists()
    assert (second / "late.txt").read_text() == "late" and not (second / "output_0.png").exists()
    assert not (second / MARKER).exists()


def test_a_folder_being_written_is_never_removed(tmp_path: Path) -> None:
    store = OutputFolders(tmp_path, keep=1)
    entered, release = threading.Event(), threading.Event()
    seen: list[Path] = []

    def slow_prediction() -> None:
        with store.folder() as folder:
            seen.append(folder)
            entered.set()
            release.wait(10)
            _write(folder)

    worker = threading.Thread(target=slow_prediction)
    worker.start()
    assert entered.wait(10)
    for _ in range(5):  # concurrent predictions finish meanwhile, each pruning
        with store.folder() as folder:
            _write(folder)
    assert seen[0].is_dir()
    release.set()
    worker.join()
    assert (seen[0] / "output_0.png").exists()


def test_other_processes_folders_go_only_when_stale(tmp_path: Path) -> None:
    def neighbour(name: str, age_s: float) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        _write(folder)
        (folder / MARKER).write_text(json.dumps({"pid": -1, "files": ["output_0.png"], "complete": True}))
        then = time.time() - age_s
        os.utime(folder / MARKER, (then, then))
        return folder

    fresh, stale = neighbour("fresh", 5), neighbour("stale", 7200)
    store = OutputFolders(tmp_path, keep=1, stale_after_s=3600)
    with store.folder() as folder:
        _write(folder)
    assert fresh.is_dir() and not stale.exists()


def test_a_failed_prediction_is_recorded_and_pruned(tmp_path: Path) -> None:
    store = OutputFolders(tmp_path, keep=1)
    with pytest.raises(RuntimeError), store.folder() as failed:
        _write(failed)
        raise RuntimeError("encoder broke")
    assert json.loads((failed / MARKER).read_text())["files"] == ["output_0.png"]
    with store.folder() as folder:
        _write(folder)
    with store.folder() as folder:
        _write(folder)
    assert not failed.exists()


def test_keep_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEEP_OUTPUTS.name, "7")
    assert OutputFolders.from_env().keep == 7
    monkeypatch.setenv("COG_MAX_CONCURRENCY", "9")  # never fewer than the server has in flight
    assert OutputFolders.from_env().keep == 9
    monkeypatch.delenv("COG_MAX_CONCURRENCY")
    monkeypatch.setenv(KEEP_OUTPUTS.name, "lots")
    with pytest.raises(ConfigError, match="ICLIGHT_KEEP_OUTPUTS='lots' is not allowed; use a whole number, at least 1"):
        OutputFolders.from_env()
    monkeypatch.setenv(KEEP_OUTPUTS.name, "0")
    with pytest.raises(ConfigError, match="ICLIGHT_KEEP_OUTPUTS='0'"):
        OutputFolders.from_env()


@pytest.mark.server
def test_thirty_predictions_through_the_server_stay_bounded(
    weights_dir: Path, tmp_path: Path, subject_array: np.ndarray, background_array: np.ndarray, capsys
) -> None:
    """TEST_PREDICTIONS=200 pytest -s -k thirty measures a longer run the same way."""
    count = int(os.environ.get("TEST_PREDICTIONS", "30"))
    root = tmp_path / "outputs"
    root.mkdir()
    foreign = root / "iclight-not-ours"
    foreign.mkdir()
    (foreign / "output_0.webp").write_bytes(b"someone else's")
    user_out = root / "cli-out"  # as if a user had pointed `-o` here
    user_out.mkdir()
    (user_out / "subject-1-0.png").write_bytes(b"the user's")
    subject = Image.fromarray(subject_array).convert("RGBA")
    subject.putalpha(Image.fromarray(np.where(subject_array[..., 0] > 100, 255, 0).astype(np.uint8)))
    inputs = dict(  # a subject with its own alpha skips background removal: fast
        subject_image=image_uri(subject),
        background_image=image_uri(Image.fromarray(background_array)),
        prompt="sun",
        width=256,
        height=256,
        steps=1,
        highres_scale=1.0,
    )
    with cog_server(weights_dir, tmp_path, ICLIGHT_OUTPUT_DIR=str(root)) as url:
        for i in range(count):
            out = predict(url, seed=i, number_of_images=1 + i % 2, **inputs)
            assert out["status"] == "succeeded", out.get("error")
            served = [uri_bytes(u) for u in out["output"]]
            assert all(decode(u).size == (256, 256) for u in out["output"])
            folders = _ours(root)
            assert len(folders) <= DEFAULT_KEEP
            # The folder just returned is still on disk, byte for byte what was served.
            newest = max(folders, key=lambda p: p.name)
            on_disk = [(newest / f"output_{k}.webp").read_bytes() for k in range(len(served))]
            assert on_disk == served
    assert len(_ours(root)) == DEFAULT_KEEP
    on_disk = sum(f.stat().st_size for folder in _ours(root) for f in folder.iterdir())
    with capsys.disabled():
        print(f"\n{count} predictions: {len(_ours(root))} output folders, {on_disk} bytes in them")
    assert (foreign / "output_0.webp").read_bytes() == b"someone else's"
    assert (user_out / "subject-1-0.png").read_bytes() == b"the user's"
