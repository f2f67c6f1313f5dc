"""BiRefNet's own model code, built on the CPU: the baseline for `iclight/birefnet.py`.

    python -m benchmarks.birefnet_ref keys OUT.json     the state-dict layout of both variants
    python -m benchmarks.birefnet_ref parity            ours against BiRefNet's code

BiRefNet's code (ZhengPeng7/BiRefNet) is exported into the git-ignored `.ref/birefnet/` by
`make reference-birefnet`; it is never committed. It takes three names from `timm.layers`,
`deform_conv2d` from `torchvision.ops`, and a few modules that inference never calls; none of
them imports with the CPU torch here, so each is given a small stand-in before the import. The
deformable convolution's stand-in is written from the DCNv2 definition (four-corner gathers),
independently of the package's own (`grid_sample`), so the parity covers it too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / ".ref" / "birefnet"
# The backbone of each variant, and its four feature widths, doubled by the half-size pass.
BACKBONES = {"birefnet": ("swin_v1_l", [1536, 768, 384, 192]), "birefnet-lite": ("swin_v1_t", [768, 384, 192, 96])}


def available() -> bool:
    return (REFERENCE / "models" / "birefnet.py").is_file()


def bilinear_at(x: torch.Tensor, y: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """x (C, H, W) sampled at real positions (y, xs) of shape (Ho, Wo); zero outside."""
    c, h, w = x.shape
    y0, x0 = torch.floor(y), torch.floor(xs)
    out = x.new_zeros(c, *y.shape)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + dy, x0 + dx
        weight = (1 - (y - yy).abs()) * (1 - (xs - xx).abs())
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        flat = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().flatten()
        out += x.flatten(1)[:, flat].view(c, *y.shape) * (weight * inside)
    return out


def deform_conv2d_definition(
    input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None
):
    """Modulated deformable convolution (DCNv2), one kernel tap at a time, as defined: each tap k
    samples the input at p + p_k + offset_k bilinearly, scales it by mask_k and meets weight[:, :, k]."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    n, _, h, w = input.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    base_y = (torch.arange(ho, dtype=input.dtype) * sh - ph)[:, None].expand(ho, wo)
    base_x = (torch.arange(wo, dtype=input.dtype) * sw - pw)[None, :].expand(ho, wo)
    out = input.new_zeros(n, o, ho, wo)
    for b in range(n):
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            y = base_y + i * dh + offset[b, 2 * k]
            x = base_x + j * dw + offset[b, 2 * k + 1]
            sampled = bilinear_at(input[b], y, x)
            if mask is not None:
                sampled = sampled * mask[b, k]
            out[b] += torch.einsum("oc,chw->ohw", weight[:, :, i, j], sampled)
    return out + bias.view(1, -1, 1, 1) if bias is not None else out


def _rearrange(t: torch.Tensor, pattern: str, hg: int, wg: int) -> torch.Tensor:
    """The one einops pattern BiRefNet's inference uses: image to stacked patches."""
    if pattern != "b c (hg h) (wg w) -> b (c hg wg) h w":
        raise NotImplementedError(pattern)
    b, c, height, width = t.shape
    h, w = height // hg, width // wg
    return t.view(b, c, hg, h, wg, w).permute(0, 1, 2, 4, 3, 5).reshape(b, c * hg * wg, h, w)


def _module(name: str, **names: object) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(names)
    return module


def _stand_ins(backbone: str, widths: list[int]) -> dict[str, types.ModuleType]:
    import torch.nn as nn

    class DropPath(nn.Identity):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

    def build_backbone(name: str, pretrained: bool = True, params_settings: str = "") -> nn.Module:
        from models.backbones import swin_v1

        return getattr(swin_v1, backbone)()

    return {
        "timm": _module("timm"),
        "timm.layers": _module(
            "timm.layers",
            DropPath=DropPath,
            to_2tuple=lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v),
            trunc_normal_=nn.init.trunc_normal_,
        ),
        "torchvision": _module("torchvision"),
        "torchvision.ops": _module("torchvision.ops", deform_conv2d=deform_conv2d_definition),
        "einops": _module("einops", rearrange=_rearrange),
        "kornia": _module("kornia"),
        "kornia.filters": _module("kornia.filters", laplacian=None),
        "dataset": _module("dataset", class_labels_TR_sorted=[]),
        "models.backbones.build_backbone": _module("models.backbones.build_backbone", build_backbone=build_backbone),
    }


