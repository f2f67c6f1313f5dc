"""torch.compile of the UNet (and the VAE), as `ICLIGHT_COMPILE` asks: compiled and warmed up at
boot, its results cached beside the weights, and after the warm-up never compiled again mid-request.

The UNet's core is compiled with dynamic shapes, so one graph serves every width x height, both
passes, a lone relight and a shared batch (the condition is joined before the core), one image
without guidance (batch 1 is not made a special case) and every sampler (timesteps come as floats).
What a graph's guards reject after the warm-up (a LoRA set or an attention processor the warm-up
did not run, consistent light attention, a batch beyond what the kernels were chosen for) runs
eager: the first call of each reason is logged with the guards that failed, and `stats` count the
calls each way. Compiling again mid-request would stall it for minutes on a GPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .timing import sync

log = logging.getLogger("iclight")

CACHE_DIR = "compile-cache"
REFUSED = "Detected recompile when torch.compile stance is 'fail_on_recompile'"
EAGER_KEPT = 64  # call signatures remembered as running eager


class CompileSettings(Protocol):
    """What compiling reads of the speed settings (`speed.SpeedSettings`)."""

    compile_backend: str
    cuda_graphs: bool

    @property
    def label(self) -> str: ...

    def key(self) -> str: ...


@dataclass
class CompileStats:
    compiled: int = 0  # calls the compiled code served
    eager: int = 0  # calls after the warm-up that it could not serve without compiling again
    reasons: list[str] = field(default_factory=list)  # why, once each


class Compiled:
    """`fn` compiled by torch.compile. Until `warm` it compiles what it meets (the warm-up); then a
    call its compiled code cannot serve runs `fn` eager."""

    def __init__(self, fn: Callable[..., Any], name: str, **options: Any) -> None:
        self.fn, self.name = fn, name
        self.compiled = torch.compile(fn, **options)
        self.warm = False
        self.stats = CompileStats()
        self._eager: OrderedDict[tuple, None] = OrderedDict()

    def __call__(self, *inputs: Any, computation: tuple = ()) -> Any:
        if not self.warm:
            return self.compiled(*inputs)
        key = (computation, *(_signature(x) for x in inputs))
        if key not in self._eager:
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    out = self.compiled(*inputs)
            except RuntimeError as e:
                if REFUSED not in str(e):
                    raise
                self._refused(key, str(e))
            else:
                self.stats.compiled += 1
                return out
        self.stats.eager += 1
        return self.fn(*inputs)

    def summary(self) -> dict[str, Any]:
        return asdict(self.stats)

    def _refused(self, key: tuple, message: str) -> None:
        self._eager[key] = None
        while len(self._eager) > EAGER_KEPT:
            self._eager.popitem(last=False)
        failures = message.split("guard failure(s):", 1)[-1].strip().splitlines() or [message]
        reason = failures[0].strip().removeprefix("- ")[:300]  # the first guard that failed
        if reason not in self.stats.reasons:
            self.stats.reasons.append(reason)
            log.warning(
                "%s: its compiled code does not serve this call without compiling again (a guard failed: %s), "
                "so it runs eager, as will calls like it",
                self.name,
                reason,
            )


def _signature(x: Any) -> tuple:
    return (tuple(x.shape), x.dtype, x.device.type) if torch.is_tensor(x) else (type(x).__name__,)


class CompiledModule(nn.Module):
    """A module whose calls go through `Compiled` (the VAE's encoder and decoder); its parameters
    stay the module's own."""

    def __init__(self, module: nn.Module, name: str, **options: Any) -> None:
        super().__init__()
        self.module = module
        self.call = Compiled(module, name, **options)

    def forward(self, *inputs: Any) -> Any:
        return self.call(*inputs)


def options(settings: CompileSettings) -> dict[str, Any]:
    """torch.compile's arguments for `settings`, with the shape settings every compiled graph needs."""
    import torch.fx.experimental._config as fx_config

    # Without this, a first square request would make height == width an assumption of the graph.
    fx_config.use_duck_shape = False
    # A batch of 1 (one image without guidance, one VAE encode) shares the graph of larger ones.
    fx_config.backed_size_oblivious = True
    # Dynamic shapes would also make every float attribute (each norm's eps) a symbol, which
    # Inductor then cannot use and Dynamo traces the whole UNet a second time to specialize.
    torch._dynamo.config.specialize_float = True
    found: dict[str, Any] = {"dynamic": True, "backend": settings.compile_backend}
    if settings.cuda_graphs:
        found["mode"] = "reduce-overhead"
    return found


class CompileCache:
    """torch.compile's results beside the weights: Inductor's caches for one device, torch and
    CUDA, and one bundle of artifacts per setting (`torch.compiler.save_cache_artifacts`)."""

    def __init__(self, weights_root: Path, device: torch.device, settings: CompileSettings) -> None:
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
    settings: CompileSettings,
    device: torch.device,
    weights_root: Path | None,
    warm_up: Callable[[], None],
    compiled: tuple[Compiled, ...] = (),
) -> dict[str, float | bool | int]:
    """Activate the cache, compile by running `warm_up` (relights at the sizes served most:
    Inductor tunes its kernels for the sizes it first sees, and CUDA graphs are recorded per
    shape), mark `compiled` warm (from now on they compile nothing), save the cache; returns what
    it took."""
    cache = CompileCache(weights_root, device, settings) if weights_root else None
    warm_cache = cache.activate() if cache else False
    skipped_before = cuda_graph_skips()
    start = time.perf_counter()
    warm_up()
    sync(device)
    seconds = time.perf_counter() - start
    for part in compiled:
        part.warm = True
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
