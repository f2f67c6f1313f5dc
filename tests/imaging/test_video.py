"""Video as people shoot it (docs/sequences.md): phone clips held upright, variable frame rates,
ten-bit sources, a moving background, and a long run killed part-way and started again. Every
clip is made here with PyAV."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from media import clip, frame
from PIL import Image

from iclight.imaging import video
from iclight.imaging.images import resize_and_center_crop
from iclight.pipeline import Relighter

av = pytest.importorskip("av")

FAST = dict(width=256, height=256, steps=1, highres_scale=1.0, light_source="Left Light", seed=6)


def _stored(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (-90, False), (180, False), (0, True), (90, True)])
def test_a_phone_clip_is_read_upright(tmp_path: Path, rotation: int, hflip: bool) -> None:
    """As PyAV writes the display matrix (and players read it): turned counter-clockwise by the
    rotation, then mirrored."""
    path = clip(tmp_path / "phone.mp4", 3, rotation, hflip)
    info = video.probe(path)
    stored = _stored(path)
    for i, got in video.Frames(info).get([0, 2]).items():
        want = np.rot90(stored[i], rotation // 90)
        assert np.array_equal(got, want[:, ::-1] if hflip else want)
    assert info.size == ((64, 96) if rotation % 180 else (96, 64))


def test_an_upright_phone_clip_is_relit_upright_and_plays_as_the_source(
    weights_dir: Path, tmp_path: Path, relighter: Relighter
) -> None:
    from iclight import cli

    path = clip(tmp_path / "phone.mp4", 4, rotation=-90)  # stored landscape, shown portrait
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):  # the upright frames' own size: 64 wide, 96 tall
        Image.fromarray(np.full((96, 64), 255, np.uint8)).save(masks / f"{i}.png")
    api = relighter.relight_sequence(path, None, "x", masks=masks, window=2, **FAST | {"height": 320})
    assert api.mattes[0].shape == (96, 64) and api.images[0].size == (256, 320)
    flags = ["--width", "256", "--height", "320", "--steps", "1", "--highres-scale", "1", "--seed", "6"]
    flags += ["--light-source", "Left Light", "--window", "2", "--masks", str(masks), "--output-format", "png"]
    argv = ["sequence", str(path), "--prompt", "x", *flags, "--weights", str(weights_dir), "--device", "cpu"]
    assert cli.main([*argv, "-o", str(tmp_path / "out")]) == 0
    written = video.probe(tmp_path / "out" / "phone-6.mp4")
    assert written.orientation == video.Orientation() and written.size == (256, 320) and written.count == 4
    first = np.asarray(Image.open(tmp_path / "out" / "phone-6-frame-00000.png"))
    assert np.array_equal(first, np.asarray(api.images[0]))  # the file: the API's frame
    shown = video.Frames(written).get([0])[0].astype(float)

    def blocks(x: np.ndarray) -> np.ndarray:  # 16x16 means: what H.264 keeps of random-weight noise
        return x.reshape(20, 16, 16, 16, 3).mean(axis=(1, 3))

    near, turned = (np.abs(blocks(shown) - blocks(f.astype(float))).mean() for f in (first, first[::-1, ::-1]))
    assert near < 2 < turned  # the video: that frame, the right way up


def test_a_variable_frame_rate_keeps_its_timestamps(weights_dir: Path, tmp_path: Path) -> None:
    from iclight import cli

    times = [0.0, 0.1, 0.15, 0.4, 0.42, 0.9]
    path = clip(tmp_path / "vfr.mp4", 6, times=times)
    assert [round(video.probe(path).seconds(i), 3) for i in range(6)] == times
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(3):  # one for each frame relit: every other one
        Image.fromarray(np.full((64, 96), 255, np.uint8)).save(masks / f"{i}.png")
    flags = ["--width", "256", "--height", "256", "--steps", "1", "--highres-scale", "1", "--seed", "2"]
    flags += ["--light-source", "Left Light", "--masks", str(masks), "--stride", "2"]
    argv = ["sequence", str(path), "--prompt", "x", *flags, "--weights", str(weights_dir), "--device", "cpu"]
    assert cli.main([*argv, "-o", str(tmp_path / "out")]) == 0
    written = video.probe(tmp_path / "out" / "vfr-2.mp4")
    assert [round(written.seconds(i), 3) for i in range(written.count)] == [0.0, 0.15, 0.42]  # frames 0, 2, 4


def test_a_ten_bit_clip_decodes(tmp_path: Path, relighter: Relighter) -> None:
    path = clip(tmp_path / "main10.mp4", 3, codec="libx265", pix_fmt="yuv420p10le")
    info = video.probe(path)
    assert info.ten_bit and not info.hdr and info.count == 3
    decoded = video.Frames(info).get([1])[1]
    assert decoded.dtype == np.uint8 and np.abs(decoded.astype(int) - frame(1)).mean() < 12
    masks = [np.full((64, 96), 255, np.uint8)] * 3
    assert len(relighter.relight_sequence(path, None, "x", masks=masks, **FAST).images) == 3


def test_a_background_video_is_under_each_frame_and_held_at_its_end(
    tmp_path: Path, relighter: Relighter, weights_dir: Path
) -> None:
    """keep_background puts the relit subject over background frame k; a shorter background holds
    its last frame (`background_fit`: hold), or loops."""
    subject = clip(tmp_path / "subject.mp4", 4)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    backgrounds = clip(tmp_path / "street.mp4", 3, colors=colours)
    masks = []
    for _ in range(4):  # the subject in the middle only: the corners are the background's
        m = np.zeros((64, 96), np.uint8)
        m[16:48, 24:72] = 255
        masks.append(m)
    options = dict(masks=masks, keep_background=True, consistency=0, window=2) | FAST | {"light_source": None}
    held = relighter.relight_sequence(subject, backgrounds, "x", **options)
    _every_door(weights_dir, tmp_path, subject, backgrounds, masks, held)
    looped = relighter.relight_sequence(subject, backgrounds, "x", background_fit="loop", **options)
    shown = video.Frames(video.probe(backgrounds)).get([0, 1, 2])
    for result, order in ((held, [0, 1, 2, 2]), (looped, [0, 1, 2, 0])):
        for image, k in zip(result.images, order, strict=True):
            want = resize_and_center_crop(shown[k], 256, 256)
            assert np.array_equal(np.asarray(image)[:8, :8], want[:8, :8])


def _every_door(weights_dir: Path, tmp_path: Path, subject: Path, backgrounds: Path, masks: list, api) -> None:
    """The command line and `reproduce` give the API's frames with a background video."""
    from iclight import cli

    folder = tmp_path / "masks"
    folder.mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(m).save(folder / f"{i}.png")
    flags = [
        "--width",
        "256",
        "--height",
        "256",
        "--steps",
        "1",
        "--highres-scale",
        "1",
        "--seed",
        "6",
        "--window",
        "2",
    ]
    flags += ["--masks", str(folder), "--keep-background", "--consistency", "0", "--output-format", "png"]
    where = ["--weights", str(weights_dir), "--device", "cpu"]
    argv = ["sequence", str(subject), str(backgrounds), "--prompt", "x", *flags, *where]
    assert cli.main([*argv, "-o", str(tmp_path / "cli")]) == 0
    recipe = tmp_path / "cli" / "subject-6.json"
    assert json.loads(recipe.read_text())["inputs"]["background_image"]["path"] == str(backgrounds.resolve())
    assert cli.main(["reproduce", str(recipe), *where, "-o", str(tmp_path / "again")]) == 0
    for i, image in enumerate(api.images):
        for out in ("cli", "again"):
            assert np.array_equal(
                np.asarray(Image.open(tmp_path / out / f"subject-6-frame-{i:05d}.png")), np.asarray(image)
            )


