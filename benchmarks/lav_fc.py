"""An fc sequence of ours against Light-A-Video's own relighting stage, on one clip and one set of weights.

Light-A-Video (bcmi/Light-A-Video, Apache-2.0) relights a clip with IC-Light fc before its video
model smooths it: `src/ic_light.py`'s Relighter over `src/ic_light_pipe.py` (an image-to-image
pipeline), 15 steps from the light's latent at denoise 0.9, every frame whole as the condition,
no high-res pass, one generator for the batch, and consistent light attention on the UNet's up
blocks but the last (gamma 0.5). `make reference-lav` exports those files into the git-ignored
`.ref/light-a-video/` (never committed). This runs them as its script sets them up (its UNet hook,
its attention function on the layers its script picks, its scheduler), and ours with the options
that ask for the same: model fc, matting none (the whole frame), one window of every frame, no
high-res pass, one generator (`batch_noise`), the same layers. It prints each frame's difference
in grey levels and returns the worst.

    python -m benchmarks.lav_fc [--weights DIR] [--frames 8] [--size 256] [--steps 15]

The weights default to `python -m iclight.standins`' tiny ones, written into a temporary folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from types import MethodType, ModuleType

import numpy as np
import torch

from . import lav_ref
from .parity import fc_hosted

LAV = lav_ref.ROOT / ".ref" / "light-a-video"
FILES = ("src/ic_light.py", "src/ic_light_pipe.py", "utils/tools.py", "lav_relight.py")
# Light-A-Video's own choice of layers (its script's rule), as a pattern over the UNet's module names:
# every up block's self-attention but block 3's (SD1.5's last, at the highest resolution).
LAYERS = r"^up_blocks\.[0-2]\..*\.attn1$"
SCHEDULER = fc_hosted.SCHEDULER  # its script's sampler: the hosted fc model's


@dataclass(frozen=True)
class Setting:
    prompt: str = "soft window light"
    light: str = "Left Light"
    frames: int = 8
    size: int = 256
    steps: int = 15
    lowres_denoise: float = 0.9
    cfg: float = 2.0
    gamma: float = 0.5
    seed: int = 2025


def available(root: Path = LAV) -> bool:
    return all((root / f).is_file() for f in FILES)


def clip(count: int, size: int) -> list[np.ndarray]:
    """Frames of a scene that moves: a warm disc crossing a textured wall, a dark floor."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    wall = 120 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    frames = []
    for i in range(count):
        img = np.stack([wall, wall * 0.9, wall * 0.8], axis=-1)
        cx, cy = size * (0.25 + 0.5 * i / max(count - 1, 1)), size * 0.45
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (size * 0.16) ** 2
        img[disc] = (210, 150, 90)
        img[int(size * 0.8) :] = (50, 45, 40)
        frames.append(img.clip(0, 255).astype(np.uint8))
    return frames


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_lav(root: Path = LAV) -> tuple[ModuleType, ModuleType, ModuleType]:
    """Its relighter's module, its pipeline's and its tools', imported from the export. Its tools
    import video writers the relighting stage never calls (moviepy, imageio): stand-ins serve them."""
    for name, attrs in (("moviepy", ()), ("moviepy.editor", ("VideoFileClip",)), ("imageio", ())):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            for attr in attrs:
                setattr(stub, attr, None)
            sys.modules[name] = stub
    sys.modules.setdefault("utils", types.ModuleType("utils"))
    tools = _module("utils.tools", root / "utils" / "tools.py")
    sys.modules.setdefault("src", types.ModuleType("src"))
    pipe = _module("src.ic_light_pipe", root / "src" / "ic_light_pipe.py")
    relight = _module("src.ic_light", root / "src" / "ic_light.py")
    return relight, pipe, tools


