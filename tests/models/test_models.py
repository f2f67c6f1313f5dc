"""A base model of the user's own (single file or folder), LoRAs, samplers and the light as the
first pass's start (docs/models.md), on the tiny stand-ins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from iclight import cli
from iclight.core import options as samplers
from iclight.core.spec import relight_spec
from iclight.core.validation import InputError
from iclight.jobs.recipe import models_record, read_recipe
from iclight.models.sharing import SharedImage2Image
from iclight.models.speed import SpeedSettings
from iclight.pipeline import Relighter
from iclight.pipeline.loading import prepared_unet, write_prepared
from iclight.pipeline.standins import write_lora, write_user_models
from iclight.store import layout
from iclight.store.basemodel import BaseModelError

FAST = dict(width=256, height=256, steps=3, highres_scale=1.0, light_source="Left Light", seed=3)


@pytest.fixture(scope="module")
def user(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_user_models(weights_dir, tmp_path_factory.mktemp("user-models"))


@pytest.fixture(scope="module")
def subject() -> tuple[np.ndarray, np.ndarray]:
    from conftest import _subject

    image = _subject()
    return image, (image[..., 0] > 100).astype(np.uint8) * 255


def _pixels(relighter: Relighter, subject, **options) -> np.ndarray:
    image, mask = subject
    return np.asarray(relighter.relight(image, None, "x", mask=mask, **FAST | options).images[0])


@pytest.mark.parametrize("kind", ["single_file", "vae_beside"])
def test_a_single_file_checkpoint_gives_the_pixels_of_the_folder_it_came_from(
    relighter: Relighter, weights_dir: Path, user: dict, subject, kind: str
) -> None:
    own = Relighter.load(weights_dir, device="cpu", use_prepared=False, base_model=user[kind])
    assert own.base_model.single_file and (own.base_model.vae is not None) == (kind == "vae_beside")
    assert np.array_equal(_pixels(own, subject), _pixels(relighter, subject))
    record = models_record(own, relight_spec("s.png", None, "x", light_source="Left Light"))["base_model"]
    assert str(user[kind]) in record["files"] and len(next(iter(record["files"].values()))) == 64


def test_a_diffusers_folder_is_a_base_model_too(relighter: Relighter, weights_dir: Path, subject) -> None:
    own = Relighter.load(weights_dir, device="cpu", base_model=weights_dir / layout.SD_DIR)
    assert np.array_equal(_pixels(own, subject), _pixels(relighter, subject))


def test_an_sdxl_file_fails_at_load_naming_the_file_and_what_was_found(weights_dir: Path, user: dict) -> None:
    with pytest.raises(BaseModelError) as e:
        Relighter.load(weights_dir, device="cpu", base_model=user["sdxl"])
    said = str(e.value)
    assert said.startswith(f"base_model: {user['sdxl']} is not an SD1.5 checkpoint")
    assert "SDXL: 2 text encoders, 2,816-wide label embedding, 2,048-wide cross-attention" in said


def test_a_pickle_or_a_missing_file_is_refused(weights_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"not read")
    for path, words in ((tmp_path / "model.ckpt", "pickle"), (tmp_path / "none.safetensors", "does not exist")):
        with pytest.raises(BaseModelError, match=words):
            Relighter.load(weights_dir, device="cpu", base_model=path)


def test_the_prepared_unet_is_keyed_by_the_checkpoint(weights_dir: Path, user: dict, tmp_path: Path) -> None:
    root = tmp_path / "w"
    shutil.copytree(weights_dir, root)
    checkpoint = tmp_path / "mine.safetensors"
    shutil.copyfile(user["single_file"], checkpoint)
    from iclight.store.basemodel import resolve

    base = resolve(checkpoint)
    path = write_prepared(root, torch.float32, base)
    assert prepared_unet(root, torch.float32, base) == path and prepared_unet(root, torch.float32) is None
    state = load_file(str(checkpoint))
    key = next(k for k in state if k.endswith("out.2.bias"))
    state[key] = state[key] + 1
    save_file(state, str(checkpoint))
    assert prepared_unet(root, torch.float32, resolve(checkpoint)) is None  # never served stale


@pytest.mark.parametrize("layout_name", ["lora_diffusers", "lora_kohya"])
def test_a_lora_at_zero_changes_nothing_and_at_one_changes_the_pixels(
    weights_dir: Path, user: dict, subject, layout_name: str
) -> None:
    relighter = Relighter.load(weights_dir, device="cpu")
    plain = _pixels(relighter, subject)
    assert np.array_equal(_pixels(relighter, subject, loras=[(str(user[layout_name]), 0.0)]), plain)
    assert np.abs(_pixels(relighter, subject, loras=[f"{user[layout_name]}:1"]).astype(int) - plain).mean() > 1
    assert np.array_equal(_pixels(relighter, subject), plain)  # and off again


def test_switching_loras_gives_each_request_a_lone_relighters_pixels(weights_dir: Path, user: dict, subject) -> None:
    a, b = str(user["lora_diffusers"]), f"{user['lora_kohya']}:0.5"
    switching = Relighter.load(weights_dir, device="cpu")
    got = [_pixels(switching, subject, loras=loras) for loras in ([a], [b], [a, b], [])]
    for loras, pixels in zip(([a], [b], [a, b], []), got, strict=True):
        lone = Relighter.load(weights_dir, device="cpu", loras=loras)
        assert np.array_equal(_pixels(lone, subject), pixels)  # its defaults: the same LoRAs
    assert len(switching.adapters.names) == 2  # each file loaded once


def _mild_loras(weights_dir: Path, folder: Path) -> tuple[str, str]:
    """Two LoRAs that change the tiny stand-ins' images without making them chaotic, so that two
    ways of computing the same relight stay within a grey level."""
    a = write_lora(weights_dir, folder / "mild-a.safetensors", seed=5, strength=0.1)
    b = write_lora(weights_dir, folder / "mild-b.safetensors", "kohya", seed=6, strength=0.1)
    return str(a), f"{b}:0.7"


def test_a_fused_relighter_takes_loras_one_after_another_and_together(
    weights_dir: Path, relighter: Relighter, subject, tmp_path: Path
) -> None:
    """A deployment's fused QKV projections are undone once, for the first LoRA; every later one,
    and two in one relight, load (diffusers' own unfusing empties its saved processors and leaves
    its flags set, so a second unfusing failed)."""
    a, b = _mild_loras(weights_dir, tmp_path)
    fused = Relighter.load(weights_dir, device="cpu", speed=SpeedSettings(fused_qkv=True))
    for loras in ([a], [b], [], [a, b]):
        got, want = (_pixels(r, subject, loras=loras).astype(int) for r in (fused, relighter))
        assert np.abs(got - want).max() <= 1, loras


def test_a_lora_that_fails_half_way_leaves_the_loras_active_before(
    weights_dir: Path, relighter: Relighter, subject, tmp_path: Path
) -> None:
    """peft makes what it injects active; a file whose weights fail to load after injection must
    not stay active for the next relights, nor block the next adapter's name."""
    a, _ = _mild_loras(weights_dir, tmp_path)
    tensors = load_file(a)
    key = next(k for k in sorted(tensors) if k.endswith("lora_A.weight") and k.startswith("unet."))
    tensors[key] = tensors[key][:2]  # a rank that disagrees with its lora_B
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken))
    own = Relighter.load(weights_dir, device="cpu")
    plain = _pixels(own, subject)
    with pytest.raises(InputError, match="^loras: .*broken.safetensors"):
        _pixels(own, subject, loras=[a, str(broken)])
    assert np.array_equal(_pixels(own, subject), plain)
    assert np.array_equal(_pixels(own, subject, loras=[a]), _pixels(relighter, subject, loras=[a]))


