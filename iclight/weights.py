"""Loading the weights (and, from the command line, fetching and preparing them)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from . import layout
from .rmbg import BriaRMBG
from .unet import merge_offset, widen_conv_in

log = logging.getLogger("iclight")


@dataclass(frozen=True)
class Dtypes:
    unet: torch.dtype
    text: torch.dtype
    vae: torch.dtype
    rmbg: torch.dtype = torch.float32


# The hosted model's choices on CUDA; the VAE in bfloat16 avoids fp16 overflow in its decoder.
CUDA_DTYPES = Dtypes(unet=torch.float16, text=torch.float16, vae=torch.bfloat16)
CPU_DTYPES = Dtypes(unet=torch.float32, text=torch.float32, vae=torch.float32)


def resolve_device(name: str | None = None) -> torch.device:
    """`auto` (default), `cpu` or `cuda`, from the argument or ICLIGHT_DEVICE."""
    import os

    name = (name or os.environ.get(layout.DEVICE_ENV) or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"{layout.DEVICE_ENV}: unknown device {name!r}; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{layout.DEVICE_ENV}={name} but CUDA is not available on this machine")
    return torch.device(name)


def dtypes_for(device: torch.device) -> Dtypes:
    return CUDA_DTYPES if device.type == "cuda" else CPU_DTYPES


@dataclass
class Components:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    rmbg: BriaRMBG


class _Timer:
    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            log.info("loaded %s in %.2f s", self.what, time.perf_counter() - self.start)


def _device_map(device: torch.device) -> str | None:
    return str(device) if device.type == "cuda" else None


def load_unet(root: Path, device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    """SD1.5 UNet widened to 12 channels with the IC-Light offset merged (in float32)."""
    sd = root / layout.SD_DIR
    unet = UNet2DConditionModel.from_pretrained(
        sd / "unet", dtype=torch.float32, use_safetensors=True, device_map=_device_map(device)
    )
    widen_conv_in(unet)
    merge_offset(unet, root / layout.OFFSET_FILE)
    if dtype != torch.float32:
        unet.to(dtype=dtype)  # merged in float32, rounded once
    return unet.to(device).eval().requires_grad_(False)


def load_components(root: Path, device: torch.device) -> Components:
    missing = layout.missing_files(root)
    if missing:
        raise layout.MissingWeightsError(root, missing)
    dt = dtypes_for(device)
    sd = root / layout.SD_DIR
    with _Timer(f"tokenizer from {sd / 'tokenizer'}"):
        tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    with _Timer(f"text encoder from {sd / 'text_encoder'}"):
        text_encoder = CLIPTextModel.from_pretrained(
            sd / "text_encoder", dtype=dt.text, use_safetensors=True, device_map=_device_map(device)
        )
    with _Timer(f"VAE from {sd / 'vae'}"):
        vae = AutoencoderKL.from_pretrained(
            sd / "vae", dtype=dt.vae, use_safetensors=True, device_map=_device_map(device)
        )
    with _Timer(f"UNet from {sd / 'unet'} + {root / layout.OFFSET_FILE}"):
        unet = load_unet(root, device, dt.unet)
    with _Timer(f"RMBG-1.4 from {root / layout.RMBG_FILE}"):
        rmbg = BriaRMBG.from_file(root / layout.RMBG_FILE, device)
    for module in (text_encoder, vae):
        module.to(device).eval().requires_grad_(False)
    return Components(tokenizer, text_encoder, vae, unet, rmbg)
