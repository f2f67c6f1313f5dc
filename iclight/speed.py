"""Speed settings, applied in one fixed order; `python -m iclight.gpucheck` measures each one.

The order follows diffusers' fast-diffusion recipe: the dtypes (chosen in `weights.py`), then
fused QKV projections, the attention backend, channels_last, and last `torch.compile`.

- On CUDA by default: fused QKV projections (the same pixels as eager float16, fewer kernel
  launches), and CUDA graphs of the eager UNet (`cudagraphs.py`: the same kernels, launched
  once per step; `ICLIGHT_UNET_GRAPHS=0` turns them off, compiling replaces them).
  channels_last stays off in eager: with 4 images it cost 7% on an H200 and 15% on an H100, and
  it gained nothing with one (gpucheck measures every setting, its gain and pixel difference).
  `ICLIGHT_CHANNELS_LAST=auto` (the default) turns it on with `ICLIGHT_COMPILE` on CUDA, as
  diffusers' recipe does: Inductor picks its kernels for the layout. On an H100 the compiled
  UNet's passes took about 10% less with it (4 images: 0.95 s of GPU time per image, 1.01 s
  without); the VAE, eager under ICLIGHT_COMPILE=1, took longer in it; `1` and `0` force it.
- `ICLIGHT_COMPILE=1` (or `unet`): compile the UNet with dynamic shapes, so the 169 width x
  height pairs and both passes share one graph instead of compiling 169 times; after the
  warm-up any further recompile falls back to eager rather than stall a request.
  `ICLIGHT_COMPILE=all` compiles the VAE's encoder and decoder too (3 more graphs; on an H100,
  0.92 s of GPU time per image with 4 images against 0.95, and a boot of 181 s with only the
  UNet's cache warm, against 46 s). `ICLIGHT_COMPILE=graphs` compiles the UNet in
  "reduce-overhead" mode: CUDA graphs replay each pass's kernels without launching them one by
  one (one graph recorded per shape, CUDA only). Results are cached beside the weights
  (`compile-cache/KEY/`, KEY naming the device, torch and CUDA), so a second boot, or every
  replica serving a prepared mirror, loads instead of compiling. The settings share that
  folder: Inductor keys every graph and kernel by what built it, so moving from `1` to `all`
  compiles only the VAE. `graphs` gained nothing from that cache on an H100: its warm-up had not
  finished after 135 s with the UNet's graph cached (README, "Measured on a GPU").
- `ICLIGHT_ATTENTION=auto|flash|efficient|cudnn|math`: the SDPA backend tried first (default
  auto, torch's own order). Where it cannot serve a call (flash attention takes heads up to
  256 wide; the VAE's one head is 512), torch's usual order takes over instead of failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import constants as C
from .cudagraphs import UNetGraphs, cuda_capture
from .timing import sync

log = logging.getLogger("iclight")

COMPILE_ENV = "ICLIGHT_COMPILE"
UNET_GRAPHS_ENV = "ICLIGHT_UNET_GRAPHS"
CHANNELS_LAST_ENV = "ICLIGHT_CHANNELS_LAST"
ATTENTION_ENV = "ICLIGHT_ATTENTION"
CACHE_DIR = "compile-cache"
ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")


@dataclass(frozen=True)
class SpeedSettings:
    fused_qkv: bool = False
    channels_last: bool = False
    attention: str = "auto"
    compile: bool = False
    compile_vae: bool = False
    cuda_graphs: bool = False  # compile mode "reduce-overhead": one graph recorded per shape
    unet_graphs: bool = False  # CUDA graphs of the eager UNet (cudagraphs.py)

    @classmethod
    def default(cls, device: torch.device, compiling: bool = True) -> SpeedSettings:
        """What a deployment gets: fused QKV and the eager UNet's CUDA graphs on CUDA (unless
        ICLIGHT_UNET_GRAPHS=0); compile as ICLIGHT_COMPILE says (never, with `compiling` False),
        which replaces those graphs and brings channels_last on CUDA (ICLIGHT_CHANNELS_LAST overrides)."""
        attention = _env(ATTENTION_ENV) or "auto"
        cuda = device.type == "cuda"
        compiled = compile_request(None if compiling else "0")
        graphs = cuda and not compiled["compile"] and unet_graphs_request()
        layout = channels_last_request(cuda and compiled["compile"])
        return cls(fused_qkv=cuda, channels_last=layout, attention=attention, unet_graphs=graphs, **compiled)

    def problems(self) -> list[str]:
        found = []
        if self.attention not in ATTENTION_BACKENDS:
            found.append(f"{ATTENTION_ENV}: {self.attention!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
        if (self.compile_vae or self.cuda_graphs) and not self.compile:
            found.append("compile_vae and cuda_graphs need compile")
        if self.unet_graphs and self.compile:
            found.append("unet_graphs records the eager UNet: with compile, use cuda_graphs (ICLIGHT_COMPILE=graphs)")
        return found

    @property
    def label(self) -> str:
        on = [f.name for f in fields(self) if f.type in (bool, "bool") and getattr(self, f.name)]
        if self.attention != "auto":
            on.append(f"attention={self.attention}")
        return "+".join(on) or "eager"

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def compile_request(value: str | None = None) -> dict[str, bool]:
    """The compile settings that ICLIGHT_COMPILE (or `value`) asks for: 0, 1 (or unet), all, or graphs."""
    value = _env(COMPILE_ENV) if value is None else value
    off = value in ("", *OFF)
    if not off and value not in (*ON, "unet", "all", "graphs"):
        choices = "0, 1 (the UNet), all (the UNet and the VAE) or graphs (the UNet with CUDA graphs)"
        raise ValueError(f"{COMPILE_ENV}: {value!r}; use {choices}")
    return {"compile": not off, "compile_vae": value == "all", "cuda_graphs": value == "graphs"}


def unet_graphs_request() -> bool:
    """Whether ICLIGHT_UNET_GRAPHS leaves the eager UNet's CUDA graphs on (the default) or not."""
    return _switch(UNET_GRAPHS_ENV, True, "1 (on, the default on CUDA) or 0 (off)")


