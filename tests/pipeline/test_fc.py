"""The text-conditioned model (fc) beside fbc: one relighter for both, its light as the first pass's
start, the whole photo relit in place, its inputs checked against the model, its sequences."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iclight.core import constants as C
from iclight.core.light import Light
from iclight.core.spec import relight_spec
from iclight.core.validation import InputError
from iclight.imaging.lighting import light_background
from iclight.pipeline import Relighter
from iclight.store import layout

SMALL = {"width": 256, "height": 256, "steps": 3, "seed": 7}


def _copy(weights: Path, dest: Path) -> Path:
    """A weights folder whose files link to `weights`' (a file replaced there stays its own)."""
    for path in weights.rglob("*"):
        if path.is_file():
            (dest / path.relative_to(weights)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, dest / path.relative_to(weights))
    return dest


def test_both_models_share_the_text_encoder_and_the_vae(both: Relighter) -> None:
    assert list(both.unets) == [C.FBC, C.FC] and both.model == C.FBC
    fbc, fc = both._models[C.FBC], both._models[C.FC]
    assert fbc.unet.unet.conv_in.in_channels == 12 and fc.unet.unet.conv_in.in_channels == 8
    assert fbc.vae is fc.vae and fbc.text_encoder is fc.text_encoder
    assert {both.unets[m].model for m in C.MODELS} == set(C.MODELS)


def test_an_offset_of_the_other_model_fails_naming_the_file(weights_dir: Path, tmp_path: Path) -> None:
    root = _copy(weights_dir, tmp_path / "w")
    (root / layout.OFFSET_FILES[C.FC]).unlink()
    shutil.copyfile(weights_dir / layout.OFFSET_FILES[C.FBC], root / layout.OFFSET_FILES[C.FC])
    with pytest.raises(ValueError, match=r"iclight_sd15_fc.safetensors: holds the fbc model's UNet \(conv_in 12"):
        Relighter.load(root, device="cpu", model="fc", use_prepared=False)


def test_a_process_serving_one_model_needs_only_its_offset(
    weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(weights_dir, tmp_path / "w")
    (root / layout.OFFSET_FILES[C.FC]).unlink()
    monkeypatch.setenv("ICLIGHT_OFFLINE", "1")
    fbc = Relighter.load(root, device="cpu")  # fbc alone: the fc offset is not needed
    assert layout.OFFSET_FILES[C.FC] not in fbc.weight_files
    with pytest.raises(layout.MissingWeightsError, match=r"(?s)iclight_sd15_fc.safetensors.*--model fc"):
        Relighter.load(root, device="cpu", model="fc")


def test_the_model_is_chosen_by_the_environment(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLIGHT_MODEL", "fc")
    fc = Relighter.load(weights_dir, device="cpu")
    assert list(fc.unets) == [C.FC]
    result = fc.relight(np.full((64, 64, 3), 150, np.uint8), None, "sun", matting="none", **SMALL)
    assert result.images[0].size == (384, 384)
    assert relight_spec("s.png", None, "sun").model == C.FC  # a relight naming none takes it too


def test_a_model_not_served_fails_naming_model(relighter: Relighter) -> None:
    with pytest.raises(InputError, match=r"model: 'fc' is not loaded here \(this relighter serves fbc\)"):
        relighter.relight(np.zeros((64, 64, 3), np.uint8), None, "sun", model="fc", matting="none", **SMALL)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"model": "fc", "background": "b.png"}, "background_image: the fc model takes no background"),
        ({"model": "fc", "compute_normal": True}, "compute_normal: the fc model takes none"),
        ({"model": "fc", "light_start": 0.7}, "light_start: the fc model takes none"),
        ({"model": "fc", "light_source": C.AMBIENT}, "light_source: 'Ambient' is not the fc model's"),
        ({"model": "fbc", "lowres_denoise": 0.5}, "lowres_denoise: the fbc model takes none"),
        ({"model": "fbc", "light_source": C.NO_LIGHT}, "light_source: 'None' is the fc model's"),
        ({"model": "fc", "lowres_denoise": 0.05}, "lowres_denoise: 0.05 is out of range"),
        ({"model": "fc-2"}, "model: 'fc-2' is not allowed"),
    ],
)
def test_an_input_the_model_cannot_use_fails_naming_it_and_the_model(inputs: dict, message: str) -> None:
    background = inputs.pop("background", None)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        relight_spec("s.png", background, "sun", **inputs)