def _progress(out: Path, name: str) -> list[int]:
    try:
        return json.loads((out / ".progress" / f"{name}.json").read_text())["windows"]
    except (OSError, ValueError, KeyError):
        return []


def test_a_killed_run_goes_on_after_its_last_window_with_the_same_frames(weights_dir: Path, tmp_path: Path) -> None:
    """SIGKILL part-way, then the same command: the finished windows are kept (not rewritten), the
    run goes on after them, and every frame and the video equal an uninterrupted run's."""
    path = clip(tmp_path / "turn.mp4", 10, rotation=90)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(10):
        Image.fromarray(np.full((96, 64), 255, np.uint8)).save(masks / f"{i}.png")
    flags = ["--width", "256", "--height", "256", "--steps", "3", "--highres-scale", "1", "--seed", "3"]
    flags += ["--light-source", "Left Light", "--window", "2", "--masks", str(masks), "--output-format", "png"]
    env = {**os.environ, "ICLIGHT_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])

    def command(out: Path) -> list[str]:
        base = [sys.executable, "-m", "iclight", "sequence", str(path), "--prompt", "x", *flags]
        return [*base, "--weights", str(weights_dir), "-o", str(out)]

    killed = tmp_path / "killed"
    with open(tmp_path / "first.log", "w") as log:
        run = subprocess.Popen(command(killed), env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None and len(_progress(killed, "turn")) < 2:
            time.sleep(0.02)
        run.send_signal(signal.SIGKILL)
        run.wait(30)
    done = _progress(killed, "turn")
    assert run.returncode == -signal.SIGKILL and 2 <= len(done) < 5, (tmp_path / "first.log").read_text()[-2000:]
    assert not list(killed.glob("*.mp4")) and not (killed / "turn-3.json").exists()  # nothing looks finished
    kept = {p.name: p.stat().st_mtime_ns for p in killed.glob("turn-3-frame-*.png")}
    assert len(kept) >= 2 * len(done)
    again = subprocess.run(command(killed), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(done)} of 5 windows done before; going on after them" in again.stderr
    assert re.search(r"frames: +100%.* 10/10 \[", again.stderr)  # frames done of all, with the pace and time left
    whole = tmp_path / "whole"
    assert subprocess.run(command(whole), env=env, capture_output=True, timeout=300).returncode == 0
    frames = sorted(p.name for p in whole.glob("turn-3-frame-*.png"))
    assert len(frames) == 10 and sorted(p.name for p in killed.glob("turn-3-frame-*.png")) == frames
    for name in frames:
        assert (killed / name).read_bytes() == (whole / name).read_bytes()
    for name, stamp in kept.items():  # the windows done before the kill were not done again
        if int(name[-9:-4]) // 2 in done:
            assert (killed / name).stat().st_mtime_ns == stamp
    assert (killed / "turn-3.mp4").read_bytes() == (whole / "turn-3.mp4").read_bytes()
    assert not (killed / ".progress" / "turn.json").exists()
