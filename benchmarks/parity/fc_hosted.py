"""The hosted fc model's own code run on a weights folder, on the CPU in float32: the baseline of
the fc parity cases. Its `predict.py` and `briarmbg.py` (branch `main` of zsxkib/IC-Light) are
exported into the git-ignored `.ref/fc/` by `make reference-fc`, never committed; this module only
sets the globals its `setup()` would (from our weights folder instead of its downloads) and calls
its `process_relight` as its `predict()` does.

    python -m benchmarks.parity.fc_hosted CASES_JSON IMAGES_DIR OUT_DIR [--weights DIR] [--ref DIR]

writes OUT_DIR/NAME.npz (out_0..out_N in the hosted output order) for every case.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from iclight.core import constants as C
from iclight.store import layout

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / ".ref" / "fc"
# The hosted setup()'s sampler, written out here rather than taken from ours: DPM-Solver++ 2M SDE
# with Karras sigmas over SD1.5's betas.
SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, algorithm_type="sde-dpmsolver++",
    use_karras_sigmas=True, steps_offset=1,
)  # fmt: skip


def available(ref: Path = REFERENCE) -> bool:
    return (ref / "ref_predict.py").is_file() and (ref / "briarmbg.py").is_file()


def sd_parts(weights: Path) -> tuple:
    """The tokenizer, text encoder, VAE and fc UNet of `weights` as the hosted fc setup() (and
    Light-A-Video's script) make them, on the CPU in float32: `conv_in` widened to 8 input
    channels, the new 4 zero, then the fc offset added to every weight."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = weights / layout.SD_DIR
    tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(sd / "text_encoder").eval()
    vae = AutoencoderKL.from_pretrained(sd / "vae").eval()
    unet = UNet2DConditionModel.from_pretrained(sd / "unet").eval()
    old = unet.conv_in
    unet.conv_in = torch.nn.Conv2d(8, old.out_channels, old.kernel_size, old.stride, old.padding)
    with torch.no_grad():
        unet.conv_in.weight.zero_()
        unet.conv_in.weight[:, :4].copy_(old.weight)
    unet.conv_in.bias = old.bias
    offset = load_file(str(weights / layout.OFFSET_FILES[C.FC]))
    base = unet.state_dict()
    unet.load_state_dict({k: base[k] + offset[k] for k in base}, strict=True)
    return tokenizer, text_encoder, vae, unet


def load(weights: Path, ref: Path = REFERENCE) -> ModuleType:
    """The hosted module with every global its functions read set from `weights` (CPU, float32)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    sys.path.insert(0, str(ref))
    spec = importlib.util.spec_from_file_location("hosted_fc_predict", ref / "ref_predict.py")
    hosted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hosted)
    from briarmbg import BriaRMBG

    hosted.device = torch.device("cpu")
    hosted.tokenizer, hosted.text_encoder, hosted.vae, unet = sd_parts(weights)
    hosted.unet_original_forward = unet.forward
    unet.forward = hosted.hooked_unet_forward
    hosted.unet = unet
    rmbg = BriaRMBG()
    rmbg.load_state_dict(load_file(str(weights / layout.RMBG_FILE)), strict=True)
    hosted.rmbg = rmbg.eval()
    scheduler = DPMSolverMultistepScheduler(**SCHEDULER)
    parts = dict(
        vae=hosted.vae, text_encoder=hosted.text_encoder, tokenizer=hosted.tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, requires_safety_checker=False, feature_extractor=None, image_encoder=None,
    )  # fmt: skip
    hosted.t2i_pipe = StableDiffusionPipeline(**parts)
    hosted.i2i_pipe = StableDiffusionImg2ImgPipeline(**parts)
    return hosted


def run_case(hosted: ModuleType, case: dict, images: Path) -> list[np.ndarray]:
    """One case's images, as the hosted predict() makes them (its subject read as it reads it)."""
    subject = np.array(Image.open(str(images / case["subject_image"])))
    with torch.inference_mode():
        _, results = hosted.process_relight(
            subject, case["prompt"], case["width"], case["height"], case["number_of_images"], case["seed"],
            case["steps"], case["appended_prompt"], case["negative_prompt"], case["cfg"], case["highres_scale"],
            case["highres_denoise"], case["lowres_denoise"], case["light_source"],
        )  # fmt: skip
    return list(results)


def run(cases: list[dict], images: Path, out: Path, weights: Path, ref: Path = REFERENCE) -> None:
    hosted = load(weights, ref)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        found = run_case(hosted, case, images)
        np.savez_compressed(out / f"{case['name']}.npz", **{f"out_{i}": x for i, x in enumerate(found)})


def main(argv: list[str] | None = None) -> int:
    from . import weights as parity_weights

    p = argparse.ArgumentParser(prog="python -m benchmarks.parity.fc_hosted", description=__doc__)
    p.add_argument("cases", type=Path)
    p.add_argument("images", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--weights", type=Path, default=None, help="default: the parity weights")
    p.add_argument("--ref", type=Path, default=REFERENCE)
    args = p.parse_args(argv)
    if not available(args.ref):
        print(f"{args.ref}: needs the hosted fc predict.py and briarmbg.py (make reference-fc)", file=sys.stderr)
        return 2
    weights = parity_weights.ensure(args.weights or parity_weights.DEFAULT)
    run(json.loads(args.cases.read_text()), args.images, args.out, weights, args.ref)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
