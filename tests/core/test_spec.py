from __future__ import annotations

import pytest

from iclight.core import constants as C
from iclight.core import options as O
from iclight.core.spec import encoding, relight_spec
from iclight.core.validation import InputError

GOOD = {"subject_image": "s.png", "background_image": "b.png", "prompt": "sunlight"}
OUTPUT = ("output_format", "output_quality")


def validate(values: dict) -> dict:
    """The hosted inputs through the doors a prediction goes through: the relight's and the output's."""
    values = dict(values)
    encoded = encoding(*(values.pop(n, None) for n in OUTPUT))
    spec = relight_spec(values.pop("subject_image", None), values.pop("background_image", None), **values)
    found = {s.name: getattr(spec, s.name, None) for s in C.INPUTS}
    return found | {"output_format": encoded.format, "output_quality": encoded.quality}


def test_defaults_fill_in_and_a_seed_is_drawn() -> None:
    out = validate(dict(GOOD))
    assert out["width"] == 512 and out["height"] == 640 and isinstance(out["seed"], int)
    assert out["light_source"] == C.BACKGROUND_IMAGE and out["output_format"] == "webp"
    assert validate(dict(GOOD))["seed"] != out["seed"]  # drawn anew for each relight


@pytest.mark.parametrize("name", ["subject_image", "background_image", "prompt"])
def test_required_inputs(name: str) -> None:
    with pytest.raises(InputError, match=f"^{name}: required"):
        validate({**GOOD, name: None})


def test_the_background_is_required_only_where_it_is_the_light() -> None:
    assert validate({**GOOD, "background_image": None, "light_source": C.LEFT_LIGHT})["light_source"] == C.LEFT_LIGHT


BOUNDED = [s for s in C.INPUTS if s.ge is not None]


@pytest.mark.parametrize("spec", BOUNDED, ids=[s.name for s in BOUNDED])
def test_every_bound(spec: C.InputSpec) -> None:
    step = 1 if spec.type is int else 0.01
    validate({**GOOD, spec.name: spec.ge})
    validate({**GOOD, spec.name: spec.le})
    for bad in (spec.ge - step, spec.le + step):
        with pytest.raises(InputError, match=rf"^{spec.name}: .* out of range; allowed"):
            validate({**GOOD, spec.name: bad})


CHOICES = [s for s in C.INPUTS if s.choices is not None]


@pytest.mark.parametrize("spec", CHOICES, ids=[s.name for s in CHOICES])
def test_every_choice(spec: C.InputSpec) -> None:
    for value in spec.choices:
        assert validate({**GOOD, spec.name: value})[spec.name] == value
    bad = 500 if spec.type is int else "nope"
    with pytest.raises(InputError, match=rf"^{spec.name}: .* not allowed; choose one of \["):
        validate({**GOOD, spec.name: bad})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("steps", "many"),
        ("steps", 2.5),
        ("cfg", "x"),
        ("cfg", float("nan")),
        ("prompt", 5),
        ("compute_normal", "maybe"),
        ("seed", "abc"),
        ("width", True),
    ],
)
def test_wrong_types_name_the_input(name: str, value: object) -> None:
    with pytest.raises(InputError, match=f"^{name}: "):
        validate({**GOOD, name: value})


def test_coercions() -> None:
    out = validate({**GOOD, "steps": "7", "cfg": 3, "compute_normal": "true", "seed": 9.0})
    assert (out["steps"], out["cfg"], out["compute_normal"], out["seed"]) == (7, 3.0, True, 9)
    assert isinstance(out["cfg"], float)


def test_seed_range() -> None:
    assert validate({**GOOD, "seed": 0})["seed"] == 0
    assert validate({**GOOD, "seed": 2**64 - 1})["seed"] == 2**64 - 1
    with pytest.raises(InputError, match="^seed: "):
        validate({**GOOD, "seed": 2**64})


def test_unknown_input() -> None:
    with pytest.raises(InputError, match="^colour: not a relight option"):
        validate({**GOOD, "colour": "red"})


def test_the_wide_parity_cases_are_valid_hosted_inputs() -> None:
    """`make parity-wide` checks these against the hosted code: each must be a request the
    hosted schema accepts, and together they cover every light source and both long prompts."""
    from benchmarks.parity.cases import cases

    base = {s.name: s.default for s in C.INPUTS} | {"name": "basic", "prompt": "sun", "seed": 1}
    base |= {"subject_image": "astronaut.png", "background_image": "coffee.png", "width": 256, "height": 320}
    found = cases(base)
    assert len({c["name"] for c in found}) == len(found)
    for case in found:
        validate({k: v for k, v in case.items() if k != "name"})
    assert {c["light_source"] for c in found} == set(C.LIGHT_SOURCES)
    assert any(c["compute_normal"] for c in found) and max(c["number_of_images"] for c in found) > 1
    long = next(c for c in found if c["name"] == "long prompts")
    assert min(len(long[k].split()) for k in ("prompt", "negative_prompt")) > 77  # past CLIP's 77 tokens


# -- every door makes the one value --------------------------------------------------------------------

SET = {  # the hosted inputs and options beyond them, away from their defaults
    "prompt": "sun", "appended_prompt": "", "negative_prompt": "blur", "width": 320, "height": 384, "steps": 3,
    "cfg": 2.5, "highres_scale": 1.25, "highres_denoise": 0.6, "light_source": C.LEFT_LIGHT, "seed": 5,
    "number_of_images": 2,
}  # fmt: skip
EXTRA = {"detail_transfer": 0.5, "keep_colors": 0.25, "sampler": "euler", "clip_skip": 2, "light_start": 0.7}
LIGHT = {"light_angle": 180.0, "light_color": "orange", "light_bright": 200.0}


def _record(spec) -> dict:
    return spec.record() | {"subject": str(spec.subject), "background": str(spec.background)}


def test_every_door_makes_the_same_value(tmp_path) -> None:
    """The API, the command line, a manifest line, the web app and the Cog predictor make one
    `RelightSpec` for the same inputs: the checks and the defaults are the door's, once."""
    from iclight import cli
    from iclight.cli.options import files, job_settings
    from iclight.jobs.manifest import make_job

    subject, background = str(tmp_path / "s.png"), str(tmp_path / "b.png")
    api = _record(relight_spec(subject, background, **SET | EXTRA | LIGHT))
    flags = [f for name, value in (SET | EXTRA | LIGHT).items() for f in (O.BY_NAME[name].cli_flag, str(value))]
    args = cli.build_parser().parse_args(["relight", subject, background, *flags])
    entry = {"subject": subject, "background": background}
    assert _record(make_job(entry | files(args), job_settings(args), tmp_path, "cli").spec) == api
    assert _record(make_job(entry | SET | EXTRA | LIGHT, {}, tmp_path, "line").spec) == api
    web = pytest.importorskip("iclight.web.app")
    values = web.LIGHT_PAD | SET | EXTRA | {"design_light": True, "light_start": 0.7} | LIGHT
    assert _record(make_job(entry, web.settings_of(values), tmp_path, "web").spec) == api
    from predict import Predictor
    from predict_fc import Predictor as FcPredictor

    hosted = _record(Predictor().checked({"subject_image": subject, "background_image": background} | SET)[0])
    assert hosted == _record(relight_spec(subject, background, **SET))
    fc = {name: value for name, value in SET.items() if name in C.FC_INPUT_SPECS}
    hosted_fc = _record(FcPredictor().checked({"subject_image": subject, "lowres_denoise": 0.5} | fc)[0])
    assert hosted_fc == _record(relight_spec(subject, None, model="fc", lowres_denoise=0.5, **fc))