def channels_last_request(auto: bool) -> bool:
    """Whether ICLIGHT_CHANNELS_LAST asks for channels_last: 1, 0, or auto (the default: `auto`)."""
    return _switch(CHANNELS_LAST_ENV, auto, "auto (on when compiling on CUDA, the default), 1 or 0", unset=("", "auto"))


def _env(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def _switch(name: str, default: bool, usage: str, unset: tuple[str, ...] = ("",)) -> bool:
    """An on/off environment variable: `default` when unset, else 1/true/yes/on or 0/false/no/off."""
    value = _env(name)
    if value in unset:
        return default
    if value not in ON + OFF:
        raise ValueError(f"{name}: {value!r}; use {usage}")
    return value in ON


def apply(relighter, settings: SpeedSettings) -> None:
    """Put `settings` into effect on a freshly loaded relighter (once: fusing and compiling
    change the modules in place)."""
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    unet, vae = relighter.unet.unet, relighter.vae
    if settings.fused_qkv:
        unet.fuse_qkv_projections()
        vae.fuse_qkv_projections()
    if settings.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if settings.unet_graphs:
        if relighter.device.type != "cuda":
            raise ValueError(f"unet_graphs: CUDA graphs need a CUDA device, not {relighter.device}")
        relighter.unet.graphs = UNetGraphs(relighter.unet.joined, cuda_capture())
    relighter.speed = settings
    if settings.compile:
        _compile(relighter, settings)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Put one scaled-dot-product attention backend first for the duration, the others after it
    in torch's order (auto: no change)."""
    if name == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    first = backends[name]
    with sdpa_kernel([first, *(b for b in backends.values() if b != first)], set_priority=True):
        yield


def _compile(relighter, settings: SpeedSettings) -> None:
    import torch.fx.experimental._config as fx_config

    # Without this, a first square request would make height == width an assumption of the graph.
    fx_config.use_duck_shape = False
    # Dynamic shapes would also make every float attribute (each norm's eps) a symbol, which
    # Inductor then cannot use and Dynamo traces the whole UNet a second time to specialize.
    torch._dynamo.config.specialize_float = True
    mode = "reduce-overhead" if settings.cuda_graphs else None
    relighter.unet.compile(dynamic=True, fullgraph=True, mode=mode)
    if settings.compile_vae:
        relighter.vae.encoder.compile(dynamic=True, mode=mode)
        relighter.vae.decoder.compile(dynamic=True, mode=mode)


class CompileCache:
    """torch.compile's results beside the weights: Inductor's caches for one device, torch and
    CUDA, and one bundle of artifacts per setting (`torch.compiler.save_cache_artifacts`)."""

    def __init__(self, weights_root: Path, device: torch.device, settings: SpeedSettings) -> None:
        self.folder = weights_root / CACHE_DIR / cache_key(device)
        self.artifacts = self.folder / f"artifacts-{settings.key()}.bin"

    def activate(self) -> bool:
        """Point Inductor's caches here and load this setting's artifacts; True when there were some."""
        try:
            (self.folder / "inductor").mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only weights folder: compile without a persistent cache
            log.warning("compile cache %s not writable (%s); compiling without it", self.folder, e)
            return False
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.folder / "inductor")
        if not self.artifacts.is_file():
            return False
        torch.compiler.load_cache_artifacts(self.artifacts.read_bytes())
        return True

    def save(self) -> Path | None:
        saved = torch.compiler.save_cache_artifacts()
        if not saved:
            return None
        tmp = self.artifacts.with_name(self.artifacts.name + ".part")
        try:
            tmp.write_bytes(saved[0])
            os.replace(tmp, self.artifacts)
        except OSError as e:
            log.warning("could not save the compile cache in %s: %s", self.folder, e)
            return None
        return self.artifacts


