"""Random stand-in weights in the exact on-disk layout of the real ones.

Everything a deployment loads goes through the same loaders: diffusers' `save_pretrained`
folders, a CLIP byte-level BPE tokenizer (tiny vocabulary), the IC-Light offset file, and a
real-shaped BriaRMBG-1.4 checkpoint. `tiny` shrinks the SD1.5 parts (the tests); `full` keeps
SD1.5's real shapes (speed and memory checks, `python -m iclight.gpucheck`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from . import layout
from .rmbg import BriaRMBG

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MERGES = ["l i", "g h", "li gh", "ligh t</w>", "s u", "h i", "n e</w>"]


def _byte_chars() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tokenizer(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in MERGES] + [BOS, EOS]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n")
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    config = {"model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer", **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)


def tiny_unet() -> UNet2DConditionModel:
    # Attention only at the lower resolution: at the hosted sizes, full-resolution attention
    # would cost the CPU most of a minute per prediction even in this tiny model.
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=[32, 64],
        norm_num_groups=8,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=4,
    )


def full_unet() -> UNet2DConditionModel:
    """SD1.5's UNet (860M parameters)."""
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
    )


def full_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=[128, 256, 512, 512],
        sample_size=512,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )


def full_text_encoder(vocab_size: int) -> CLIPTextModel:
    """CLIP ViT-L/14's text tower: SD1.5's shapes (the embedding as big as the real vocabulary)."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(vocab_size, 49408),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        block_out_channels=[8, 8, 16, 16],
        norm_num_groups=8,
        sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )


def tiny_text_encoder(vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )


def offset_for(unet: UNet2DConditionModel, scale: float = 0.02) -> dict[str, torch.Tensor]:
    """A random IC-Light offset: every UNet key, `conv_in` 12 channels wide."""
    offset = {}
    for key, t in unet.state_dict().items():
        shape = (t.shape[0], 12, *t.shape[2:]) if key == "conv_in.weight" else t.shape
        offset[key] = (torch.randn(shape) * scale).contiguous()
    return offset


def write_tiny_weights(root: Path, seed: int = 0) -> Path:
    """A complete weights folder at `root` (about 180 MB, mostly RMBG-1.4)."""
    return write_weights(root, "tiny", seed)


def write_weights(root: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A complete weights folder at `root`: `tiny` (about 180 MB) or `full` (SD1.5 shapes in
    float32, as published: about 7.7 GB)."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size: {size!r}; expected tiny or full")
    torch.manual_seed(seed)
    sd = root / layout.SD_DIR
    vocab_size = write_tokenizer(sd / "tokenizer")
    text = tiny_text_encoder(vocab_size) if size == "tiny" else full_text_encoder(vocab_size)
    text.save_pretrained(sd / "text_encoder", safe_serialization=True)
    (tiny_vae() if size == "tiny" else full_vae()).save_pretrained(sd / "vae", safe_serialization=True)
    unet = tiny_unet() if size == "tiny" else full_unet()
    unet.save_pretrained(sd / "unet", safe_serialization=True)
    save_file(offset_for(unet), str(root / layout.OFFSET_FILE))
    rmbg_path = root / layout.RMBG_FILE
    rmbg_path.parent.mkdir(parents=True, exist_ok=True)
    rmbg = BriaRMBG()
    for name, buf in rmbg.named_buffers():
        if name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in rmbg.state_dict().items()}, str(rmbg_path))
    return root