def test_loras_are_in_the_share_key_and_bad_ones_name_loras(relighter: Relighter, user: dict, subject) -> None:
    image, mask = subject
    plain = relight_spec(image, None, "x", mask=mask, **FAST)
    lora = relight_spec(image, None, "x", mask=mask, loras=[str(user["lora_kohya"])], **FAST)
    assert relighter.share_key(plain) != relighter.share_key(lora)
    assert relighter.share_key(relight_spec(image, None, "x", mask=mask, sampler="euler-a", **FAST)) is None
    for bad, words in (([str(user["sdxl"]) + ".ckpt"], "not a .safetensors"), ([("x.safetensors", "a")], "scale")):
        with pytest.raises(InputError, match="^loras: .*" + words):
            relighter.relight(image, None, "x", mask=mask, loras=bad, **FAST)


@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
def test_every_sampler_runs_both_passes(relighter: Relighter, subject, name: str) -> None:
    image, mask = subject
    result = relighter.relight(image, None, "x", mask=mask, sampler=name, **FAST | {"highres_scale": 1.5})
    assert result.images[0].size == (384, 384)
    assert np.asarray(result.images[0]).std() > 1


def test_the_default_sampler_is_the_hosted_one(relighter: Relighter, subject) -> None:
    assert np.array_equal(_pixels(relighter, subject, sampler=samplers.HOSTED_SAMPLER), _pixels(relighter, subject))
    with pytest.raises(InputError, match="^sampler: 'k_lms' is not allowed"):
        _pixels(relighter, subject, sampler="k_lms")