def test_fc_defaults_are_the_hosted_fc_models() -> None:
    spec = relight_spec("s.png", None, "sun", model="fc")
    assert (spec.light_source, spec.lowres_denoise, spec.settings.light_start) == (C.NO_LIGHT, 0.9, None)
    lit = relight_spec("s.png", None, "sun", model="fc", light_source=C.LEFT_LIGHT)
    assert lit.settings.light_start == 0.9 and lit.settings.first_steps == round(25 / 0.9)
    seeds = [relight_spec("s.png", None, "sun", model="fc").seed for _ in range(200)]
    assert max(seeds) < 2**16  # as the hosted fc model draws one: two random bytes
    assert max(relight_spec("s.png", "b.png", "sun").seed for _ in range(50)) >= 2**16


def test_the_fc_gradients_are_the_hosted_fc_models() -> None:
    for source, (start, stop, vertical) in {
        C.LEFT_LIGHT: (255, 0, False), C.RIGHT_LIGHT: (0, 255, False),
        C.TOP_LIGHT: (255, 0, True), C.BOTTOM_LIGHT: (0, 255, True),
    }.items():  # fmt: skip
        ramp = np.linspace(start, stop, 48 if vertical else 80)
        plane = np.tile(ramp[:, None], (1, 80)) if vertical else np.tile(ramp, (48, 1))
        want = np.stack((plane,) * 3, axis=-1).astype(np.uint8)
        assert np.array_equal(light_background(source, 80, 48, None, C.FC), want), source
    assert light_background(C.NO_LIGHT, 80, 48, None, C.FC) is None


def test_every_light_of_fbc_lights_fc_too(both: Relighter, subject_array: np.ndarray, tmp_path: Path) -> None:
    """A designed light, a light map and a panorama start fc's first pass, each its own way."""
    from media import panorama

    Image.fromarray((panorama(256, 128).clip(0, 1) * 255).astype(np.uint8)).save(tmp_path / "pano.png")
    light_map = np.zeros((64, 64, 3), np.uint8)
    light_map[:, 32:] = 255
    lights = {
        "none": {},
        "left": {"light_source": C.LEFT_LIGHT},
        "designed": {"light": Light(angle=30, color="orange")},
        "map": {"light_map": light_map},
        "hdri": {"hdri": str(tmp_path / "pano.png")},
    }
    made = {}
    for name, light in lights.items():
        result = both.relight(subject_array, None, "sun", model="fc", highres_pass=False, **SMALL, **light)
        made[name] = np.asarray(result.images[0]).astype(np.int16)
    names = list(made)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(made[a] - made[b]).mean() > 0.2, (a, b)  # (the tiny stand-ins wash a light out)


def test_fc_without_matting_relights_the_whole_photo(both: Relighter, subject_array: np.ndarray) -> None:
    result = both.relight(subject_array, None, "sun", model="fc", matting="none", light_source=C.LEFT_LIGHT, **SMALL)
    assert result.matte.min() == 1.0 and np.array_equal(result.subject_on_grey, subject_array)  # the frame as it is
    matted = both.relight(subject_array, None, "sun", model="fc", light_source=C.LEFT_LIGHT, **SMALL)
    assert matted.matte.min() < 1.0 and not np.array_equal(matted.subject_on_grey, subject_array)
    with pytest.raises(InputError, match="matting: 'none' needs a mask"):  # fbc relights a subject, never the frame
        both.relight(subject_array, None, "sun", matting="none", light_source=C.LEFT_LIGHT, **SMALL)


