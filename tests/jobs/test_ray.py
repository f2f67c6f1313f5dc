"""Batch on Ray Data: a local Ray (2 CPUs, no dashboard) with 2 actors. Same pixels as the
local batch and the Cog predictor; a SIGKILLed actor loses nothing; a killed driver's
rerun skips what was finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from iclight import cli
from iclight.jobs import batch
from iclight.jobs.files import DONE_DIR

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")

SMALL = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1.0", "--output-format", "png"]
LIGHTS = ["Use Background Image", "Left Light", "Right Light", "Top Light", "Use Flipped Background Image"]


@pytest.fixture(scope="module")
def cluster() -> str:
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten jobs: nine good ones (three subjects with their own alpha, assorted lights and
    seeds, one with the fc model) and one broken file."""
    from conftest import _subject

    root = tmp_path_factory.mktemp("catalogue")
    rng = np.random.default_rng(0)
    for k in range(3):
        arr = np.roll(_subject(), 7 * k, axis=1)
        img = Image.fromarray(arr).convert("RGBA")
        img.putalpha(Image.fromarray(np.where(arr[..., 0] > 100, 255, 0).astype(np.uint8)))
        img.save(root / f"s{k}.png")
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(root / "bg.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG but not really")
    lines = [
        {"subject": f"s{i % 3}.png", "background": "bg.jpg", "seed": 100 + i, "light_source": LIGHTS[i % 5]}
        for i in range(9)
    ]
    lines[7] = {"subject": "s1.png", "model": "fc", "light_source": "Right Light", "seed": 107}  # fc: no background
    lines.insert(4, {"id": "broken-one", "subject": "broken.png", "background": "bg.jpg", "seed": 1})
    path = root / "jobs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _argv(manifest: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(manifest), "--prompt", "sun", *SMALL, "-o", str(out), "--weights", str(weights), *extra]


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _outputs(out: Path) -> dict[str, np.ndarray]:
    return {p.name: _pixels(p) for p in sorted(out.glob("*.png"))}


def _check_complete(out: Path) -> list[dict]:
    results = _results(out)
    assert len(results) == 10 and len({r["id"] for r in results}) == 10
    failed = [r for r in results if r["status"] == "failed"]
    assert [r["id"] for r in failed] == ["broken-one"] and "subject_image" in failed[0]["error"]
    assert len(list(out.glob("*.png"))) == 9 and len(list(out.glob("*.json"))) == 9
    assert not list(out.rglob("*.part"))
    return results


def test_ray_matches_local_batch_and_predictor(
    cluster: str, manifest: Path, weights_dir: Path, tmp_path: Path, cog_predict
) -> None:
    on_ray, local = tmp_path / "ray", tmp_path / "local"
    assert cli.main(_argv(manifest, on_ray, weights_dir, "--ray", "--workers", "2", "--device", "cpu")) == 1
    results = _check_complete(on_ray)
    assert all(r["seconds"] > 0 for r in results if r["status"] == "succeeded")
    models = sorted(json.loads(p.read_text())["parameters"]["model"] for p in on_ray.glob("*.json"))
    assert models == ["fbc"] * 8 + ["fc"]  # the workers serve both models, each job its own
    with one_thread():
        assert cli.main(_argv(manifest, local, weights_dir, "--device", "cpu")) == 1
    ray_px, local_px = _outputs(on_ray), _outputs(local)
    assert ray_px.keys() == local_px.keys()
    assert all(np.array_equal(ray_px[k], local_px[k]) for k in ray_px)

    first = results[0]
    job = json.loads(manifest.read_text().splitlines()[0])
    with one_thread():
        (file,) = cog_predict(
            manifest.parent / job["subject"],
            manifest.parent / job["background"],
            prompt="sun",
            light_source=job["light_source"],
            seed=job["seed"],
            output_format="png",
            width=256,
            height=256,
            steps=2,
            highres_scale=1.0,
        )
    assert np.array_equal(_pixels(file), _pixels(first["outputs"][0]))


