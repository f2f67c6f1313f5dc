"""Each predictor's inputs, read with Cog's own inspector, equal its hosted model's schema: cog.yaml's
the hosted fbc model's (`zsxkib/ic-light-background`), cog-fc.yaml's the hosted fc model's
(`zsxkib/ic-light`)."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from conftest import DATA, ROOT

HOSTED = {"cog.yaml": DATA / "hosted_schema.json", "cog-fc.yaml": DATA / "hosted_schema_fc.json"}
COG_SCHEMA = DATA / "cog_config_schema_v1.0.json"
TYPES = {"PATH": "file", "STRING": "string", "INTEGER": "integer", "FLOAT": "number", "BOOL": "boolean"}


def _cog_config(name: str = "cog.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module", params=sorted(HOSTED))
def config_name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def inspected(config_name):
    from cog._inspector import create_predictor

    module, cls = _cog_config(config_name)["run"].split(":")
    return create_predictor(module.removesuffix(".py"), cls)


def test_inputs_equal_the_hosted_schema(inspected, config_name) -> None:
    hosted = json.loads(HOSTED[config_name].read_text())["inputs"]
    ours = sorted(inspected.inputs.values(), key=lambda f: f.order)
    assert [f.name for f in ours] == [h["name"] for h in hosted]
    for field, h in zip(ours, hosted, strict=True):
        assert field.order == h["order"], field.name
        assert TYPES[field.type.primitive.name] == h["type"], field.name
        assert field.description == h["description"], field.name
        required = field.type.repetition.name == "REQUIRED" and field.default is None
        assert required == h["required"], field.name
        if "default" in h:
            assert field.default == h["default"] and type(field.default) is type(h["default"]), field.name
        assert field.ge == h.get("ge") and field.le == h.get("le"), field.name
        assert field.choices == h.get("choices"), field.name


def test_seed_may_be_omitted(inspected) -> None:
    seed = inspected.inputs["seed"]
    assert seed.type.repetition.name == "OPTIONAL" and seed.default is None


def test_output_is_a_list_of_files(inspected) -> None:
    assert inspected.output.kind.name == "LIST" and inspected.output.type.name == "PATH"


def test_cog_yaml_is_valid(config_name) -> None:
    jsonschema.validate(_cog_config(config_name), json.loads(COG_SCHEMA.read_text()))


def test_the_fc_image_is_the_fbc_image() -> None:
    """cog-fc.yaml differs from cog.yaml in the predictor alone: one image's dependencies, one code."""
    fbc, fc = _cog_config(), _cog_config("cog-fc.yaml")
    assert fc.pop("run") == "predict_fc.py:Predictor" and fbc.pop("run") == "predict.py:Predictor"
    assert fc == fbc


def test_cog_yaml_build() -> None:
    build = _cog_config()["build"]
    assert build["gpu"] is True and str(build["python_version"]) == "3.11" and build["cuda"]
    requirements = (ROOT / build["python_requirements"]).read_text()
    pins = dict(line.split("==") for line in requirements.splitlines() if "==" in line)
    assert pins["torch"] == "2.13.0" and pins["diffusers"] == "0.42.1"
    for unwanted in ("gradio", "opencv", "cog"):
        assert not any(name.startswith(unwanted) for name in pins), unwanted
