"""Loading the weights (and, from the command line, fetching and preparing them)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from . import fetch, layout
from .rmbg import BriaRMBG
from .unet import empty_unet, merged_state

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
    sources: tuple[str, ...] = ()  # the files loaded, relative to the weights folder


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
    unet_dir = root / layout.SD_DIR / "unet"
    state = merged_state(unet_dir / "diffusion_pytorch_model.safetensors", root / layout.OFFSET_FILE, device, dtype)
    unet = empty_unet(unet_dir)
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval().requires_grad_(False)


def load_components(root: Path, device: torch.device, use_prepared: bool = True) -> Components:
    dt = dtypes_for(device)
    prepared = prepared_unet(root, dt.unet) if use_prepared else None
    ensure_present(root, skip=layout.UNET_SOURCES if prepared else ())
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
    if prepared:
        with _Timer(f"prepared UNet from {prepared}"):
            unet = load_prepared_unet(root, prepared, device)
    else:
        with _Timer(f"UNet from {sd / 'unet'} + {root / layout.OFFSET_FILE} (merged at boot)"):
            unet = load_unet(root, device, dt.unet)
    with _Timer(f"RMBG-1.4 from {root / layout.RMBG_FILE}"):
        rmbg = BriaRMBG.from_file(root / layout.RMBG_FILE, device)
    for module in (text_encoder, vae):
        module.to(device).eval().requires_grad_(False)
    sources = [f.dest for f in layout.MANIFEST if not (prepared and f.dest in layout.UNET_SOURCES)]
    if prepared:
        sources += [prepared.relative_to(root).as_posix(), layout.PREPARED_CONFIG]
    return Components(tokenizer, text_encoder, vae, unet, rmbg, tuple(sources))


def is_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes") for name in layout.OFFLINE_ENVS)


def ensure_present(root: Path, skip: tuple[str, ...] = ()) -> None:
    """Fetch missing files (mirror or hub) unless offline, in which case fail at once."""
    missing = [m for m in layout.missing_files(root) if m not in skip]
    if not missing:
        return
    if is_offline():
        raise layout.MissingWeightsError(root, missing)
    log.info("%d weight files missing in %s; fetching", len(missing), root)
    start = time.perf_counter()
    fetch.fetch(root, only=missing)
    log.info("fetched weights in %.1f s", time.perf_counter() - start)
    missing = [m for m in layout.missing_files(root) if m not in skip]
    if missing:
        raise layout.MissingWeightsError(root, missing)


# -- prepared weights: the UNet widened, merged and cast once, offline ---------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def prepared_path(root: Path, dtype: torch.dtype) -> Path:
    return root / layout.PREPARED_DIR / f"unet-{_dtype_name(dtype)}.safetensors"


def source_hashes(root: Path) -> dict[str, str]:
    """sha256 of each UNet source that is present in `root`."""
    hashes = fetch.HashCache(root)
    return {rel: hashes.sha256(rel) for rel in layout.UNET_SOURCES if (root / rel).is_file()}


def prepared_unet(root: Path, dtype: torch.dtype) -> Path | None:
    """The prepared UNet for `dtype`, if there is one made from the sources present.

    Every source present must hash to what the prepared file was made from; where
    none is present (a prepared-only layout from a mirror, verified when fetched),
    the prepared file is the UNet.
    """
    path = prepared_path(root, dtype)
    if not path.is_file() or not (root / layout.PREPARED_CONFIG).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        recorded = json.loads((f.metadata() or {}).get("iclight.sources", "{}"))
    current = source_hashes(root)
    stale = [rel for rel, digest in current.items() if recorded.get(rel) != digest]
    if stale:
        log.warning("ignoring stale prepared UNet %s: %s changed since it was made", path, ", ".join(stale))
        return None
    return path


def prepare(root: Path, dtype: torch.dtype) -> Path:
    """Write the widened, merged UNet in `dtype` (merged in float32, rounded once)."""
    unet = load_unet(root, torch.device("cpu"), dtype)
    path = prepared_path(root, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + fetch.PART)
    metadata = {"format": "pt", "iclight.sources": json.dumps(source_hashes(root)), "iclight.dtype": str(dtype)}
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    shutil.copyfile(root / layout.SD_DIR / "unet" / "config.json", root / layout.PREPARED_CONFIG)
    return path


def load_prepared_unet(root: Path, path: Path, device: torch.device) -> UNet2DConditionModel:
    unet = empty_unet(root / layout.PREPARED_CONFIG)
    state = load_file(str(path), device=str(device))
    if device.type == "cpu":
        # Mapped lazily: touch every page now (0.5 s for 3.4 GB from the page cache, 8x faster
        # than copying), or the first prediction would pay for the loading.
        for tensor in state.values():
            tensor.sum()
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval().requires_grad_(False)


# -- command line ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m iclight.weights", description="Fetch, lock, verify and prepare the IC-Light weights folder."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download every missing or invalid file, verified")
    p.add_argument("--dest", type=Path, default=None, help="weights folder (default: ICLIGHT_WEIGHTS_DIR or weights/)")
    p.add_argument(
        "--from", dest="source", default=None, help="HTTP(S) mirror with manifest.json (or ICLIGHT_WEIGHTS_URL)"
    )
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p = sub.add_parser("lock", help="write DIR/manifest.json (path, size, sha256 of every file)")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("verify", help="check DIR against its manifest.json")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("prepare", help="write the merged UNet in the device's dtype for a fast boot")
    p.add_argument("dir", type=Path, nargs="?", default=None)
    p.add_argument(
        "--dtype",
        choices=["float16", "float32", "bfloat16"],
        default=None,
        help="default: what ICLIGHT_DEVICE resolves to needs (float16 on CUDA, float32 on the CPU)",
    )
    p.add_argument("--force", action="store_true", help="write the prepared UNet even if it is up to date")
    p.add_argument(
        "--compile",
        nargs="?",
        const="1",
        default=None,
        metavar="WHAT",
        help="then compile for this machine (1: the UNet, all: the VAE too, graphs: the UNet with CUDA graphs) "
        "and keep the cache beside the "
        "weights, so that serving with the same ICLIGHT_COMPILE boots without compiling",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (fetch.FetchError, layout.MissingWeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _cmd_fetch(args: argparse.Namespace) -> int:
    root = layout.weights_dir(args.dest)
    got = fetch.fetch(root, args.source, args.workers)
    print(f"{len(got)} file(s) downloaded into {root}" if got else f"all files present and valid in {root}")
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    entries = fetch.lock(args.dir)
    print(f"wrote {args.dir / fetch.MANIFEST_NAME}: {len(entries)} files, {sum(e.size for e in entries)} bytes")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    problems = fetch.verify(args.dir)
    for line in problems:
        print(line)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    root = layout.weights_dir(args.dir)
    dtype = getattr(torch, args.dtype) if args.dtype else dtypes_for(resolve_device()).unet
    existing = None if args.force else prepared_unet(root, dtype)
    if existing:
        print(f"{existing} is up to date with the sources present (--force writes it again)")
    else:
        start = time.perf_counter()
        path = prepare(root, dtype)
        print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    if args.compile:
        from .pipeline import Relighter
        from .speed import COMPILE_ENV

        os.environ[COMPILE_ENV] = args.compile
        relighter = Relighter.load(root)
        report = relighter.compile_report or {}
        print(
            f"compiled for {relighter.device} in {report.get('compile_s', 0):.1f} s; cache in {root / 'compile-cache'}"
        )
    return 0


_COMMANDS = {"fetch": _cmd_fetch, "lock": _cmd_lock, "verify": _cmd_verify, "prepare": _cmd_prepare}


if __name__ == "__main__":
    sys.exit(main())