@contextmanager
def one_thread() -> Iterator[None]:
    """As in each actor (one CPU, one torch thread): on the CPU, the thread count can move a
    few pixels by one grey level, so identical pixels need the same count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _markers(out: Path) -> list[Path]:
    """The done-markers written so far (none while the folder does not exist yet)."""
    return list((out / DONE_DIR).glob("*.json"))


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"RelightWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@contextmanager
def killing_an_actor(progress: Callable[[], int]) -> Iterator[list[int]]:
    """SIGKILL one actor as soon as `progress()` (work written so far) is above 0; what it was
    then is in the list handed out."""
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            done, pids = progress(), _actor_pids()
            if done >= 1 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(done)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        yield killed
    finally:
        stop.set()
        watcher.join(5)


def test_killed_actor_loses_nothing(cluster: str, manifest: Path, weights_dir: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "out"
    commits: Counter[str] = Counter()
    real_commit = batch.commit

    def counting_commit(out_dir, job, outcome, mark_done=True):
        commits[job.id] += 1
        return real_commit(out_dir, job, outcome, mark_done)

    monkeypatch.setattr(batch, "commit", counting_commit)
    with killing_an_actor(lambda: len(_markers(out))) as killed:
        assert cli.main(_argv(manifest, out, weights_dir, "--ray", "--workers", "2", "--device", "cpu")) == 1
    assert killed and killed[0] < 9, "no actor was killed while jobs were left"
    _check_complete(out)
    assert set(commits.values()) == {1} and len(commits) == 10  # every job written exactly once


def test_killed_driver_rerun_skips_finished_jobs(cluster: str, manifest: Path, weights_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": cluster, "ICLIGHT_DEVICE": "cpu"}  # `--ray` joins RAY_ADDRESS
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "iclight", *_argv(manifest, out, weights_dir, "--ray", "--workers", "2")]
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if len(_markers(out)) >= 3:
                break
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-3000:]
    # A job counts as finished once its done-marker is written, after its files: the driver may
    # have been killed between the two, and the rerun must do that job again.
    markers = [json.loads(p.read_text()) for p in _markers(out)]
    finished = {name: out.joinpath(name).stat().st_mtime_ns for m in markers for name in m["files"]}
    assert 3 <= len(markers) < 9 and len(finished) == len(markers)

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"10 jobs: {len(markers)} already done, {10 - len(markers)} to run" in rerun.stdout
    assert "FAILED broken-one" in rerun.stdout
    _check_complete(out)
    assert {p: out.joinpath(p).stat().st_mtime_ns for p in finished} == finished  # untouched


def test_a_long_clips_windows_run_across_the_actors(cluster: str, weights_dir: Path, tmp_path: Path, monkeypatch):
    """A manifest's sequence line on Ray: its windows as tasks over two actors, one actor SIGKILLed
    part-way; every window written once, and the frames and the video equal the local run's."""
    from media import clip

    from iclight.jobs import sequence_files

    clip(tmp_path / "turn.mp4", 12)
    masks = tmp_path / "masks"
    masks.mkdir()
    for k in range(12):
        Image.fromarray(np.full((64, 96), 255, np.uint8)).save(masks / f"{k:02d}.png")
    line = {"id": "turn", "sequence": "turn.mp4", "masks": "masks", "seed": 5, "light_source": "Left Light"}
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps(line | {"window": 3, "consistency": 0.5}) + "\n")
    written: Counter[int] = Counter()
    real_add = sequence_files.SequenceFiles.add

    def counting_add(self, outcome):
        written[outcome.window] += outcome.window not in self.done
        return real_add(self, outcome)

    monkeypatch.setattr(sequence_files.SequenceFiles, "add", counting_add)
    on_ray, local = tmp_path / "ray", tmp_path / "local"
    with killing_an_actor(lambda: len(written)) as killed:
        assert cli.main(_argv(manifest, on_ray, weights_dir, "--ray", "--workers", "2", "--device", "cpu")) == 0
    assert killed and killed[0] < 4 and written == {w: 1 for w in range(4)}
    with one_thread():
        assert cli.main(_argv(manifest, local, weights_dir, "--device", "cpu")) == 0
    ray_px, local_px = _outputs(on_ray), _outputs(local)
    assert sorted(ray_px) == [f"turn-frame-{i:05d}.png" for i in range(12)] == sorted(local_px)
    assert all(np.array_equal(ray_px[k], local_px[k]) for k in ray_px)
    assert (on_ray / "turn.mp4").read_bytes() == (local / "turn.mp4").read_bytes()
    assert json.loads((on_ray / "turn.json").read_text())["windows"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