def test_without_the_highres_pass_the_low_res_image_is_the_result(both: Relighter, subject_array: np.ndarray) -> None:
    full = both.relight(subject_array, None, "sun", model="fc", **SMALL)
    low = both.relight(subject_array, None, "sun", model="fc", highres_pass=False, **SMALL)
    assert full.images[0].size == (384, 384) and low.images[0].size == (256, 256)
    assert "high-res diffusion" in full.timings and "high-res diffusion" not in low.timings


def test_fc_shares_batches_with_fc_alone(both: Relighter, subject_array: np.ndarray) -> None:
    a = relight_spec(subject_array, None, "sun", model="fc", light_source=C.LEFT_LIGHT, **SMALL)
    b = relight_spec(subject_array[:, ::-1].copy(), None, "moon", model="fc", light_source=C.LEFT_LIGHT, **SMALL)
    fbc = relight_spec(subject_array, None, "sun", light_source=C.LEFT_LIGHT, **SMALL)
    assert both.share_key(a) == both.share_key(b) != both.share_key(fbc)
    shared = both.run_shared([a, b])
    for spec, result in zip((a, b), shared, strict=True):
        alone = np.asarray(both.run(spec).images[0]).astype(np.int16)
        assert np.abs(np.asarray(result.images[0]).astype(np.int16) - alone).max() <= 2


def test_one_generator_draws_one_start_for_every_frame_and_the_steps_in_turn(
    both: Relighter, subject_array: np.ndarray
) -> None:
    """`batch_noise`: Light-A-Video's draws. Every frame starts from the first one's noise; each
    step's noise is the stream's next, frame after frame (not one seed each)."""
    same = relight_spec(subject_array, None, "sun", model="fc", light_source=C.LEFT_LIGHT, **SMALL)
    trio = [same, same, same]
    one = both.run_shared(trio, one_generator=True)
    seeded = both.run_shared(trio)  # each its own generator from the same seed: three equal frames
    arrays = [[np.asarray(r.images[0]).astype(np.int16) for r in rs] for rs in (one, seeded)]
    assert max(np.abs(arrays[1][0] - arrays[1][i]).max() for i in (1, 2)) <= 2  # (up to a batch's arithmetic)
    assert np.abs(arrays[0][1] - arrays[0][2]).mean() > 1  # one stream: each frame its own steps' noise

    captured = []
    import iclight.models.sharing as sharing

    original = sharing.starts

    def spy(members, one_start, draw):
        found = original(members, one_start, draw)
        captured.append(found.clone())
        return found

    sharing.starts = spy
    try:
        both.run_shared(trio, one_generator=True)
    finally:
        sharing.starts = original
    start = captured[0]
    assert torch.equal(start[0], start[1]) and torch.equal(start[0], start[2])


def test_an_fc_sequence_in_one_window_as_light_a_video_relights(both: Relighter) -> None:
    from media import frame

    frames = [np.asarray(Image.fromarray(frame(i)).resize((256, 256))) for i in range(5)]
    options = dict(model="fc", matting="none", window=0, highres_pass=False, batch_noise=True, steps=3, seed=3)
    result = both.relight_sequence(frames, None, "sun", light_source=C.LEFT_LIGHT, width=256, height=256, **options)
    assert result.windows == [[0, 1, 2, 3, 4]] and [im.size for im in result.images] == [(256, 256)] * 5
    assert all(m.min() == 1.0 for m in result.mattes)  # every frame whole, no matte estimated


def test_an_fc_sequence_against_light_a_videos_relighting_stage(weights_dir: Path) -> None:
    """Light-A-Video's own IC-Light stage (`make reference-lav`) and ours on one clip: the same pixels
    but for a grey level here and there (its frames' latents are encoded in one batch)."""
    from benchmarks import lav_fc

    if not lav_fc.available():
        pytest.skip("needs Light-A-Video's relighting stage in .ref/light-a-video (make reference-lav)")
    rows = lav_fc.compare(weights_dir, lav_fc.Setting(frames=4, steps=6))
    assert max(r["mean"] for r in rows) < 0.01 and max(r["max"] for r in rows) <= 2
