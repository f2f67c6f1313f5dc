"""Speed settings, applied in one fixed order; `make gpu-check` measures each one.

The order follows diffusers' fast-diffusion recipe: the dtypes (chosen in `loading.py`), then
fused QKV projections, the attention backend, channels_last, and last `torch.compile`.

- On CUDA by default: fused QKV projections (the same pixels as eager float16, fewer kernel
  launches) and CUDA graphs of the eager UNet (`cudagraphs.py`: the same kernels, launched once
  per step; `ICLIGHT_UNET_GRAPHS=0` turns them off, compiling replaces them).
- channels_last stays off in eager, where it was slower with a busy GPU; with `ICLIGHT_COMPILE`
  on CUDA it comes on (`ICLIGHT_CHANNELS_LAST=auto`), as in diffusers' recipe: Inductor picks its
  kernels for the layout. `1` and `0` force it.
- `ICLIGHT_COMPILE=1` (or `unet`) compiles the UNet with dynamic shapes, so every width x height
  and both passes share one graph; after the warm-up a shape the graph's guards reject runs
  eager rather than stall a request. `all` compiles the VAE's encoder and decoder too; `graphs`
  compiles the UNet in "reduce-overhead" mode (CUDA graphs, one recorded per shape). Results are
  cached beside the weights (`compile-cache/KEY/`, KEY naming the device, torch and CUDA), so a
  second boot, or every replica serving a prepared mirror, loads instead of compiling; Inductor
  keys every graph and kernel by what built it, so moving from `1` to `all` compiles only the VAE.
- `ICLIGHT_ATTENTION`: the SDPA backend tried first (default auto, torch's own order). Where it
  cannot serve a call (flash attention takes heads up to 256 wide; the VAE's one head is 512),
  torch's usual order takes over instead of failing.

docs/performance.md has what each setting gained and cost on the GPUs it was measured on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..core import config
from .cudagraphs import UNetGraphs, cuda_capture
from .timing import sync
from .unet import ConditionedUNet

log = logging.getLogger("iclight")

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
    def default(cls, device: torch.device, compile_mode: str | None = None) -> SpeedSettings:
        """What a deployment gets: fused QKV and the eager UNet's CUDA graphs on CUDA (unless
        ICLIGHT_UNET_GRAPHS=0); compile as `compile_mode` (off, unet, all or graphs) or else
        ICLIGHT_COMPILE says, which replaces those graphs and brings channels_last on CUDA
        (ICLIGHT_CHANNELS_LAST overrides)."""
        cuda = device.type == "cuda"
        compiled = compile_request(compile_mode or config.COMPILE.read())
        graphs = cuda and not compiled["compile"] and config.UNET_GRAPHS.read()
        layout = config.CHANNELS_LAST.read()
        layout = cuda and compiled["compile"] if layout is None else layout
        attention = config.ATTENTION.read()
        return cls(fused_qkv=cuda, channels_last=layout, attention=attention, unet_graphs=graphs, **compiled)

    def problems(self) -> list[str]:
        found = []
        if self.attention not in ATTENTION_BACKENDS:
            found.append(f"attention: {self.attention!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
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


def compile_request(mode: str) -> dict[str, bool]:
    """The compile settings of a mode: off, unet, all or graphs (as ICLIGHT_COMPILE's values)."""
    if mode not in ("off", "unet", "all", "graphs"):
        raise ValueError(f"compile: {mode!r}; use off, unet, all or graphs")
    return {"compile": mode != "off", "compile_vae": mode == "all", "cuda_graphs": mode == "graphs"}


def apply(settings: SpeedSettings, unet: ConditionedUNet, vae: AutoencoderKL, device: torch.device) -> None:
    """Put `settings` into effect on freshly loaded models (once: fusing and compiling change
    the modules in place)."""
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if settings.fused_qkv:
        unet.unet.fuse_qkv_projections()
        vae.fuse_qkv_projections()
    if settings.channels_last:
        unet.unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    if settings.unet_graphs:
        if device.type != "cuda":
            raise ValueError(f"unet_graphs: CUDA graphs need a CUDA device, not {device}")
        unet.graphs = UNetGraphs(unet.joined, cuda_capture())
    if settings.compile:
        _compile(settings, unet, vae)


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


def _compile(settings: SpeedSettings, unet: ConditionedUNet, vae: AutoencoderKL) -> None:
    import torch.fx.experimental._config as fx_config

    # Without this, a first square request would make height == width an assumption of the graph.
    fx_config.use_duck_shape = False
    # Dynamic shapes would also make every float attribute (each norm's eps) a symbol, which
    # Inductor then cannot use and Dynamo traces the whole UNet a second time to specialize.
    torch._dynamo.config.specialize_float = True
    mode = "reduce-overhead" if settings.cuda_graphs else None
    unet.compile(dynamic=True, fullgraph=True, mode=mode)
    if settings.compile_vae:
        vae.encoder.compile(dynamic=True, mode=mode)
        vae.decoder.compile(dynamic=True, mode=mode)


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


def boot_compiled(
    settings: SpeedSettings, device: torch.device, weights_root: Path | None, warm_up: Callable[[], None]
) -> dict[str, float | bool | int]:
    """Activate the cache, compile by running `warm_up` (a short relight at the sizes served
    most: Inductor tunes its kernels for the sizes it first sees, and CUDA graphs are recorded
    per shape), save the cache; returns what it took."""
    cache = CompileCache(weights_root, device, settings) if weights_root else None
    warm_cache = cache.activate() if cache else False
    skipped_before = cuda_graph_skips()
    start = time.perf_counter()
    warm_up()
    sync(device)
    seconds = time.perf_counter() - start
    # Any later shape that the dynamic graph's guards reject runs eager instead of compiling mid-request.
    torch.compiler.set_stance("eager_on_recompile")
    if cache:
        cache.save()
    log.info("compiled (%s) in %.1f s with a %s cache", settings.label, seconds, "warm" if warm_cache else "cold")
    report: dict[str, float | bool | int] = {"compile_s": seconds, "warm_cache": warm_cache}
    if settings.cuda_graphs:
        report["cuda_graph_skips"] = skipped = cuda_graph_skips() - skipped_before
        if skipped:
            log.warning(
                "ICLIGHT_COMPILE=graphs: Inductor ran %d compiled graph(s) without CUDA graphs%s; "
                "TORCH_LOGS=cudagraphs says why",
                skipped,
                " (never on the CPU)" if device.type == "cpu" else "",
            )
    return report


def cuda_graph_skips() -> int:
    """How many compiled graphs Inductor has run without CUDA graphs in this process (it does so
    quietly: a CPU tensor among the inputs, an input mutated, the CPU itself)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["cudagraph_skips"])
