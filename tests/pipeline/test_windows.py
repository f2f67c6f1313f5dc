"""Sequences (docs/sequences.md): consistent light attention, windows, video in and out, and every
door (API, command line, manifest, reproduce), on the tiny stand-ins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from PIL import Image

from benchmarks import lav_ref
from benchmarks.consistency import drift, flicker, pan, run
from iclight import cli
from iclight.core.validation import InputError
from iclight.imaging import video
from iclight.models import attention as cla
from iclight.models.speed import SpeedSettings
from iclight.pipeline import Relighter
from iclight.pipeline.standins import write_lora
from iclight.pipeline.windows import plan_windows, references, smooth

av = pytest.importorskip("av")

FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, light_source="Left Light")


def _attention(dim: int = 32, heads: int = 4, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return attn.eval()


def _frames_batch(frames: int, tokens: int = 16, dim: int = 32, seed: int = 1) -> torch.Tensor:
    """Hidden states of both CFG halves: 2 x frames, as diffusers lays them out."""
    return torch.randn(2 * frames, tokens, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_gamma_zero_is_plain_attention_bit_for_bit() -> None:
    attn, hidden = _attention(), _frames_batch(3)
    plain = attn(hidden)
    attn.set_processor(cla.ConsistentLightAttention(0.0, AttnProcessor2_0()))
    assert torch.equal(attn(hidden), plain)


@torch.no_grad()
def test_the_mix_pulls_frames_together_and_fused_qkv_gives_the_same() -> None:
    attn, hidden = _attention(), _frames_batch(4)
    spread = []
    for gamma in (0.0, 0.5, 1.0):
        out = cla.mixed(attn, hidden, gamma) if gamma else attn(hidden)
        spread.append(out.reshape(2, 4, -1).std(dim=1).mean().item())
    assert spread[0] > spread[1] > spread[2]
    unfused = cla.mixed(attn, hidden, 0.5)
    attn.fuse_projections()
    assert torch.allclose(cla.mixed(attn, hidden, 0.5, fused=True), unfused, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("frames", [1, 2, 3, 6])
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.9])
def test_parity_with_light_a_videos_attention(frames: int, gamma: float) -> None:
    theirs = lav_ref.load()
    if theirs is None:
        pytest.skip("Light-A-Video's code is not in .ref/light-a-video (make reference-lav)")
    attn, hidden = _attention(seed=frames), _frames_batch(frames, seed=frames + 10)
    expected = theirs(attn, hidden, gamma=gamma)
    attn.set_processor(cla.ConsistentLightAttention(gamma, AttnProcessor2_0()))
    assert (attn(hidden) - expected).abs().max().item() < 1e-5


def test_the_layers_rule_and_a_runs_processors_restored(relighter: Relighter) -> None:
    unet = relighter.unet.unet
    chosen = cla.layers(unet)
    assert chosen and all(n.startswith("up_blocks.0.") and n.endswith("attn1") for n in chosen)
    assert cla.layers(unet, r"attn2$") and all(n.endswith("attn2") for n in cla.layers(unet, r"attn2$"))
    before = {n: type(p).__name__ for n, p in unet.attn_processors.items()}
    with relighter.unet.attention(cla.Consistency(0.5, chosen, 2).processors(unet)):
        assert sum(isinstance(p, cla.ConsistentLightAttention) for p in unet.attn_processors.values()) == len(chosen)
    assert {n: type(p).__name__ for n, p in unet.attn_processors.items()} == before


def _by_hand(attn: Attention, hidden: torch.Tensor, gamma: float) -> torch.Tensor:
    """CLA over every frame of the batch, written out: each frame's queries against the keys and
    values averaged over all frames, mixed with its own attention."""
    heads, frames = attn.heads, hidden.shape[0]
    q, k, v = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)
    q, k, v = (t.view(frames, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
    mean_k, mean_v = (t.mean(dim=0, keepdim=True).expand_as(t) for t in (k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    out = (1 - gamma) * sdpa(q, k, v) + gamma * sdpa(q, mean_k, mean_v)
    return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(frames, -1, heads * q.shape[-1])))


@torch.no_grad()
@pytest.mark.parametrize("frames", [2, 3])
def test_without_guidance_the_average_is_over_all_frames(frames: int) -> None:
    """With cfg 1 there is no unconditional half: the frames are one group (an odd count used to
    turn the mix off, an even one to average two halves of the frames apart)."""
    attn, hidden = _attention(), torch.randn(frames, 16, 32, generator=torch.Generator().manual_seed(frames))
    plain = attn(hidden)
    attn.set_processor(cla.ConsistentLightAttention(0.8, AttnProcessor2_0(), groups=1))
    got = attn(hidden)
    assert (got - _by_hand(attn, hidden, 0.8)).abs().max() < 1e-5 and (got - plain).abs().max() > 1e-3


def test_a_sequence_without_guidance_mixes_one_group(relighter: Relighter, monkeypatch) -> None:
    seen = []
    run_shared = relighter.run_shared

    def spy(specs, hooks, consistency=None, one_generator=False):
        seen.append(consistency.groups)
        return run_shared(specs, hooks, consistency, one_generator)

    monkeypatch.setattr(relighter, "run_shared", spy)
    seq = pan(3)
    for cfg in (1.0, 2.0):
        relighter.relight_sequence(seq.frames, None, "x", masks=seq.masks, cfg=cfg, **FAST)
    assert seen == [1, 2]


def test_a_layers_rule_is_checked_before_any_matting(relighter: Relighter, monkeypatch) -> None:
    from diffusers import UNet2DConditionModel

    def no_matting(*a, **k):
        raise AssertionError("matting ran before the rule was checked")

    monkeypatch.setattr(relighter.mattes, "estimate", no_matting)
    frames = pan(2).frames
    with pytest.raises(InputError, match=r"^layers: '\[' is not a regular expression"):
        relighter.relight_sequence(frames, None, "x", layers="[", **FAST)
    with pytest.raises(InputError, match="^layers: 'nothing' chooses no attention layer of this UNet"):
        relighter.relight_sequence(frames, None, "x", layers="nothing", **FAST)
    relighter.relight_sequence(frames[:1], None, "x", layers="nothing", consistency=0, masks=pan(1).masks, **FAST)
    last_only = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    with pytest.raises(InputError, match="^layers: 'up-but-last' chooses no attention layer"):
        cla.layers(last_only)


def test_windows_references_and_smoothing() -> None:
    assert plan_windows(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert references([0, 1, 2, 3], 4) == [0, 3] and references([0], 4) == [0] and references([0, 1], 1) == []
    mattes = [np.zeros((4, 4)) for _ in range(3)]
    mattes[1][0, 0] = 1.0  # a pixel that flips for one frame is held
    assert smooth(mattes)[1][0, 0] == 0.0


def test_consistent_light_on_a_fused_unet_with_a_lora_gives_the_eager_frames(
    weights_dir: Path, relighter: Relighter, tmp_path: Path
) -> None:
    """A LoRA unfuses a deployment's fused projections; the consistent light attention then
    projects through the separate ones, as the processor it replaced does (it used the fused
    weights made before the LoRA, which leave the LoRA out of those layers)."""
    lora = str(write_lora(weights_dir, tmp_path / "mild.safetensors", seed=4, strength=0.1))
    fused = Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(fused_qkv=True))
    seq = pan(3)
    options = dict(masks=seq.masks, consistency=0.5, window=3, seed=2, loras=[lora], **FAST)
    for with_lora in (False, True):  # the fused processors first, then the separate ones under the LoRA
        opts = options if with_lora else options | {"loras": []}
        got, want = (r.relight_sequence(seq.frames, None, "x", **opts).images for r in (fused, relighter))
        assert max(np.abs(np.asarray(a, int) - np.asarray(b, int)).max() for a, b in zip(got, want, strict=True)) <= 1


def _close(a, b) -> None:
    d = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    assert d.mean() <= 0.5 and np.percentile(d, 99) <= 2.0, (d.mean(), d.max())


def test_independent_frames_equal_lone_relights(relighter: Relighter) -> None:
    seq = pan(5)
    result = relighter.relight_sequence(
        seq.frames, None, "x", consistency=0, shared_noise=False, smooth_mattes=False, window=3, seed=11,
        masks=seq.masks, **FAST,
    )  # fmt: skip
    assert result.seeds == [11, 12, 13, 14, 15] and result.windows == [[0, 1, 2], [3, 4]]
    for frame, mask, seed, image in zip(seq.frames, seq.masks, result.seeds, result.images, strict=True):
        _close(image, relighter.relight(frame, None, "x", seed=seed, mask=mask, **FAST).images[0])


def test_shared_noise_and_cla_lower_flicker_and_drift_without_a_jump_at_windows(weights_dir: Path) -> None:
    relighter = Relighter.load(weights_dir, device="cpu", matting_choice="none")
    seq = pan(6)
    found = {}
    for name, gamma, shared in (("independent", 0.0, False), ("shared", 0.0, True), ("cla", 0.5, True)):
        relit, _ = run(relighter, seq, gamma, shared, 3, 3)
        found[name] = (flicker(seq, relit), drift(seq, relit))
    for name in ("shared", "cla"):
        assert np.mean(found[name][0]) < np.mean(found["independent"][0])
        assert found[name][1] < found["independent"][1]
    pairs = found["cla"][0]  # frames 2 -> 3 cross the window boundary
    assert pairs[2] <= max(pairs[:2] + pairs[3:]) + 1.0


def _clip(path: Path, count: int = 6, fps: int = 8, audio: bool = True) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        sound = out.add_stream("aac", rate=44100) if audio else None
        for i in range(count):
            img = np.full((64, 96, 3), 40, np.uint8)
            img[20:50, 10 + i * 5 : 40 + i * 5] = (220, 160, 90)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
        if sound is not None:
            t = np.arange(int(44100 * count / fps)) / 44100
            frame = av.AudioFrame.from_ndarray(
                (np.sin(2 * np.pi * 440 * t) * 0.3).astype(np.float32)[None], format="fltp", layout="mono"
            )
            frame.sample_rate = 44100
            for packet in sound.encode(frame):
                out.mux(packet)
            out.mux(sound.encode())
    return path


def test_a_video_round_trip_keeps_count_times_size_and_audio(tmp_path: Path) -> None:
    info = video.probe(_clip(tmp_path / "in.mp4"))
    assert info.count == 6 and info.rate == 8 and info.size == (96, 64) and info.audio
    frames = video.Frames(info)
    writer = video.Writer(tmp_path / "out", info.rate, (info.path, 0.0, 6 / 8))
    for i, image in sorted(frames.get(list(range(6))).items()):
        assert image.shape == (64, 96, 3)
        writer.add(image, info.seconds(i))
    written = writer.close()
    assert written.suffix == ".mp4" and not list(tmp_path.glob("*.part"))
    again = video.probe(written)
    assert again.count == 6 and again.size == (96, 64) and again.audio
    assert [round(again.seconds(i), 3) for i in range(6)] == [i / 8 for i in range(6)]
    assert sorted(frames.get([4, 1])) == [1, 4]  # back and forth: a seek, then forward


def test_bad_videos_and_masks_fail_naming_the_input(relighter: Relighter, tmp_path: Path) -> None:
    (tmp_path / "not.mp4").write_bytes(b"no video here")
    good = _clip(tmp_path / "good.mp4", count=30, audio=False)
    data = _clip(tmp_path / "whole.mkv", count=30, audio=False).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 2 // 3])  # its header promises 30 frames
    short = _clip(tmp_path / "short.mp4", count=4, audio=False)
    cases = [
        (lambda: video.probe(tmp_path / "not.mp4"), "frames: .*not a video"),
        (lambda: relighter.relight_sequence(good, None, "x", start=40, **FAST), "frames: none in the range given"),
        (lambda: relighter.relight_sequence(good, None, "x", masks=[None] * 2, **FAST), "masks: 2 masks for 30"),
        (lambda: relighter.relight_sequence(tmp_path / "none", None, "x", **FAST), "frames: .*does not exist"),
        (lambda: video.probe(tmp_path / "cut.mkv"), "frames: .*damaged at frame [0-9]+: it ends there, .* 30"),
        (lambda: relighter.relight_sequence(good, tmp_path / "not.mp4", "x", **FAST), "background: .*not a video"),
        (lambda: relighter.relight_sequence(good, short, "x", background_fit="exact", **FAST),
         "background: 4 background frames for 30 frames; background_fit 'exact'"),
        (lambda: relighter.relight_sequence(good, None, "x", background_fit="stretch", **FAST),
         "background_fit: 'stretch' is not allowed"),
    ]  # fmt: skip
    for call, words in cases:
        with pytest.raises(InputError, match="^" + words):
            call()


def test_the_command_line_and_reproduce_give_the_apis_frames(
    relighter: Relighter, weights_dir: Path, tmp_path: Path
) -> None:
    """(A manifest's sequence line: tests/jobs/test_ray.py, locally and on Ray.)"""
    src = _clip(tmp_path / "clip.mp4", count=4)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):  # the frames' own masks: no matting model to wait for
        Image.fromarray(np.full((64, 96), 255, np.uint8)).save(masks / f"m{i}.png")
    api = relighter.relight_sequence(src, None, "x", seed=4, window=3, masks=masks, **FAST)
    flags = ["--width", "256", "--height", "256", "--steps", "2", "--highres-scale", "1", "--seed", "4"]
    flags += ["--light-source", "Left Light", "--window", "3", "--output-format", "png", "--masks", str(masks)]
    where = ["--weights", str(weights_dir), "--device", "cpu"]
    assert cli.main(["sequence", str(src), "--prompt", "x", *flags, *where, "-o", str(tmp_path / "a")]) == 0
    frames = sorted((tmp_path / "a").glob("clip-4-frame-*.png"))
    assert len(frames) == 4 and (tmp_path / "a" / "clip-4.mp4").is_file()
    for path, image in zip(frames, api.images, strict=True):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))
    recipe = json.loads((tmp_path / "a" / "clip-4.json").read_text())
    assert recipe["kind"] == "sequence" and recipe["seeds"] == [4] * 4 and recipe["windows"] == [[0, 1, 2], [3]]
    assert cli.main(["reproduce", str(tmp_path / "a" / "clip-4.json"), *where, "-o", str(tmp_path / "r")]) == 0
    for path in frames:
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "r" / path.name)))
