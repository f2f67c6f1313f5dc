"""Loading the weights onto a device, fetching what is missing, and the prepared UNet."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from ..core import config
from ..core import constants as C
from ..core.config import DeviceError
from ..matting import mattes as matting
from ..models import basemodel
from ..models.unet import check_model, empty_unet, merged_state
from ..store import fetch, layout
from ..store.basemodel import BaseModel

log = logging.getLogger("iclight")


@dataclass(frozen=True)
class Dtypes:
    unet: torch.dtype
    text: torch.dtype
    vae: torch.dtype
    matting: torch.dtype = torch.float32  # BiRefNet's (RMBG-1.4 stays in float32)


# The hosted model's choices on CUDA; the VAE in bfloat16 avoids fp16 overflow in its decoder.
CUDA_DTYPES = Dtypes(unet=torch.float16, text=torch.float16, vae=torch.bfloat16, matting=torch.float16)
CPU_DTYPES = Dtypes(unet=torch.float32, text=torch.float32, vae=torch.float32)


def resolve_device(name: str | None = None) -> torch.device:
    """`auto` (default), `cpu`, `cuda` or `cuda:N`, from the argument or ICLIGHT_DEVICE."""
    try:
        name = config.DEVICE.value_of(name) if name else config.DEVICE.read()
    except config.ConfigError as e:
        raise DeviceError(
            f"device: {name!r} is not a device; use {config.DEVICE.allowed}" if name else str(e)
        ) from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name}: CUDA is not available on this machine")
    return torch.device(name)


def dtypes_for(device: torch.device) -> Dtypes:
    return CUDA_DTYPES if device.type == "cuda" else CPU_DTYPES


@dataclass
class Components:
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unets: dict[str, UNet2DConditionModel]  # each model served, by name (fbc, fc), the default first
    matters: dict[str, matting.Matter]  # the matting models loaded: none where the choice is none
    sources: tuple[str, ...] = ()  # the files loaded, relative to the weights folder
    base: BaseModel | None = None  # another base model than the bundled one


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


def load_unet(
    root: Path, device: torch.device, dtype: torch.dtype, base: BaseModel | None = None, model: str = C.FBC
) -> UNet2DConditionModel:
    """SD1.5 UNet (the bundled one, or `base`'s) widened for `model` with its IC-Light offset
    merged (in float32); a ValueError where the offset is another model's."""
    unet_dir = root / layout.SD_DIR / "unet"
    source = unet_dir / "diffusion_pytorch_model.safetensors"
    offset = root / layout.OFFSET_FILES[model]
    check_model(offset, model)
    if base is not None:
        source = basemodel.unet_state(base, root / layout.SD_DIR)
    state = merged_state(source, offset, device, dtype)
    unet = empty_unet(unet_dir, model)
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval().requires_grad_(False)


def load_components(
    root: Path,
    device: torch.device,
    use_prepared: bool = True,
    matting_choice: str = matting.RMBG,
    base: BaseModel | None = None,
    models: tuple[str, ...] = (C.FBC,),
) -> Components:
    """Every model; `models`: the IC-Light models served (each its own UNet over one text encoder
    and VAE). `base` (see `basemodel.py`) replaces the bundled UNet, and its VAE and text encoder
    where it has them (the bundled configs and tokenizer serve it)."""
    dt = dtypes_for(device)
    prepared = {m: prepared_unet(root, dt.unet, base, m) if use_prepared else None for m in models}
    unserved = layout.not_served(*models)
    unused = (*_unet_unused(prepared, base), *unserved, *matting.not_needed(matting_choice))
    asked = "" if models == (C.FBC,) else f" --model {C.BOTH if len(models) > 1 else models[0]}"
    ensure_present(root, skip=unused, unserved=unserved, fetch_options=asked)
    sd = root / layout.SD_DIR
    with _Timer(f"tokenizer from {sd / 'tokenizer'}"):
        tokenizer = CLIPTokenizer.from_pretrained(sd / "tokenizer")
    with _Timer(f"text encoder from {base.path if base else sd / 'text_encoder'}"):
        text_encoder = (base and basemodel.load_text_encoder(base, sd, dt.text)) or CLIPTextModel.from_pretrained(
            sd / "text_encoder", dtype=dt.text, use_safetensors=True, device_map=_device_map(device)
        )
    with _Timer(f"VAE from {(base.vae or base.path) if base else sd / 'vae'}"):
        vae = (base and basemodel.load_vae(base, sd, dt.vae)) or AutoencoderKL.from_pretrained(
            sd / "vae", dtype=dt.vae, use_safetensors=True, device_map=_device_map(device)
        )
    unets = {m: _load_served_unet(root, device, dt.unet, base, m, prepared[m]) for m in models}
    matters = {} if matting_choice == matting.NONE else {matting_choice: load_matting(root, device, matting_choice)}
    for module in (text_encoder, vae):
        module.to(device).eval().requires_grad_(False)
    sources = [f.dest for f in layout.MANIFEST if f.dest not in unused]
    for path in (p for p in prepared.values() if p):
        sources += [path.relative_to(root).as_posix(), layout.PREPARED_CONFIG]
    return Components(tokenizer, text_encoder, vae, unets, matters, tuple(dict.fromkeys(sources)), base)


def _unet_unused(prepared: dict[str, Path | None], base: BaseModel | None) -> tuple[str, ...]:
    """The UNet sources a boot does not read: all of a model's where its prepared UNet is valid,
    the bundled UNet's weights where another base replaces them."""
    needed = {rel for m, path in prepared.items() if not path for rel in layout.unet_sources(m)}
    if base:
        needed.discard(layout.SD_UNET[1])
    return tuple(rel for m in prepared for rel in layout.unet_sources(m) if rel not in needed)


def _load_served_unet(
    root: Path, device: torch.device, dtype: torch.dtype, base: BaseModel | None, model: str, prepared: Path | None
) -> UNet2DConditionModel:
    if prepared:
        with _Timer(f"prepared {model} UNet from {prepared}"):
            return load_prepared_unet(root, prepared, device, model)
    what = base.path if base else root / layout.SD_DIR / "unet"
    with _Timer(f"{model} UNet from {what} + {root / layout.OFFSET_FILES[model]} (merged at boot)"):
        return load_unet(root, device, dtype, base, model)


def load_matting(root: Path, device: torch.device, choice: str) -> matting.Matter:
    """`choice`'s matting model, its weights fetched first where they are missing."""
    ensure_present(root, only=matting.FILES[choice], fetch_options=f" --matting {choice}")
    with _Timer(f"{choice} from {root / matting.FILES[choice][0]}"):
        return matting.load(choice, root, device, dtypes_for(device).matting)


def ensure_present(
    root: Path,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    fetch_options: str = "",
    unserved: tuple[str, ...] = (),
) -> None:
    """Fetch missing files (mirror or hub) unless offline, in which case fail at once; `only`
    limits the check to those files; `unserved`: the offsets of the models not served, which a
    mirror's fetch leaves out with their prepared UNets."""
    missing = [m for m in layout.missing_files(root) if m not in skip and (only is None or m in only)]
    if not missing:
        return
    if config.offline():
        raise layout.MissingWeightsError(root, missing, fetch_options)
    log.info("%d weight files missing in %s; fetching", len(missing), root)
    start = time.perf_counter()
    fetch.fetch(root, only=missing, skip=unserved)
    log.info("fetched weights in %.1f s", time.perf_counter() - start)
    missing = [m for m in layout.missing_files(root) if m not in skip and (only is None or m in only)]
    if missing:
        raise layout.MissingWeightsError(root, missing, fetch_options)


# -- prepared weights: the UNet widened, merged and cast once, offline ---------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def prepared_path(root: Path, dtype: torch.dtype, base: BaseModel | None = None, model: str = C.FBC) -> Path:
    """`model`'s prepared UNet's file (fbc's named as before fc was served); for another base,
    named by its checkpoint's hash, so that a changed file is never served from an older one's merge."""
    tag = f"-{_base_digest(base)[:16]}" if base else ""
    kind = "" if model == C.FBC else f"{model}-"
    return root / layout.PREPARED_DIR / f"unet-{kind}{_dtype_name(dtype)}{tag}.safetensors"


def _base_digest(base: BaseModel) -> str:
    import hashlib

    return hashlib.sha256("".join(base.sha256().values()).encode()).hexdigest()


def source_hashes(root: Path, base: BaseModel | None = None, model: str = C.FBC) -> dict[str, str]:
    """sha256 of each of `model`'s UNet sources present in `root` (the base's files for another base)."""
    hashes = fetch.HashCache(root)
    rels = layout.unet_sources(model) if base is None else (layout.OFFSET_FILES[model],)
    found = {rel: hashes.sha256(rel) for rel in rels if (root / rel).is_file()}
    return found | ({f"base_model:{p}": d for p, d in base.sha256().items()} if base else {})


def prepared_unet(root: Path, dtype: torch.dtype, base: BaseModel | None = None, model: str = C.FBC) -> Path | None:
    """`model`'s prepared UNet for `dtype`, if there is one made from the sources present.

    Every source present must hash to what the prepared file was made from; where
    none is present (a prepared-only layout from a mirror, verified when fetched),
    the prepared file is the UNet.
    """
    path = prepared_path(root, dtype, base, model)
    if not path.is_file() or not (root / layout.PREPARED_CONFIG).is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        recorded = json.loads((f.metadata() or {}).get("iclight.sources", "{}"))
    current = source_hashes(root, base, model)
    stale = [rel for rel, digest in current.items() if recorded.get(rel) != digest]
    if stale:
        log.warning("ignoring stale prepared UNet %s: %s changed since it was made", path, ", ".join(stale))
        return None
    return path


def write_prepared(root: Path, dtype: torch.dtype, base: BaseModel | None = None, model: str = C.FBC) -> Path:
    """Write `model`'s widened, merged UNet in `dtype` (merged in float32, rounded once)."""
    unet = load_unet(root, torch.device("cpu"), dtype, base, model)
    path = prepared_path(root, dtype, base, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + fetch.PART)
    sources = json.dumps(source_hashes(root, base, model))
    metadata = {"format": "pt", "iclight.sources": sources, "iclight.dtype": str(dtype)}
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    shutil.copyfile(root / layout.SD_DIR / "unet" / "config.json", root / layout.PREPARED_CONFIG)
    return path


def load_prepared_unet(root: Path, path: Path, device: torch.device, model: str = C.FBC) -> UNet2DConditionModel:
    check_model(path, model)
    unet = empty_unet(root / layout.PREPARED_CONFIG, model)
    state = load_file(str(path), device=str(device))
    if device.type == "cpu":
        # Mapped lazily: touch every page now (0.5 s for 3.4 GB from the page cache, 8x faster
        # than copying), or the first prediction would pay for the loading.
        for tensor in state.values():
            tensor.sum()
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.eval().requires_grad_(False)
