"""Every environment variable the package reads, and the one parser for each kind of value.

The rest of the package asks this module, never `os.environ`, so that `1`, `true`, `yes` and
`on` mean the same everywhere, and a bad value fails at boot (`check`) with a message naming
the variable, the value and what is allowed. docs/configuration.md lists them all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import constants as C

ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")
BOOLEAN = "1, true, yes, on or 0, false, no, off"


class ConfigError(ValueError):
    """An environment variable with a value the package cannot use; the message names it."""


class DeviceError(RuntimeError):
    """A device that is not a device, or not on this machine; the message says which."""


@dataclass(frozen=True)
class Variable:
    """One environment variable: how its text becomes a value, its default and its meaning."""

    name: str
    parse: Callable[[Variable, str], Any]
    default: Any
    allowed: str
    description: str

    def read(self) -> Any:
        """The parsed value, or the default where the variable is unset or empty."""
        return self.value_of(os.environ.get(self.name, ""))

    def value_of(self, text: str) -> Any:
        """What `text` means as this variable's value (an option given on the command line, say)."""
        text = text.strip()
        return self.default if not text else self.parse(self, text)

    def refuse(self, text: str) -> ConfigError:
        return ConfigError(f"{self.name}={text!r} is not allowed; use {self.allowed}")


def _boolean(var: Variable, text: str) -> bool:
    word = text.lower()
    if word not in ON + OFF:
        raise var.refuse(text)
    return word in ON