def run_lav(weights: Path, frames: list[np.ndarray], s: Setting, root: Path = LAV) -> list[np.ndarray]:
    """Light-A-Video's relighting stage on `frames`, set up as its script sets it up (CPU, float32)."""
    from diffusers import DPMSolverMultistepScheduler

    relight, pipe_module, tools = load_lav(root)
    attention = lav_ref.load(root / "lav_relight.py")
    tokenizer, text_encoder, vae, unet = fc_hosted.sd_parts(weights)  # as its script makes them
    _hook(unet)
    for name, module in unet.named_modules():
        parts = name.split(".")
        if (
            type(module).__name__ == "Attention"
            and parts[0] == "up_blocks"
            and parts[-1] == "attn1"
            and parts[1] != "3"
        ):
            module.forward = MethodType(lambda self, h, *a, **k: attention(self, h, gamma=s.gamma), module)
    pipeline = pipe_module.StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER), safety_checker=None, requires_safety_checker=False,
        feature_extractor=None, image_encoder=None,
    )  # fmt: skip
    generator = torch.manual_seed(s.seed)  # its script's: the global generator (its start is drawn from it)
    with torch.inference_mode():
        relighter = relight.Relighter(
            pipeline, relight_prompt=s.prompt, num_frames=len(frames), image_width=s.size, image_height=s.size,
            steps=s.steps, cfg=s.cfg, lowres_denoise=s.lowres_denoise, bg_source=relight.BGSource(s.light),
            generator=generator,
        )  # fmt: skip
        video = tools.numpy2pytorch(frames, torch.device("cpu"), torch.float32)
        out = relighter(video)
    y = out.movedim(1, -1) * 127.5 + 127.5
    return list(y.float().numpy().clip(0, 255).astype(np.uint8))


def _hook(unet) -> None:
    """Its script's UNet: the condition (`concat_conds`) joined to the sample on channels."""
    forward = unet.forward

    def joined(sample, timestep, encoder_hidden_states, **kwargs):
        cond = kwargs["cross_attention_kwargs"]["concat_conds"].to(sample)
        cond = torch.cat([cond] * (sample.shape[0] // cond.shape[0]), dim=0)
        kwargs["cross_attention_kwargs"] = {}
        return forward(torch.cat([sample, cond], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = joined


def run_ours(weights: Path, frames: list[np.ndarray], s: Setting) -> list[np.ndarray]:
    from iclight import Relighter

    relighter = Relighter.load(weights, device="cpu", model="fc", matting_choice="none")
    result = relighter.relight_sequence(
        frames, None, s.prompt, model="fc", light_source=s.light, matting="none", window=0, highres_pass=False,
        batch_noise=True, steps=s.steps, lowres_denoise=s.lowres_denoise, cfg=s.cfg, consistency=s.gamma,
        layers=LAYERS, width=s.size, height=s.size, seed=s.seed,
    )  # fmt: skip
    return [np.asarray(image) for image in result.images]


def compare(weights: Path, s: Setting = Setting(), root: Path = LAV) -> list[dict[str, float]]:
    """Each frame's difference between ours and theirs: mean, 99th percentile and largest, in grey levels."""
    frames = clip(s.frames, s.size)
    theirs, ours = run_lav(weights, frames, s, root), run_ours(weights, frames, s)
    found = []
    for a, b in zip(theirs, ours, strict=True):
        d = np.abs(a.astype(np.int16) - b.astype(np.int16))
        found.append({"mean": float(d.mean()), "p99": float(np.percentile(d, 99)), "max": float(d.max())})
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lav_fc", description=__doc__)
    p.add_argument("--weights", type=Path, default=None, help="default: tiny stand-ins in a temporary folder")
    p.add_argument("--frames", type=int, default=Setting.frames)
    p.add_argument("--size", type=int, default=Setting.size)
    p.add_argument("--steps", type=int, default=Setting.steps)
    args = p.parse_args(argv)
    if not available():
        print(f"{LAV}: needs {', '.join(FILES)} (make reference-lav)", file=sys.stderr)
        return 2
    weights = args.weights
    if weights is None:
        from iclight.pipeline.standins import write_tiny_weights

        weights = write_tiny_weights(Path(tempfile.mkdtemp(prefix="iclight-lav-")) / "weights", matting_models=())
    s = Setting(frames=args.frames, size=args.size, steps=args.steps)
    rows = compare(weights, s)
    for i, r in enumerate(rows):
        print(f"frame {i}: mean {r['mean']:.4f}, p99 {r['p99']:.1f}, max {r['max']:.0f} grey levels")
    worst = max(r["mean"] for r in rows)
    print(f"{len(rows)} frames at {s.size}x{s.size}, {s.steps} steps; worst mean difference {worst:.4f} grey levels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
