"""Where a base model of the user's own is on disk (`models/basemodel.py` loads it): a diffusers
folder, or a single-file SD1.5 checkpoint (`.safetensors` only: a pickle can run code) and its VAE
file, if separate; checked to exist and be safe to read, and its files' sha256."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.validation import InputError
from . import fetch

UNET_FILE = "unet/diffusion_pytorch_model.safetensors"
PICKLES = (".ckpt", ".pt", ".pth", ".bin")


class BaseModelError(InputError):
    """A base model that cannot be used; the message names the file and what was found."""


@dataclass(frozen=True)
class BaseModel:
    """A base model's path (a diffusers folder or a .safetensors file) and its VAE file, if separate."""

    path: Path
    vae: Path | None = None

    @property
    def single_file(self) -> bool:
        return self.path.is_file()

    @property
    def files(self) -> tuple[Path, ...]:
        """The files whose bytes make this base's UNet, VAE and text encoder."""
        if self.single_file:
            return (self.path, *((self.vae,) if self.vae else ()))
        parts = ("unet", "vae", "text_encoder")
        return tuple(sorted(p for p in self.path.rglob("*.safetensors") if p.parent.name in parts))

    def sha256(self) -> dict[str, str]:
        """sha256 of each file (remembered beside them by size and mtime, as the weights are)."""
        return {str(f): fetch.HashCache(f.parent).sha256(f.name) for f in self.files}


def resolve(spec: str | Path | None, vae: str | Path | None = None) -> BaseModel | None:
    """The base model `spec` names (None or "": the bundled one), checked to exist and be safe to read."""
    if spec in (None, ""):
        return None
    path = Path(spec).expanduser()
    if not path.exists():
        raise BaseModelError(f"base_model: {path} does not exist")
    if path.is_dir():
        if not (path / UNET_FILE).is_file():
            raise BaseModelError(f"base_model: {path} is not a diffusers folder (no {UNET_FILE})")
        return BaseModel(path)
    if path.suffix.lower() in PICKLES:
        raise BaseModelError(f"base_model: {path} is a pickle checkpoint, which can run code; use a .safetensors file")
    beside = path.with_name(path.stem + ".vae.safetensors")
    vae_path = Path(vae).expanduser() if vae else (beside if beside.is_file() else None)
    if vae_path is not None and not vae_path.is_file():
        raise BaseModelError(f"base_vae: {vae_path} does not exist")
    return BaseModel(path, vae_path)