def _folder(var: Variable, text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise var.refuse(text)
    return path


def _url(var: Variable, text: str) -> str:
    if not text.lower().startswith(("http://", "https://")) or len(text) < len("http://x"):
        raise var.refuse(text)
    return text


def _at_least_one(var: Variable, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise var.refuse(text) from None
    if number < 1:
        raise var.refuse(text)
    return number


def _images(var: Variable, text: str) -> int:
    number = _at_least_one(var, text)
    if number > 12:  # the most images one prediction may ask for, and so one batch's memory bound
        raise var.refuse(text)
    return number


def _milliseconds(var: Variable, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise var.refuse(text) from None
    if not 0 <= number <= 1000:
        raise var.refuse(text)
    return number


def _device(var: Variable, text: str) -> str:
    name = text.lower()
    index = name.removeprefix("cuda:")
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and index.isdigit()):
        raise var.refuse(text)
    return name


def _choice(*choices: str) -> Callable[[Variable, str], str]:
    def parse(var: Variable, text: str) -> str:
        if text.lower() not in choices:
            raise var.refuse(text)
        return text.lower()

    return parse


def _base_model(var: Variable, text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() != ".safetensors":
        raise var.refuse(text)
    return path


def _loras(var: Variable, text: str) -> tuple[tuple[Path, float], ...]:
    """FILE[:SCALE] items, comma-separated; the scale defaults to 1."""
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, scale = item.rpartition(":") if ":" in item else (item, "", "1")
        try:
            found.append((Path(name or item).expanduser(), float(scale)))
        except ValueError:
            raise var.refuse(text) from None
    return tuple(found)


def _compile(var: Variable, text: str) -> str:
    """off, unet, all or graphs (1 and the other on-words mean unet; 0 and the off-words, off)."""
    word = text.lower()
    if word in OFF:
        return "off"
    if word in ON:
        return "unet"
    return _choice("unet", "all", "graphs")(var, text)


def _auto_or_boolean(var: Variable, text: str) -> bool | None:
    """None for auto, else the on/off value."""
    return None if text.lower() == "auto" else _boolean(var, text)


WEIGHTS_DIR = Variable(
    "ICLIGHT_WEIGHTS_DIR",
    _folder,
    None,
    "a folder (or a path where one will be made)",
    "the weights folder; default weights/ in the checkout, else ./weights",
)
DEVICE = Variable("ICLIGHT_DEVICE", _device, "auto", "auto, cpu, cuda or cuda:N", "where the models run")
WEIGHTS_URL = Variable(
    "ICLIGHT_WEIGHTS_URL",
    _url,
    None,
    "an http:// or https:// URL",
    "a mirror serving the weights folder and its manifest.json; default: the Hugging Face Hub",
)
OFFLINE = Variable("ICLIGHT_OFFLINE", _boolean, False, BOOLEAN, "never download: missing weights fail at once, listed")
HF_OFFLINE = Variable("HF_HUB_OFFLINE", _boolean, False, BOOLEAN, "the Hub's own offline switch; the same effect")
OUTPUT_DIR = Variable(
    "ICLIGHT_OUTPUT_DIR",
    _folder,
    Path(tempfile.gettempdir()) / f"iclight-outputs-{os.getuid()}",
    "a folder (or a path where one will be made)",
    "where the Cog predictor writes each prediction's files (one folder each)",
)
KEEP_OUTPUTS = Variable(
    "ICLIGHT_KEEP_OUTPUTS",
    _at_least_one,
    4,
    "a whole number, at least 1",
    "how many of the predictor's most recent output folders are kept",
)
COMPILE = Variable(
    "ICLIGHT_COMPILE",
    _compile,
    "off",
    "0 (off), 1 or unet (the UNet), all (the UNet and the VAE) or graphs (the UNet with CUDA graphs)",
    "torch.compile at boot, warmed up and cached beside the weights",
)
UNET_GRAPHS = Variable(
    "ICLIGHT_UNET_GRAPHS", _boolean, True, BOOLEAN, "CUDA graphs of the eager UNet on CUDA (ignored on the CPU)"
)
CHANNELS_LAST = Variable(
    "ICLIGHT_CHANNELS_LAST",
    _auto_or_boolean,
    None,
    f"auto (on when compiling on CUDA), or {BOOLEAN}",
    "the channels_last memory layout for the UNet and the VAE",
)
ATTENTION = Variable(
    "ICLIGHT_ATTENTION",
    _choice("auto", "flash", "efficient", "cudnn", "math"),
    "auto",
    "auto, flash, efficient, cudnn or math",
    "the scaled-dot-product attention backend tried first",
)
MODEL = Variable(
    "ICLIGHT_MODEL",
    _choice(*C.MODEL_CHOICES),
    C.FBC,
    "fbc (the background-conditioned model), fc (the text-conditioned one) or both",
    "the IC-Light model loaded at boot and used by a relight that names none (both: fbc by default); docs/models.md",
)
MATTING = Variable(
    "ICLIGHT_MATTING",
    _choice(*C.MATTING_CHOICES),
    "rmbg-1.4",
    "rmbg-1.4, birefnet, birefnet-lite or none",
    "the matting model fetched and loaded at boot (the only one); none loads none (every relight brings "
    "a mask or an alpha channel)",
)
BASE_MODEL = Variable(
    "ICLIGHT_BASE_MODEL",
    _base_model,
    None,
    "a diffusers SD1.5 folder or a single-file SD1.5 .safetensors checkpoint",
    "the base model in place of the bundled Realistic Vision 5.1 (docs/models.md); unset: the bundled one",
)
LORAS = Variable(
    "ICLIGHT_LORAS",
    _loras,
    (),
    "FILE[:SCALE] items separated by commas (.safetensors, kohya/A1111 or diffusers layout)",
    "LoRAs loaded at boot and applied to every relight that names none of its own (docs/models.md)",
)
BATCH_IMAGES = Variable(
    "ICLIGHT_BATCH_IMAGES",
    _images,
    4,
    "an integer from 1 to 12",
    "the most images that concurrent predictions share in one diffusion batch (1: none shared)",
)
BATCH_WINDOW_MS = Variable(
    "ICLIGHT_BATCH_WINDOW_MS",
    _milliseconds,
    5.0,
    "milliseconds from 0 to 1000",
    "how long a prediction waits for others to share its batch when the model is idle",
)
COG_CONCURRENCY = Variable(
    "COG_MAX_CONCURRENCY",
    _at_least_one,
    1,
    "a positive integer",
    "Cog's own: how many predictions the server takes at once; above 1 they share diffusion batches",
)
DEBUG = Variable("ICLIGHT_DEBUG", _boolean, False, BOOLEAN, "the command line shows the whole traceback of an error")

VARIABLES: tuple[Variable, ...] = (
    WEIGHTS_DIR,
    DEVICE,
    WEIGHTS_URL,
    OFFLINE,
    HF_OFFLINE,
    OUTPUT_DIR,
    KEEP_OUTPUTS,
    COMPILE,
    UNET_GRAPHS,
    CHANNELS_LAST,
    ATTENTION,
    MODEL,
    MATTING,
    BASE_MODEL,
    LORAS,
    BATCH_IMAGES,
    BATCH_WINDOW_MS,
    COG_CONCURRENCY,
    DEBUG,
)


def check() -> None:
    """Read every variable once, so that a bad value fails now, at boot, not mid-request."""
    for var in VARIABLES:
        var.read()


def offline() -> bool:
    """Whether downloads are off (ICLIGHT_OFFLINE or HF_HUB_OFFLINE)."""
    return OFFLINE.read() or HF_OFFLINE.read()
