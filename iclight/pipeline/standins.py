"""Random stand-in weights in the exact on-disk layout of the real ones.

Everything a deployment loads goes through the same loaders: diffusers' `save_pretrained`
folders, a CLIP byte-level BPE tokenizer (tiny vocabulary), the IC-Light offset file, and a
real-shaped BriaRMBG-1.4 checkpoint and BiRefNet checkpoints in the published key layout and
shapes (general and lite). `tiny` shrinks the SD1.5 parts (the tests); `full` keeps
SD1.5's real shapes (speed and memory checks, `make bench` and `make gpu-check`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from ..core import constants as C
from ..matting import mattes as matting
from ..matting.birefnet import BiRefNet
from ..matting.rmbg import BriaRMBG
from ..models.unet import IN_CHANNELS
from ..store import layout

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


# The SD1.5 parts at each size. `full` is SD1.5 (UNet 860M parameters, CLIP ViT-L/14's text
# tower, the KL VAE). `tiny` puts attention only at the lower resolution: at the hosted sizes,
# full-resolution attention would cost the CPU most of a minute per prediction even so small.
UNETS = {
    "tiny": dict(
        layers_per_block=1,
        block_out_channels=[32, 64],
        norm_num_groups=8,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=4,
        sample_size=32,
    ),
    "full": dict(
        layers_per_block=2,
        block_out_channels=[320, 640, 1280, 1280],
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        sample_size=64,
    ),
}
VAES = {
    "tiny": dict(layers_per_block=1, block_out_channels=[8, 8, 16, 16], norm_num_groups=8, sample_size=64),
    "full": dict(layers_per_block=2, block_out_channels=[128, 256, 512, 512], sample_size=512),
}
TEXT = {  # hidden, intermediate, layers, heads, smallest embedding table
    "tiny": (32, 64, 2, 4, 0),
    "full": (768, 3072, 12, 12, 49408),
}


def unet(size: str = "tiny") -> UNet2DConditionModel:
    return UNet2DConditionModel(in_channels=4, out_channels=4, **UNETS[size])


def vae(size: str = "tiny") -> AutoencoderKL:
    blocks = len(VAES[size]["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks,
        **VAES[size],
    )


def text_encoder(vocab_size: int, size: str = "tiny") -> CLIPTextModel:
    """A CLIP text tower; its special tokens are the tokenizer's last two ids."""
    hidden, intermediate, layers, heads, embeddings = TEXT[size]
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(vocab_size, embeddings),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=hidden,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )


def tiny_unet() -> UNet2DConditionModel:
    return unet("tiny")


def tiny_text_encoder(vocab_size: int) -> CLIPTextModel:
    return text_encoder(vocab_size, "tiny")