@contextlib.contextmanager
def _importable(variant: str):
    """BiRefNet's folder on sys.path with the stand-ins, its config set to `variant`'s backbone,
    from a working directory without BiRefNet's training scripts (its config reads them)."""
    backbone, widths = BACKBONES[variant]
    saved = dict(sys.modules)
    sys.modules.update(_stand_ins(backbone, widths))
    sys.path.insert(0, str(REFERENCE))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            import config as ref_config

            original = ref_config.Config.__init__

            def configured(self: object) -> None:
                original(self)
                self.bb = backbone
                self.lateral_channels_in_collection = [2 * c for c in widths]
                self.cxt = self.lateral_channels_in_collection[1:][::-1][-self.cxt_num :]

            ref_config.Config.__init__ = configured
            yield
        finally:
            os.chdir(cwd)
            sys.path.remove(str(REFERENCE))
            for name in set(sys.modules) - set(saved):
                del sys.modules[name]
            sys.modules.update(saved)


def reference_model(variant: str) -> torch.nn.Module:
    """BiRefNet's own model for `variant`, randomly initialised, in eval mode on the CPU."""
    with _importable(variant):
        from models.birefnet import BiRefNet

        return BiRefNet(bb_pretrained=False).eval()


def layout_of(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@torch.inference_mode()
def reference_matte(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """BiRefNet's inference on a normalised batch: the last prediction through a sigmoid."""
    return model(batch)[-1].sigmoid()


def randomise(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with lively batch-norm statistics and deformable offsets, so every branch matters."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in model.state_dict().items():
        if key.endswith("num_batches_tracked") or key.endswith("relative_position_index"):
            state[key] = t
        elif key.endswith("running_var"):
            state[key] = torch.rand(t.shape, generator=g) + 0.5
        elif t.dim() > 1:
            fan_in = t[0].numel()
            state[key] = torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(t.shape, generator=g) * 0.1 + (1.0 if key.endswith("norm.weight") else 0.0)
    return state


def parity(variant: str = "birefnet-lite", size: int = 256, seed: int = 0) -> float:
    """The largest difference between our matte and BiRefNet's code's on the same weights and input."""
    from iclight.matting.birefnet import BiRefNet

    ref = reference_model(variant)
    state = randomise(ref, seed)
    ref.load_state_dict(state, strict=True)
    ours = BiRefNet(variant)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    batch = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        return (reference_matte(ref, batch) - ours(batch)).abs().max().item()


def _one_key_a_line(layouts: dict[str, dict[str, list[int]]]) -> str:
    blocks = []
    for variant, layout in sorted(layouts.items()):
        lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(layout.items()))
        blocks.append(f"{json.dumps(variant)}: {{\n{lines}\n}}")
    return "{\n" + ",\n".join(blocks) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.birefnet_ref", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="write the state-dict layout of both variants as JSON")
    keys.add_argument("out", type=Path)
    check = sub.add_parser("parity", help="our matte against BiRefNet's code on random weights")
    check.add_argument("--variant", choices=sorted(BACKBONES), default="birefnet-lite")
    check.add_argument("--size", type=int, default=256)
    args = p.parse_args(argv)
    if not available():
        print(f"BiRefNet's code is not in {REFERENCE}: see `make reference-birefnet`", file=sys.stderr)
        return 2
    if args.command == "keys":
        layouts = {v: layout_of(reference_model(v)) for v in BACKBONES}
        args.out.write_text(_one_key_a_line(layouts))
        for v, layout in layouts.items():
            count = sum(torch.Size(s).numel() for k, s in layout.items() if not k.endswith("num_batches_tracked"))
            print(f"{v}: {len(layout)} tensors, {count / 1e6:.1f} M values")
        return 0
    print(f"{args.variant} at {args.size}x{args.size}: largest difference {parity(args.variant, args.size):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
