"""The deterministic tiny weights that the hosted model's parity pixels were made with.

    python -m benchmarks.parity.weights DIR

Unlike `iclight.standins` (seeded by torch, so its values follow torch's generator), every
float tensor here is drawn from numpy's PCG64 seeded with the CRC-32 of the tensor's name,
so the same folder comes out on any machine and torch version; the stored hosted pixels
(`tests/data/parity/`) are only valid for exactly these values. The SD1.5 parts are tiny, the
tokenizer is CLIP's real byte-level BPE (its merges ship in `tests/data/parity/`), and
BriaRMBG-1.4 has its real keys and shapes (`tests/data/rmbg14_state_dict.json`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from iclight.core import constants as C
from iclight.models.unet import IN_CHANNELS
from iclight.pipeline.standins import BOS, EOS, _byte_chars
from iclight.store import layout

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
VOCAB = DATA / "parity" / "bpe_simple_vocab_16e6.txt.gz"
RMBG_SPEC = DATA / "rmbg14_state_dict.json"
DEFAULT = Path(tempfile.gettempdir()) / "iclight-parity-weights"
CLIP_VOCAB_SIZE = 49408  # 2 x 256 byte tokens, the merges, and the two special tokens
UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=[32, 64],
    norm_num_groups=8,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=32,
    attention_head_dim=4,
)
VAE = dict(
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
TEXT = dict(
    vocab_size=CLIP_VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
    bos_token_id=CLIP_VOCAB_SIZE - 2,
    eos_token_id=CLIP_VOCAB_SIZE - 1,
    pad_token_id=1,
)


def kind(name: str, shape: tuple[int, ...]) -> str:
    if name.endswith("running_var"):
        return "running_var"
    if "embedding" in name and len(shape) == 2:
        return "embedding"
    if name.endswith("weight"):
        return "matrix" if len(shape) >= 2 else "norm"
    return "small"


def values(name: str, shape: tuple[int, ...], how: str) -> torch.Tensor:
    """The tensor called `name`: its values depend on its name, shape and kind only."""
    draw = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(int(np.prod(shape)))
    if how == "matrix":
        x = draw / np.sqrt(max(int(np.prod(shape[1:])) if len(shape) > 1 else 1, 1))
    elif how == "norm":
        x = 1.0 + 0.1 * draw
    elif how == "running_var":
        x = 1.0 + 0.1 * np.abs(draw)
    else:  # embeddings, biases, running means
        x = 0.02 * draw
    return torch.from_numpy(x.astype(np.float32)).reshape(shape)


def filled(model: torch.nn.Module) -> torch.nn.Module:
    state = {
        k: values(k, tuple(t.shape), kind(k, tuple(t.shape))) if t.is_floating_point() else t.clone()
        for k, t in model.state_dict().items()
    }
    model.load_state_dict(state, strict=True)
    return model


def write_tokenizer(folder: Path) -> int:
    chars = _byte_chars()
    with gzip.open(VOCAB) as f:
        merges = f.read().decode("utf-8").split("\n")[1 : CLIP_VOCAB_SIZE - 2 * 256 - 2 + 1]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    folder.mkdir(parents=True, exist_ok=True)
    specials = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {"model_max_length": 77, **specials, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return len(vocab)


def offset(unet: UNet2DConditionModel, model: str = C.FBC) -> dict[str, torch.Tensor]:
    """Every UNet key; conv_in as wide as `model`'s (12 channels for fbc, 8 for fc) and drawn like
    a weight, the rest small; fc's tensors named apart from fbc's, so the two differ."""
    found, prefix = {}, "offset" if model == C.FBC else f"offset-{model}"
    for k, t in unet.state_dict().items():
        wide = k == "conv_in.weight"
        shape = (t.shape[0], IN_CHANNELS[model], *t.shape[2:]) if wide else tuple(t.shape)
        found[k] = values(f"{prefix}/{k}", shape, "matrix" if wide else "small").contiguous()
    return found


def rmbg() -> dict[str, torch.Tensor]:
    spec = json.loads(RMBG_SPEC.read_text())
    return {
        k: torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
        if dtype.startswith("torch.int")
        else values(k, tuple(shape), kind(k, tuple(shape)))
        for k, (shape, dtype) in spec.items()
    }


def write(root: Path) -> Path:
    """The whole folder at `root`, in the layout `iclight` loads."""
    sd = root / layout.SD_DIR
    if write_tokenizer(sd / "tokenizer") != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"{VOCAB}: not CLIP's merges")
    filled(CLIPTextModel(CLIPTextConfig(**TEXT))).save_pretrained(sd / "text_encoder", safe_serialization=True)
    filled(AutoencoderKL(**VAE)).save_pretrained(sd / "vae", safe_serialization=True)
    unet = filled(UNet2DConditionModel(**UNET))
    unet.save_pretrained(sd / "unet", safe_serialization=True)
    parts = {"text_encoder": "CLIPTextModel", "tokenizer": "CLIPTokenizer", "unet": "UNet2DConditionModel"}
    index = {name: ["transformers" if cls.startswith("CLIP") else "diffusers", cls] for name, cls in parts.items()}
    index = {"_class_name": "StableDiffusionPipeline", **index, "vae": ["diffusers", "AutoencoderKL"]}
    (sd / "model_index.json").write_text(json.dumps(index))
    for model in C.MODELS:
        save_file(offset(unet, model), str(root / layout.OFFSET_FILES[model]))
    (root / layout.RMBG_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_file(rmbg(), str(root / layout.RMBG_FILE))
    (root / layout.RMBG_FILE).with_name("config.json").write_text(json.dumps({"in_ch": 3, "out_ch": 1}))
    return root


def ensure(root: Path) -> Path:
    """`root`, written once (into a temporary folder renamed when complete), then reused; a folder
    written before the fc model was served gains its offset."""
    fc = root / layout.OFFSET_FILES[C.FC]
    if root.is_dir() and not fc.is_file():
        unet = filled(UNet2DConditionModel(**UNET))
        save_file(offset(unet, C.FC), str(fc.with_name(fc.name + ".part")))
        fc.with_name(fc.name + ".part").rename(fc)
    if root.is_dir():
        return root
    part = root.with_name(root.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    write(part).rename(root)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity.weights", description=__doc__)
    p.add_argument("dir", type=Path)
    print(f"wrote the parity weights into {write(p.parse_args(argv).dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
