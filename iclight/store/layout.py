"""Where every weight file comes from and where it lands: the one manifest of the layout."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core import config
from ..core import constants as C

SD_DIR = "realistic-vision-v51"
# Each IC-Light model's offset over SD1.5's UNet (lllyasviel/ic-light, Apache-2.0).
OFFSET_FILES = {C.FBC: "iclight_sd15_fbc.safetensors", C.FC: "iclight_sd15_fc.safetensors"}
OFFSET_FILE = OFFSET_FILES[C.FBC]
RMBG_FILE = "RMBG-1.4/model.safetensors"
BIREFNET_FILE = "BiRefNet/model.safetensors"
BIREFNET_LITE_FILE = "BiRefNet_lite/model.safetensors"
PREPARED_DIR = "prepared"
PREPARED_CONFIG = f"{PREPARED_DIR}/unet-config.json"

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class WeightFile:
    """One file of the layout: its source on the Hugging Face Hub and where it lands."""

    repo: str
    path: str  # path inside the repo
    dest: str  # path inside the weights folder
    revision: str = "main"


SD_REPO = "stablediffusionapi/realistic-vision-v51"
_SD_FILES = (
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
)
MANIFEST: tuple[WeightFile, ...] = (
    *(WeightFile(SD_REPO, f, f"{SD_DIR}/{f}") for f in _SD_FILES),
    *(WeightFile("lllyasviel/ic-light", f, f) for f in OFFSET_FILES.values()),
    WeightFile("briaai/RMBG-1.4", "model.safetensors", RMBG_FILE),
    WeightFile("ZhengPeng7/BiRefNet", "model.safetensors", BIREFNET_FILE),
    WeightFile("ZhengPeng7/BiRefNet_lite", "model.safetensors", BIREFNET_LITE_FILE),
)


SD_UNET = (f"{SD_DIR}/unet/config.json", f"{SD_DIR}/unet/diffusion_pytorch_model.safetensors")


def unet_sources(model: str) -> tuple[str, ...]:
    """What `model`'s prepared UNet is made from; not needed at boot when a valid one is present."""
    return (*SD_UNET, OFFSET_FILES[model])


def not_served(*models: str) -> tuple[str, ...]:
    """The offsets of the models not among `models` (a deployment neither fetches nor loads them)."""
    return tuple(f for model, f in OFFSET_FILES.items() if model not in models)


def model_of_file(rel: str) -> str | None:
    """The IC-Light model a file of the layout is for (its offset, or a prepared UNet: fbc's are
    named `unet-DTYPE...`, fc's `unet-fc-DTYPE...`); None for what both models share."""
    found = [model for model, offset in OFFSET_FILES.items() if rel == offset]
    if not found and rel.startswith(f"{PREPARED_DIR}/unet-") and rel.endswith(".safetensors"):
        found = [C.FC if rel.startswith(f"{PREPARED_DIR}/unet-{C.FC}-") else C.FBC]
    return found[0] if found else None


def weights_dir(override: str | os.PathLike | None = None) -> Path:
    """The argument, else ICLIGHT_WEIGHTS_DIR, else weights/ in this checkout (where cog.yaml
    is), else weights/ in the working directory (an installed package has no checkout)."""
    if override:
        return Path(override)
    configured = config.WEIGHTS_DIR.read()
    if configured:
        return configured
    checkout = REPO_ROOT / "cog.yaml"
    return (REPO_ROOT if checkout.is_file() else Path.cwd()) / "weights"


def missing_files(root: Path) -> list[str]:
    return [f.dest for f in MANIFEST if not (root / f.dest).is_file()]


class MissingWeightsError(FileNotFoundError):
    def __init__(self, root: Path, missing: list[str], fetch_options: str = "") -> None:
        listing = "\n  ".join(missing)
        super().__init__(
            f"weights missing in {root}:\n  {listing}\n"
            f"Fetch them with: python -m iclight.weights fetch --dest {root}{fetch_options}   (or: make weights)"
        )
        self.missing = missing
