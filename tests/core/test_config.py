"""The configuration: one parser per kind of value, a clear error for a bad value at boot, and
no other place in the package that reads the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from iclight.core import config
from iclight.core.config import ConfigError

# A value each variable must refuse, and the words its error must say are allowed.
BAD = {
    "ICLIGHT_WEIGHTS_DIR": ("README.md", "a folder"),
    "ICLIGHT_DEVICE": ("tpu", "auto, cpu, cuda or cuda:N"),
    "ICLIGHT_WEIGHTS_URL": ("ftp://mirror/weights", "an http:// or https:// URL"),
    "ICLIGHT_OFFLINE": ("perhaps", config.BOOLEAN),
    "HF_HUB_OFFLINE": ("2", config.BOOLEAN),
    "ICLIGHT_OUTPUT_DIR": ("README.md", "a folder"),
    "ICLIGHT_KEEP_OUTPUTS": ("0", "a whole number, at least 1"),
    "ICLIGHT_COMPILE": ("fast", "0 (off), 1 or unet"),
    "ICLIGHT_UNET_GRAPHS": ("sometimes", config.BOOLEAN),
    "ICLIGHT_CHANNELS_LAST": ("sideways", "auto (on when compiling on CUDA)"),
    "ICLIGHT_ATTENTION": ("warp", "auto, flash, efficient, cudnn or math"),
    "ICLIGHT_MODEL": ("fbc2", "fc (the text-conditioned one) or both"),
    "ICLIGHT_MATTING": ("birefnet-xl", "rmbg-1.4, birefnet, birefnet-lite or none"),
    "ICLIGHT_BASE_MODEL": ("README.md", "a diffusers SD1.5 folder or a single-file"),
    "ICLIGHT_LORAS": ("style.safetensors:loud", "FILE[:SCALE] items"),
    "ICLIGHT_BATCH_IMAGES": ("13", "an integer from 1 to 12"),
    "ICLIGHT_BATCH_WINDOW_MS": ("-1", "milliseconds from 0 to 1000"),
    "COG_MAX_CONCURRENCY": ("0", "a positive integer"),
    "ICLIGHT_DEBUG": ("loud", config.BOOLEAN),
}


def test_every_variable_has_a_bad_value_here_and_a_line_in_the_docs() -> None:
    names = [var.name for var in config.VARIABLES]
    assert sorted(names) == sorted(BAD)
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for var in config.VARIABLES:
        assert f"`{var.name}`" in docs, var.name


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_fails_at_boot_naming_the_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value, allowed = BAD[name]
    monkeypatch.chdir(ROOT)  # README.md: a file where a folder is expected
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as error:
        config.check()
    assert str(error.value).startswith(f"{name}={value!r} is not allowed; use ")
    assert allowed in str(error.value)


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("ICLIGHT_OFFLINE", "ON", True),
        ("ICLIGHT_OFFLINE", " yes ", True),
        ("ICLIGHT_UNET_GRAPHS", "off", False),
        ("ICLIGHT_UNET_GRAPHS", "", True),
        ("ICLIGHT_CHANNELS_LAST", "auto", None),
        ("ICLIGHT_CHANNELS_LAST", "true", True),
        ("ICLIGHT_COMPILE", "1", "unet"),
        ("ICLIGHT_COMPILE", "no", "off"),
        ("ICLIGHT_COMPILE", "ALL", "all"),
        ("ICLIGHT_DEVICE", "CUDA:1", "cuda:1"),
        ("ICLIGHT_KEEP_OUTPUTS", "12", 12),
    ],
)
def test_one_parser_for_each_kind(name: str, text: str, value, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, text)
    var = next(v for v in config.VARIABLES if v.name == name)
    assert var.read() == value


def test_either_offline_switch_turns_downloads_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.offline() is False
    monkeypatch.setenv("HF_HUB_OFFLINE", "on")  # a word huggingface_hub itself also takes
    assert config.offline() is True


def test_nothing_else_in_the_package_reads_the_environment() -> None:
    """Every ICLIGHT_* (and HF_HUB_OFFLINE) goes through `config`: elsewhere the environment is
    touched only for other libraries' own variables (Ray's address, Inductor's and Gradio's)."""
    others = ("RAY_ADDRESS", "TORCHINDUCTOR_CACHE_DIR", "GRADIO_ANALYTICS_ENABLED")
    offenders = [
        f"{path.name}:{n}"
        for path in sorted((ROOT / "iclight").glob("*.py"))
        if path.name != "config.py"
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"os\.environ|os\.getenv|getenv\(", line) and not any(name in line for name in others)
    ]
    assert offenders == []


def test_the_command_line_names_a_bad_variable_without_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ICLIGHT_COMPILE": "fast"}
    run = subprocess.run(
        [sys.executable, "-m", "iclight", "weights", "verify", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: ICLIGHT_COMPILE='fast' is not allowed; use 0 (off), 1 or unet (the UNet), all (the UNet and the VAE) "
        "or graphs (the UNet with CUDA graphs)"
    ]


def test_a_device_argument_is_checked_like_the_variable() -> None:
    from iclight.pipeline.loading import DeviceError, resolve_device

    with pytest.raises(DeviceError, match=r"device: 'tpu' is not a device; use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="device cuda:1: CUDA is not available"):
        resolve_device("cuda:1")
    assert str(resolve_device("CPU")) == "cpu"