def offset_for(
    unet: UNet2DConditionModel, scale: float = 0.02, model: str = C.FBC, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """A random IC-Light offset of `model`'s: every UNet key, `conv_in` as wide as the model's
    (12 channels for fbc, 8 for fc)."""
    offset = {}
    for key, t in unet.state_dict().items():
        shape = (t.shape[0], IN_CHANNELS[model], *t.shape[2:]) if key == "conv_in.weight" else t.shape
        offset[key] = (torch.randn(shape, generator=generator) * scale).contiguous()
    return offset


MATTING = (matting.RMBG, matting.BIREFNET, matting.BIREFNET_LITE)
TEST_MATTING = (matting.RMBG, matting.BIREFNET_LITE)


def write_tiny_weights(root: Path, seed: int = 0, matting_models: tuple[str, ...] = TEST_MATTING) -> Path:
    """A weights folder at `root` with tiny SD1.5 parts and the matting models named (by
    default RMBG-1.4 and BiRefNet lite: about 360 MB)."""
    return write_weights(root, "tiny", seed, matting_models)


def _lively(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict, batch-norm variances drawn away from 1 so the statistics matter."""
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.uniform_(0.5, 1.5)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def write_matting(root: Path, choice: str) -> Path:
    """`choice`'s matting checkpoint, random, in its real layout and shapes."""
    path = root / matting.FILES[choice][0]
    path.parent.mkdir(parents=True, exist_ok=True)
    model = BriaRMBG() if choice == matting.RMBG else BiRefNet(choice)
    save_file(_lively(model), str(path))
    return path


def write_weights(
    root: Path,
    size: str = "tiny",
    seed: int = 0,
    matting_models: tuple[str, ...] = MATTING,
    models: tuple[str, ...] = C.MODELS,
) -> Path:
    """A weights folder at `root`: `tiny` or `full` (SD1.5 shapes in float32, as published: about
    7.7 GB with one offset, 11.1 GB with both), with the offsets of `models` (both by default) and
    the matting models named (all three by default: 1.24 GB of them)."""
    if size not in UNETS:
        raise ValueError(f"size: {size!r}; expected tiny or full")
    torch.manual_seed(seed)
    sd = root / layout.SD_DIR
    vocab_size = write_tokenizer(sd / "tokenizer")
    text_encoder(vocab_size, size).save_pretrained(sd / "text_encoder", safe_serialization=True)
    vae(size).save_pretrained(sd / "vae", safe_serialization=True)
    model = unet(size)
    model.save_pretrained(sd / "unet", safe_serialization=True)
    fbc = offset_for(model)  # (first, from the seed: the folders written before fc was served stay the same)
    if C.FBC in models:
        save_file(fbc, str(root / layout.OFFSET_FILES[C.FBC]))
    for choice in matting_models:
        write_matting(root, choice)
    if C.FC in models:
        fc = offset_for(model, model=C.FC, generator=torch.Generator().manual_seed(seed + 1))
        save_file(fc, str(root / layout.OFFSET_FILES[C.FC]))
    return root


# -- what users bring (docs/models.md): single-file checkpoints and LoRAs ---------------------------


def write_single_file(root: Path, dest: Path, with_vae: bool = True) -> Path:
    """The SD1.5 parts of the weights folder `root` as one checkpoint in the original key
    layout (`ldm.py`); without the VAE, it goes beside it as `NAME.vae.safetensors`."""
    from ..models import ldm

    sd = root / layout.SD_DIR
    unet_model = UNet2DConditionModel.from_pretrained(sd / "unet")
    vae_model = AutoencoderKL.from_pretrained(sd / "vae")
    text = CLIPTextModel.from_pretrained(sd / "text_encoder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm.checkpoint(unet_model, vae_model if with_vae else None, text), str(dest))
    if not with_vae:
        save_file(ldm.vae_state(vae_model, prefix=""), str(dest.with_name(dest.stem + ".vae.safetensors")))
    return dest


def write_sdxl_shaped(dest: Path) -> Path:
    """A file with SDXL's telltale keys and shapes (two text encoders, a 2,816-wide label
    embedding, 2,048-wide cross-attention), for the error a user gets on loading one."""
    u = "model.diffusion_model."
    tensors = {
        f"{u}input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        f"{u}label_emb.0.0.weight": torch.zeros(1280, 2816, dtype=torch.float16),
        f"{u}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(640, 2048, dtype=torch.float16),
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": torch.zeros(768),
        "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1280),
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    return dest


def write_lora(
    root: Path, dest: Path, layout_name: str = "diffusers", rank: int = 4, seed: int = 1, strength: float = 0.5
) -> Path:
    """A random LoRA over the attention projections of the UNet and text encoder in `root`,
    in the diffusers (peft) or the kohya/A1111 key layout; `strength`: the spread of its factors
    (0.5 changes the tiny stand-ins' images wholesale; a small one keeps them near the base's)."""
    sd = root / layout.SD_DIR
    generator = torch.Generator().manual_seed(seed)
    models = {"unet": UNet2DConditionModel.from_pretrained(sd / "unet")}
    models["text_encoder"] = CLIPTextModel.from_pretrained(sd / "text_encoder")
    tensors = {}
    targets = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj")
    for part, model in models.items():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or not name.endswith(targets):
                continue
            down = torch.randn(rank, module.in_features, generator=generator) * strength
            up = torch.randn(module.out_features, rank, generator=generator) * strength
            tensors |= _lora_keys(part, name, down, up, rank, layout_name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest))
    return dest


def _lora_keys(part: str, name: str, down, up, rank: int, layout_name: str) -> dict[str, torch.Tensor]:
    if layout_name == "diffusers":
        name = f"text_model.{name}" if part == "text_encoder" and not name.startswith("text_model.") else name
        return {f"{part}.{name}.lora_A.weight": down, f"{part}.{name}.lora_B.weight": up}
    if layout_name != "kohya":
        raise ValueError(f"layout: {layout_name!r}; expected diffusers or kohya")
    prefix = "lora_unet_" if part == "unet" else "lora_te_text_model_"
    stem = prefix + name.removeprefix("text_model.").replace(".", "_")
    return {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(float(rank))}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m iclight.standins", description=__doc__)
    p.add_argument("dir", type=Path, help="the weights folder to write")
    p.add_argument("--size", choices=sorted(UNETS), default="tiny")
    p.add_argument(
        "--matting",
        nargs="+",
        choices=MATTING,
        default=list(MATTING),
        help="the matting models to write (default: all)",
    )
    p.add_argument(
        "--user-models",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write into DIR what users bring: a single-file SD1.5 checkpoint (original key layout) "
        "with and without its VAE, an SDXL-shaped file, and LoRAs in the diffusers and kohya layouts",
    )
    p.add_argument(
        "--model", choices=C.MODEL_CHOICES, default=C.BOTH, help="the IC-Light offsets to write (default: both)"
    )
    args = p.parse_args(argv)
    root = write_weights(args.dir, args.size, matting_models=tuple(args.matting), models=C.served(args.model))
    print(f"wrote {args.size} stand-in weights into {root}")
    if args.user_models:
        for path in write_user_models(root, args.user_models).values():
            print(f"wrote {path}")
    return 0


def write_user_models(root: Path, folder: Path) -> dict[str, Path]:
    """Every kind of file `write_*` above makes, from the weights in `root`, into `folder`."""
    return {
        "single_file": write_single_file(root, folder / "sd15-single.safetensors"),
        "vae_beside": write_single_file(root, folder / "sd15-vae-beside.safetensors", with_vae=False),
        "sdxl": write_sdxl_shaped(folder / "sdxl-shaped.safetensors"),
        "lora_diffusers": write_lora(root, folder / "lora-diffusers.safetensors", "diffusers", seed=1),
        "lora_kohya": write_lora(root, folder / "lora-kohya.safetensors", "kohya", seed=2),
    }


if __name__ == "__main__":
    raise SystemExit(main())
