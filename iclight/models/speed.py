"""Speed settings, applied in one fixed order; `make gpu-check` measures each one.

The order follows diffusers' fast-diffusion recipe: the dtypes (chosen in `loading.py`), then
fused QKV projections, the attention backend, channels_last, and last `torch.compile`.

- On CUDA by default: fused QKV projections (the same pixels as eager float16, fewer kernel
  launches) and CUDA graphs of the eager UNet (`cudagraphs.py`: the same kernels, launched once
  per step; `ICLIGHT_UNET_GRAPHS=0` turns them off, compiling replaces them).
- channels_last stays off in eager, where it was slower with a busy GPU; with `ICLIGHT_COMPILE`
  on CUDA it comes on (`ICLIGHT_CHANNELS_LAST=auto`), as in diffusers' recipe: Inductor picks its
  kernels for the layout. `1` and `0` force it.
- `ICLIGHT_COMPILE=1` (or `unet`) compiles the UNet with dynamic shapes (`compiled.py`): one
  graph for every width x height, both passes, lone relights and shared batches; after the
  warm-up a call the graph's guards reject runs eager, logged with its reason, rather than stall
  a request. `all` compiles the VAE's encoder and decoder too; `graphs` compiles the UNet in
  "reduce-overhead" mode (CUDA graphs, one recorded per shape). Results are cached beside the
  weights (`compile-cache/KEY/`, KEY naming the device, torch and CUDA), so a second boot, or
  every replica serving a prepared mirror, loads instead of compiling; Inductor keys every graph
  and kernel by what built it, so moving from `1` to `all` compiles only the VAE.
- LoRAs target the separate query, key and value projections: a UNet that has LoRA layers when
  the settings are applied (`ICLIGHT_LORAS`, loaded first) is not fused, and one fused when a
  LoRA first arrives is unfused then (`loras.py`).
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields

import torch
from diffusers import AutoencoderKL

from ..core import config
from .compiled import Compiled, CompiledModule, options
from .cudagraphs import Capture, UNetGraphs, cuda_capture
from .fusion import fuse_qkv, has_lora_layers
from .unet import ConditionedUNet

log = logging.getLogger("iclight")

ATTENTION_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
COMPILE_BACKEND = "inductor"  # torch.compile's; the CPU's emulation of a deployment uses another (eager: Dynamo alone)


@dataclass(frozen=True)
class SpeedSettings:
    fused_qkv: bool = False
    channels_last: bool = False
    attention: str = "auto"
    compile: bool = False
    compile_vae: bool = False
    cuda_graphs: bool = False  # compile mode "reduce-overhead": one graph recorded per shape
    unet_graphs: bool = False  # CUDA graphs of the eager UNet (cudagraphs.py)
    compile_backend: str = COMPILE_BACKEND

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
        if self.compile and self.compile_backend != COMPILE_BACKEND:
            on.append(f"backend={self.compile_backend}")
        return "+".join(on) or "eager"

    def key(self) -> str:
        values = asdict(self)
        if values["compile_backend"] == COMPILE_BACKEND:  # the keys of caches made before it could be chosen
            del values["compile_backend"]
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def compile_request(mode: str) -> dict[str, bool]:
    """The compile settings of a mode: off, unet, all or graphs (as ICLIGHT_COMPILE's values)."""
    if mode not in ("off", "unet", "all", "graphs"):
        raise ValueError(f"compile: {mode!r}; use off, unet, all or graphs")
    return {"compile": mode != "off", "compile_vae": mode == "all", "cuda_graphs": mode == "graphs"}


def apply(
    settings: SpeedSettings,
    unets: Sequence[ConditionedUNet],
    vae: AutoencoderKL,
    device: torch.device,
    capture: Capture | None = None,
) -> tuple[Compiled, ...]:
    """Put `settings` into effect on freshly loaded models, each UNet served and the VAE they share
    (once: fusing and compiling change the modules in place); returns what was compiled, to be
    warmed up. `capture` records the UNets' graphs (default: CUDA graph capture; the CPU's
    emulation of a deployment gives its own)."""
    problems = settings.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if settings.unet_graphs and capture is None and device.type != "cuda":
        raise ValueError(f"unet_graphs: CUDA graphs need a CUDA device, not {device}")
    if settings.fused_qkv:
        fuse_qkv(vae)
    if settings.channels_last:
        vae.to(memory_format=torch.channels_last)
    found = [part for unet in unets for part in _apply_to_unet(settings, unet, capture)]
    if settings.compile and settings.compile_vae:
        given = options(settings)
        vae.encoder = CompiledModule(vae.encoder, "the compiled VAE encoder", **given)
        vae.decoder = CompiledModule(vae.decoder, "the compiled VAE decoder", **given)
        found += [vae.encoder.call, vae.decoder.call]
    return tuple(found)


def _apply_to_unet(settings: SpeedSettings, unet: ConditionedUNet, capture: Capture | None) -> list[Compiled]:
    if settings.fused_qkv:
        if has_lora_layers(unet.unet):
            log.info("fused QKV: the VAE only (the UNet's LoRAs target its separate projections)")
        else:
            fuse_qkv(unet.unet)
    if settings.channels_last:
        unet.unet.to(memory_format=torch.channels_last)
    if settings.unet_graphs:
        unet.fast = UNetGraphs(unet.core, capture or cuda_capture())
    if not settings.compile:
        return []
    unet.fast = Compiled(unet.core, f"the compiled {unet.model} UNet", fullgraph=True, **options(settings))
    return [unet.fast]


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
