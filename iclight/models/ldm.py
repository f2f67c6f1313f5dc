"""Diffusers SD1.5 weights in the original (LDM, A1111/Civitai) single-file key layout: how the
stand-ins write the checkpoints users bring, so that loading one through diffusers' single-file
conversion is checked against the folder it was made from. The mapping follows the block
structure in each model's config, so it holds for the tiny stand-ins and for SD1.5's own shapes."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

UNET_PREFIX, VAE_PREFIX, TEXT_PREFIX = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0"}
RESNET |= {"conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(key: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    return key


def unet_keys(config: dict) -> dict[str, str]:
    """diffusers prefix -> LDM prefix for each block of a UNet2DConditionModel with this config."""
    per = config["layers_per_block"] + 1  # the resnets (and attentions) of a level, plus its resampler
    blocks = len(config["block_out_channels"])
    found = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2"}
    found |= {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for i in range(blocks):
        for j in range(config["layers_per_block"]):
            found[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{per * i + j + 1}.0"
            found[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{per * i + j + 1}.1"
        if i < blocks - 1:
            found[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{per * (i + 1)}.0.op"
        attention = config["up_block_types"][i].startswith("CrossAttn")
        for j in range(per):
            found[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{per * i + j}.0"
            found[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{per * i + j}.1"
        if i < blocks - 1:
            found[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{per * i + per - 1}.{2 if attention else 1}"
    found |= {"mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1"}
    return found | {"mid_block.resnets.1": "middle_block.2"}


def unet_state(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    return _converted(unet.state_dict(), unet_keys(dict(unet.config)), UNET_PREFIX, {"resnets": RESNET})


def vae_keys(config: dict) -> dict[str, str]:
    blocks = len(config["block_out_channels"])
    found = {}
    for i in range(blocks):
        for j in range(config["layers_per_block"]):
            found[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
        found[f"encoder.down_blocks.{i}.downsamplers.0"] = f"encoder.down.{i}.downsample"
        for j in range(config["layers_per_block"] + 1):
            found[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{blocks - 1 - i}.block.{j}"
        found[f"decoder.up_blocks.{i}.upsamplers.0"] = f"decoder.up.{blocks - 1 - i}.upsample"
    for part in ("encoder", "decoder"):
        found[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        found[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        found[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
        found[f"{part}.conv_norm_out"] = f"{part}.norm_out"
    return found


def vae_state(vae: AutoencoderKL, prefix: str = VAE_PREFIX) -> dict[str, torch.Tensor]:
    """The VAE's LDM keys (`prefix` "" for a standalone VAE file); attention as 1x1 convolutions."""
    inner = {"resnets": VAE_RESNET, "attentions": VAE_ATTENTION}
    out = _converted(vae.state_dict(), vae_keys(dict(vae.config)), prefix, inner)
    return {k: v[..., None, None] if ".attn_1." in k and v.ndim == 2 else v for k, v in out.items()}


def _converted(
    state: dict[str, torch.Tensor], blocks: dict[str, str], prefix: str, inner: dict[str, dict[str, str]]
) -> dict[str, torch.Tensor]:
    """Each key's block renamed by `blocks`, and the rest inside a resnet or attention by `inner`."""
    out = {}
    for key, tensor in state.items():
        block = next((b for b in blocks if key.startswith(b + ".")), None)
        if block is None:
            out[prefix + key] = tensor
            continue
        rest = key[len(block) + 1 :]
        kind = next((k for k in inner if f".{k}." in block), None)
        out[f"{prefix}{blocks[block]}.{_rename(rest, inner[kind]) if kind else rest}"] = tensor
    return _contiguous(out)


def text_state(text_encoder: CLIPTextModel) -> dict[str, torch.Tensor]:
    """The CLIP text tower under `cond_stage_model.transformer.text_model.` (transformers 5
    names the tower's weights without `text_model.`; the checkpoints people have keep it)."""
    state = text_encoder.state_dict()
    return _contiguous({TEXT_PREFIX + "text_model." + k.removeprefix("text_model."): v for k, v in state.items()})


def checkpoint(
    unet: UNet2DConditionModel, vae: AutoencoderKL | None, text_encoder: CLIPTextModel
) -> dict[str, torch.Tensor]:
    """A whole single-file SD1.5 checkpoint; `vae` None leaves the VAE out (a file beside it)."""
    return unet_state(unet) | (vae_state(vae) if vae is not None else {}) | text_state(text_encoder)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in state.items()}
