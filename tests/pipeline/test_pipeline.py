from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iclight.core import constants as C
from iclight.pipeline import Relighter
from iclight.store.layout import MissingWeightsError

FAST = dict(width=256, height=256, steps=2, highres_scale=1.0, highres_denoise=0.5)


@pytest.fixture
def rgba_subject(subject_array: np.ndarray) -> Image.Image:
    """A subject with its own soft alpha: the matte comes from it, not from RMBG."""
    alpha = Image.fromarray(np.where(subject_array[..., 0] > 100, 255, 40).astype(np.uint8))
    img = Image.fromarray(subject_array).convert("RGBA")
    img.putalpha(alpha)
    return img


def _arrays(result) -> list[np.ndarray]:
    return [np.asarray(im) for im in result.images]


def test_same_seed_same_pixels_different_seed_differs(relighter: Relighter, rgba_subject, background_array) -> None:
    a = relighter.relight(rgba_subject, background_array, "sun", seed=7, **FAST)
    b = relighter.relight(rgba_subject, background_array, "sun", seed=7, **FAST)
    c = relighter.relight(rgba_subject, background_array, "sun", seed=8, **FAST)
    assert a.seed == 7
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b), strict=True))
    assert not np.array_equal(_arrays(a)[0], _arrays(c)[0])


def test_batch_and_highres_size(relighter: Relighter, rgba_subject, background_array) -> None:
    out = relighter.relight(
        rgba_subject,
        background_array,
        "sun",
        seed=1,
        number_of_images=3,
        width=256,
        height=320,
        steps=2,
        highres_scale=1.3,
        highres_denoise=0.6,
    )
    # round(256 * 1.3 / 64) = 5 and round(320 * 1.3 / 64) = round(6.5) = 6: Python's
    # round-half-to-even, as the hosted model computes it.
    assert [im.size for im in out.images] == [(320, 384)] * 3
    assert not np.array_equal(_arrays(out)[0], _arrays(out)[1])


@pytest.mark.parametrize("light", C.LIGHT_SOURCES)
def test_every_light_source_runs(relighter: Relighter, rgba_subject, background_array, light: str) -> None:
    out = relighter.relight(rgba_subject, background_array, "sun", seed=3, light_source=light, **FAST)
    assert len(out.images) == 1 and out.images[0].size == (256, 256)


def test_light_sources_change_the_result(relighter: Relighter, rgba_subject, background_array) -> None:
    left = relighter.relight(rgba_subject, background_array, "sun", seed=3, light_source=C.LEFT_LIGHT, **FAST)
    right = relighter.relight(rgba_subject, background_array, "sun", seed=3, light_source=C.RIGHT_LIGHT, **FAST)
    assert not np.array_equal(_arrays(left)[0], _arrays(right)[0])


def test_compute_normal_gives_nine_images(relighter: Relighter, rgba_subject, background_array) -> None:
    out = relighter.relight(
        rgba_subject, background_array, "sun", seed=3, compute_normal=True, number_of_images=4, **FAST
    )
    assert len(out.images) == 9 and {im.size for im in out.images} == {(256, 256)}
    # sigma 16 lifts the subject inside the matte
    assert out.subject_on_grey.max() > 0


def test_rmbg_runs_for_a_plain_subject(relighter: Relighter, subject_array, background_array) -> None:
    out = relighter.relight(subject_array, background_array, "sun", seed=2, **FAST)
    assert out.matte.shape == subject_array.shape[:2]
    assert {"background removal", "text", "low-res diffusion", "high-res diffusion", "final decode"} <= set(out.timings)


def test_alpha_subject_uses_its_alpha(relighter: Relighter, rgba_subject, background_array) -> None:
    out = relighter.relight(rgba_subject, background_array, "sun", seed=2, **FAST)
    expected = np.asarray(rgba_subject.getchannel("A"), np.float32) / 255.0
    assert np.array_equal(out.matte, expected)


def test_empty_negative_prompt_and_long_prompt(relighter: Relighter, rgba_subject, background_array) -> None:
    out = relighter.relight(
        rgba_subject, background_array, "sun " * 120, negative_prompt="", appended_prompt="", seed=4, **FAST
    )
    assert len(out.images) == 1


def test_missing_weights_lists_files_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICLIGHT_OFFLINE", "1")
    (tmp_path / "RMBG-1.4").mkdir()
    with pytest.raises(MissingWeightsError) as err:
        Relighter.load(tmp_path, device="cpu")
    msg = str(err.value)
    assert "iclight_sd15_fbc.safetensors" in msg and "realistic-vision-v51/unet/config.json" in msg
    assert "python -m iclight.weights fetch" in msg
