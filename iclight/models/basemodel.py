"""A base model of the user's own in place of the bundled Realistic Vision 5.1, loaded: a diffusers
folder, or a single-file SD1.5 checkpoint in the original (A1111/Civitai) key layout, converted by
diffusers' single-file loading with the bundled SD1.5 configs (no network). Its UNet is merged with
the IC-Light offset like the bundled one; its VAE and text encoder are used where the file has them
(or a VAE file beside it, `NAME.vae.safetensors`), else the bundled ones. Where its files are:
`store/basemodel.py`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import CLIPTextModel

from ..store.basemodel import UNET_FILE, BaseModel, BaseModelError
from .ldm import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX

log = logging.getLogger("iclight")


def read(path: Path, prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The file's tensors, or only those whose names start with `prefixes` (the rest not read)."""
    try:
        if not prefixes:
            return load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise BaseModelError(f"base_model: {path} is not a readable .safetensors file ({e})") from e


def describe(state: dict[str, torch.Tensor]) -> str:
    """What a checkpoint holds, in the words users know it by."""
    encoders = {k.split(".")[2] for k in state if k.startswith("conditioner.embedders.")}
    label = state.get(UNET_PREFIX + "label_emb.0.0.weight")
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    context = next((v.shape[1] for k, v in state.items() if k.endswith("attn2.to_k.weight")), None)
    parts = []
    if encoders or label is not None:
        parts.append(f"SDXL: {max(len(encoders), 2)} text encoders")
        if label is not None:
            parts.append(f"{label.shape[1]:,}-wide label embedding")
    elif any(k.startswith("cond_stage_model.model.") for k in state):
        parts.append("SD2: an OpenCLIP text encoder")
    if context is not None:
        parts.append(f"{context:,}-wide cross-attention")
    if conv_in is not None:
        parts.append(f"{conv_in.shape[1]} input channels")
    if not any(k.startswith(UNET_PREFIX) for k in state):
        parts.append(f"no UNet ({UNET_PREFIX}*) among its {len(state):,} tensors")
    return ", ".join(parts) or "nothing recognisable"


def check_sd15(state: dict[str, torch.Tensor], path: Path, context_width: int) -> None:
    """A BaseModelError naming `path` and what it holds, unless it is an SD1.5 UNet (4 input
    channels, cross-attention over `context_width`-wide CLIP text, one text encoder)."""
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    context = {v.shape[1] for k, v in state.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")}
    sdxl = any(k.startswith("conditioner.") for k in state) or UNET_PREFIX + "label_emb.0.0.weight" in state
    if sdxl or conv_in is None or conv_in.shape[1] != 4 or context != {context_width}:
        raise BaseModelError(f"base_model: {path} is not an SD1.5 checkpoint; found {describe(state)}")


def unet_state(base: BaseModel, sd_dir: Path) -> dict[str, torch.Tensor] | Path:
    """The base UNet's diffusers weights: a file to read (a folder), or converted tensors."""
    if not base.single_file:
        return base.path / UNET_FILE
    state = read(base.path)
    config = UNet2DConditionModel.load_config(sd_dir / "unet")
    check_sd15(state, base.path, config["cross_attention_dim"])
    unet = UNet2DConditionModel.from_single_file(state, config=str(sd_dir), subfolder="unet", local_files_only=True)
    return {k: v.float().contiguous() for k, v in unet.state_dict().items()}


def load_vae(base: BaseModel, sd_dir: Path, dtype: torch.dtype) -> AutoencoderKL | None:
    """The base's own VAE (its folder, its file, or a file beside it); None: the bundled one."""
    if not base.single_file:
        folder = base.path / "vae"
        return AutoencoderKL.from_pretrained(folder, dtype=dtype, use_safetensors=True) if folder.is_dir() else None
    state = read(base.vae or base.path, ("encoder.", "decoder.", "quant", "post_quant", VAE_PREFIX))
    if not any(k.startswith(("encoder.", VAE_PREFIX)) for k in state):
        return None
    return AutoencoderKL.from_single_file(
        state, config=str(sd_dir), subfolder="vae", torch_dtype=dtype, local_files_only=True
    )


def load_text_encoder(base: BaseModel, sd_dir: Path, dtype: torch.dtype) -> CLIPTextModel | None:
    """The base's own CLIP text encoder; None: the bundled one."""
    if not base.single_file:
        folder = base.path / "text_encoder"
        return CLIPTextModel.from_pretrained(folder, dtype=dtype, use_safetensors=True) if folder.is_dir() else None
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm

    state = read(base.path, (TEXT_PREFIX,))
    if not state:
        return None
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModel, state, subfolder="text_encoder", config=str(sd_dir), torch_dtype=dtype, local_files_only=True
    )
