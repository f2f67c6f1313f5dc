"""The property over every input of `Relighter.relight` (Hypothesis, tiny stand-ins, 1 step): a
call returns images of the asked size and count, or raises the package's InputError whose
message starts with the name of an input; never another exception.

`make test` runs the `ci` profile (a fixed number of derandomised examples); `make fuzz` the
`long` one, which prints how many it tried. Examples the long profile found are kept below as
regular tests."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from fuzzing import NAMES, extras, hosted_values, images
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from iclight.core import constants as C
from iclight.core.spec import Settings
from iclight.core.validation import InputError
from iclight.pipeline import Relighter


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def relight_holds(relighter: Relighter, subject, background, values: dict, more: dict) -> None:
    try:
        with mock.patch.dict(os.environ, {"ICLIGHT_OFFLINE": "1"}):  # a matting model not here is not fetched
            result = relighter.relight(subject, background, **values, **more)
    except InputError as e:
        event(f"refused: {str(e)[:60]}")
        assert str(e).split(":")[0] in NAMES, f"the message names no input: {e}"
        return
    event("relit")
    values = {k: C.default(k) if v is None else v for k, v in values.items()}  # None: the default
    s = Settings(values["width"], values["height"], 1, 1.0, values["highres_scale"], 0.5)
    count = 9 if values["compute_normal"] else values["number_of_images"]
    assert len(result.images) == count
    assert all(img.size == s.highres_size for img in result.images)


@given(data=st.data())
def test_every_call_relights_or_names_an_input(relighter: Relighter, folder: Path, data: st.DataObject) -> None:
    subject = data.draw(images(folder, "subject"), "subject")
    background = images(folder, "background")
    background = data.draw(st.one_of(background, background, background, st.none()), "background")
    values = data.draw(hosted_values(), "hosted")
    more = data.draw(extras(folder), "extras")
    relight_holds(relighter, subject, background, values, more)


SMALL = dict(
    appended_prompt="", negative_prompt="", width=256, height=256, steps=1, cfg=2.0, highres_scale=1.0,
    highres_denoise=0.5, light_source="Use Background Image", seed=0, number_of_images=1, compute_normal=False,
)  # fmt: skip


def _disc(w: int = 64, h: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full((h, w, 3), 40, np.uint8)
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2] = (220, 160, 90)
    return img


@pytest.mark.parametrize(("subject", "background"), [((1, 1), (64, 64)), ((5000, 1), (64, 64)), ((64, 64), (2, 5000))])
def test_any_image_of_a_pixel_or_more_relights(relighter: Relighter, subject, background) -> None:
    """As the hosted model takes them: a 1x1 subject, a 1x5,000 strip, a 2x5,000 background (the
    strips resampled without the huge intermediate the hosted order would make)."""
    images = [np.full((h, w, 3), 128, np.uint8) for w, h in (subject, background)]
    result = relighter.relight(*images, "x", **SMALL)
    assert result.images[0].size == (256, 256)


def test_a_one_pixel_placeholder_background_with_a_preset_light(relighter: Relighter) -> None:
    """The hosted code never looks at the background's pixels under a preset light."""
    result = relighter.relight(_disc(), np.zeros((1, 1, 3), np.uint8), "x", **SMALL | {"light_source": "Left Light"})
    assert result.images[0].size == (256, 256)


@pytest.mark.parametrize("kind", ["array", "pil", "float array"])
def test_a_light_map_may_be_an_array(relighter: Relighter, kind: str) -> None:
    grey = np.full((256, 256, 3), 128, np.uint8)
    light_map = {"array": grey, "pil": Image.fromarray(grey), "float array": grey.astype(np.float32) / 255}[kind]
    result = relighter.relight(_disc(), None, "x", light_map=light_map, **SMALL)
    expected = relighter.relight(_disc(), None, "x", light_map=Image.fromarray(grey), **SMALL)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected.images[0]))


def test_an_array_light_map_with_compute_normal_names_both(relighter: Relighter) -> None:
    with pytest.raises(InputError, match="^compute_normal: cannot be combined with light_map"):
        relighter.relight(
            _disc(), None, "x", light_map=np.zeros((64, 64, 3), np.uint8), **SMALL | {"compute_normal": True}
        )


# Found by the long profile (`make fuzz`), kept as regular tests.


@pytest.mark.parametrize("count", [1, 2])
def test_one_step_at_a_denoise_under_two_thirds_runs_one_high_res_step(relighter: Relighter, count: int) -> None:
    """The hosted rule gives the high-res pass round(1 / 0.75) = 1 step of which it runs
    int(1 * 0.75) = 0, and the hosted code fails; here it runs one."""
    settings = SMALL | {"light_source": "Left Light", "highres_denoise": 0.75, "number_of_images": count}
    result = relighter.relight(_disc(), None, "x", **settings)
    assert len(result.images) == count
    assert Settings(256, 256, 1, 2.0, 1.0, 0.75).highres_steps == 2
    assert Settings(256, 256, 25, 2.0, 1.5, 0.5).highres_steps == 50  # the hosted rule where it gives steps


def test_a_matting_model_whose_weights_are_missing_names_matting(
    relighter: Relighter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICLIGHT_OFFLINE", "1")
    with pytest.raises(InputError, match="^matting: 'birefnet' is not available here"):
        relighter.relight(_disc(), None, "x", matting="birefnet", **SMALL | {"light_source": "Left Light"})


@pytest.mark.parametrize("name", ["negative_prompt", "highres_scale", "cfg", "steps"])
def test_none_for_an_input_with_a_default_takes_the_default(relighter: Relighter, name: str) -> None:
    given = SMALL | {"light_source": "Left Light", "steps": 2}
    expected = relighter.relight(_disc(), None, "x", **given | {name: C.default(name) if name != "steps" else 2})
    if name == "steps":
        given = given | {"steps": None}
        expected = relighter.relight(
            _disc(), None, "x", **SMALL | {"light_source": "Left Light", "steps": C.default("steps")}
        )
    result = relighter.relight(_disc(), None, "x", **given | {name: None})
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(expected.images[0]))


def test_a_mask_of_the_subjects_shape_is_resized_and_another_shape_is_named(relighter: Relighter) -> None:
    subject = _disc(64, 96)
    full = np.zeros((96, 64), np.uint8)
    full[20:80, 10:54] = 255
    half = np.asarray(Image.fromarray(full).resize((32, 48), Image.BILINEAR))  # the same 2:3 shape
    settings = SMALL | {"light_source": "Left Light"}
    resized = relighter.relight(subject, None, "x", mask=half, **settings)
    assert resized.matte.shape == (96, 64) and resized.matte[50, 32] > 0.9 and resized.matte[5, 5] < 0.1
    with pytest.raises(InputError, match="^mask: size 64x64 differs from the subject's 64x96 and so does its aspect"):
        relighter.relight(subject, None, "x", mask=np.zeros((64, 64), np.uint8), **settings)


def test_a_folder_given_as_an_image_is_named_as_one(relighter: Relighter, tmp_path: Path) -> None:
    """Found by `make fuzz`: a folder was reported as a damaged file."""
    with pytest.raises(InputError, match="^subject_image: .* is a folder, not an image file"):
        relighter.relight(tmp_path, None, "x", **SMALL | {"light_source": "Left Light"})