def cache_key(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    parts = [name, f"torch{torch.__version__}", f"cuda{torch.version.cuda}"]
    return "-".join("".join(c if c.isalnum() or c in ".+" else "_" for c in p) for p in parts)


def warm_up(relighter) -> float:
    """Compile now, not in the first request: a 2-step relight through both passes at the hosted
    defaults' sizes. Inductor tunes its kernels for the sizes it first sees, and CUDA graphs are
    recorded per shape, so the most common request gets both from the start."""
    start = time.perf_counter()
    subject = np.full((64, 64, 3), 200, np.uint8)
    mask = np.full((64, 64), 255, np.uint8)
    sizes = {name: C.default(name) for name in ("width", "height", "highres_scale")}
    relighter.relight(subject, None, "warm up", light_source=C.LEFT_LIGHT, steps=2, seed=0, mask=mask, **sizes)
    sync(relighter.device)
    # Any later shape that the dynamic graph's guards reject runs eager instead of compiling mid-request.
    torch.compiler.set_stance("eager_on_recompile")
    return time.perf_counter() - start


def boot_compiled(relighter, weights_root: Path | None) -> dict[str, float | bool | int]:
    """Activate the cache, apply the settings, warm up, save the cache; returns what it took."""
    settings = relighter.speed
    cache = CompileCache(weights_root, relighter.device, settings) if weights_root else None
    warm_cache = cache.activate() if cache else False
    skipped_before = cuda_graph_skips()
    seconds = warm_up(relighter)
    if cache:
        cache.save()
    log.info("compiled (%s) in %.1f s with a %s cache", settings.label, seconds, "warm" if warm_cache else "cold")
    report: dict[str, float | bool | int] = {"compile_s": seconds, "warm_cache": warm_cache}
    if settings.cuda_graphs:
        report["cuda_graph_skips"] = skipped = cuda_graph_skips() - skipped_before
        if skipped:
            log.warning(
                "%s=graphs: Inductor ran %d compiled graph(s) without CUDA graphs%s; TORCH_LOGS=cudagraphs says why",
                COMPILE_ENV,
                skipped,
                " (never on the CPU)" if relighter.device.type == "cpu" else "",
            )
    return report


def cuda_graph_skips() -> int:
    """How many compiled graphs Inductor has run without CUDA graphs in this process (it does so
    quietly: a CPU tensor among the inputs, an input mutated, the CPU itself)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])