def test_light_start_starts_closer_to_the_light_the_lower_the_denoise(
    relighter: Relighter, subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = SharedImage2Image.prepare_latents

    def recorded(self, image, *args, **kwargs):
        latents = original(self, image, *args, **kwargs)
        starts.append((image.clone(), latents.clone()))
        return latents

    monkeypatch.setattr(SharedImage2Image, "prepare_latents", recorded)
    distances = []
    for denoise in (0.9, 0.6, 0.3):
        starts.clear()
        _pixels(relighter, subject, light_start=denoise, steps=10)
        light, start = starts[0]  # the first pass's (the second is the high-res pass's)
        distances.append((start - light).pow(2).mean().sqrt().item())
    assert distances[0] > distances[1] > distances[2] > 0
    with pytest.raises(InputError, match="^light_start: 0 is out of range"):
        _pixels(relighter, subject, light_start=0)


def test_clip_skip_two_reads_the_layer_before_the_last(relighter: Relighter, subject) -> None:
    """1 is the hosted model's text encoding, to the bit; 2 the penultimate layer, through the final
    layer norm, as the community checkpoints made for it were trained."""
    one = _pixels(relighter, subject)
    assert np.array_equal(_pixels(relighter, subject, clip_skip=1), one)
    two = _pixels(relighter, subject, clip_skip=2)
    assert np.abs(two.astype(np.int16) - one.astype(np.int16)).mean() > 1.0
    with pytest.raises(InputError, match=r"^clip_skip: 3 is not allowed; choose one of \[1, 2\]"):
        relighter.relight(subject[0], None, "x", clip_skip=3, **FAST)


def _cli(weights_dir: Path, *argv: str) -> int:
    return cli.main([*argv, "--weights", str(weights_dir), "--device", "cpu"])


def test_the_command_line_a_manifest_and_reproduce_give_the_apis_pixels(
    weights_dir: Path, user: dict, subject, tmp_path: Path
) -> None:
    from PIL import Image

    image, mask = subject
    Image.fromarray(image).save(tmp_path / "s.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    options = dict(sampler="dpmpp-2m-karras", light_start=0.6, loras=[f"{user['lora_kohya']}:0.7"], clip_skip=2)
    api = Relighter.load(weights_dir, device="cpu", base_model=user["single_file"])
    expected = _pixels(api, subject, **options)
    flags = ["--width", "256", "--height", "256", "--steps", "3", "--highres-scale", "1", "--seed", "3"]
    flags += ["--light-source", "Left Light", "--mask", str(tmp_path / "m.png"), "--output-format", "png"]
    flags += ["--sampler", "dpmpp-2m-karras", "--light-start", "0.6", "--lora", f"{user['lora_kohya']}:0.7"]
    flags += ["--clip-skip", "2"]
    base = ["--base-model", str(user["single_file"])]
    assert (
        _cli(weights_dir, "relight", str(tmp_path / "s.png"), "--prompt", "x", *flags, *base, "-o", str(tmp_path / "a"))
        == 0
    )
    out = next((tmp_path / "a").glob("*.png"))
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    recipe = read_recipe(out)
    assert recipe["parameters"]["sampler"] == "dpmpp-2m-karras" and recipe["parameters"]["light_start"] == 0.6
    assert recipe["parameters"]["clip_skip"] == 2
    assert recipe["models"]["loras"][0]["scale"] == 0.7 and len(recipe["models"]["loras"][0]["sha256"]) == 64
    assert recipe["models"]["base_model"]["path"] == str(user["single_file"])

    assert _cli(weights_dir, "reproduce", str(out), "-o", str(tmp_path / "again")) == 0
    assert np.array_equal(np.asarray(Image.open(next((tmp_path / "again").glob("*.png")))), expected)

    line = {"id": "job", "subject": "s.png", "mask": "m.png", "prompt": "x", "width": 256, "height": 256}
    line |= {"steps": 3, "highres_scale": 1.0, "seed": 3, "light_source": "Left Light", "output_format": "png"}
    line |= {"sampler": "dpmpp-2m-karras", "light_start": 0.6, "loras": [f"{user['lora_kohya']}:0.7"], "clip_skip": 2}
    (tmp_path / "jobs.jsonl").write_text(json.dumps(line) + "\n")
    assert _cli(weights_dir, "batch", str(tmp_path / "jobs.jsonl"), *base, "-o", str(tmp_path / "b")) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "job-0.png")), expected)

    changed = tmp_path / "changed.safetensors"
    shutil.copyfile(user["lora_kohya"], changed)
    recipe["models"]["loras"][0]["path"] = str(changed)
    state = load_file(str(changed))
    state[next(iter(state))] += 1
    save_file(state, str(changed))
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    assert _cli(weights_dir, "reproduce", str(tmp_path / "r.json"), "-o", str(tmp_path / "c")) == 2
