"""CUDA graphs of the eager UNet: one replay per denoising step instead of ~800 kernel launches.

With one image at the hosted defaults the GPU mostly waits for Python: on an H200 a low-res
step took as long as a high-res one on 2.25x the pixels (28 ms), while four images took 39 ms
a low-res step for four times the work. A CUDA graph records a step's kernels once per input
shape (`torch.cuda.make_graphed_callables`) and launches them all at once from then on. (One
SD1.5 UNet call with fused QKV runs 784 computing operators, besides 419 views: counted with a
dispatch mode on meta tensors.)

Unlike `ICLIGHT_COMPILE=graphs`, the kernels are the eager ones, so the pixels are too, and
recording takes a few forward passes instead of minutes of compiling. Each new graph is
checked against eager on inputs unlike those it was recorded with, and a shape whose graph
cannot be recorded or fails that check runs eager from then on.

A graph replays what it recorded, so each is keyed on everything that changes the computation
beyond the inputs' shapes: the caller's `computation` (the UNet's active LoRAs with their scales
and the attention processors in place with their settings, `ConditionedUNet.computation`). A
graph recorded under consistent light attention is never replayed for a plain relight, nor a
plain one inside a sequence's window.

Only batches up to `UNET_GRAPH_MAX_AREA` latent pixels get a graph: bigger ones keep the GPU
busy anyway. The graphs share one memory pool, which holds the working memory of the biggest;
sharing is safe because they replay one at a time and each output is copied out at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger("iclight")

Forward = Callable[..., torch.Tensor]
Capture = Callable[[Forward, tuple[torch.Tensor, ...]], Forward]
CHECK_TOLERANCE = 1e-2  # relative and absolute; a frozen input differs by far more
# Recorded for a batch of latents up to this many
# latent pixels (batch x height x width; 1 image up to 1024x1024, guidance doubling the batch).
# Beyond it the GPU is busy enough without them, and each graph would hold its working memory.
UNET_GRAPH_MAX_AREA = 2 * 128 * 128
UNET_GRAPHS_KEPT = 8  # graphs kept at once (least recently used dropped): 4 sizes, both passes


@dataclass
class GraphStats:
    recorded: int = 0
    replays: int = 0
    eager: int = 0  # calls that ran without a graph: too big, or a shape whose graph failed
    failed: int = 0


def cuda_capture() -> Capture:
    """torch's recorder, every graph in one shared memory pool."""
    pool = torch.cuda.graph_pool_handle()

    def capture(forward: Forward, static: tuple[torch.Tensor, ...]) -> Forward:
        stream = torch.cuda.current_stream()
        try:
            return torch.cuda.make_graphed_callables(forward, static, pool=pool)
        finally:
            # A recording that raises leaves its side stream current (torch.cuda.graph's exit
            # stops at the failing capture_end): every later kernel of this thread would go there.
            torch.cuda.set_stream(stream)

    return capture


class UNetGraphs:
    """Calls `forward(*tensors)` through a CUDA graph recorded for the tensors' shapes."""

    def __init__(
        self,
        forward: Forward,
        capture: Capture,
        max_area: int = UNET_GRAPH_MAX_AREA,
        kept: int = UNET_GRAPHS_KEPT,
    ) -> None:
        self.forward, self.capture = forward, capture
        self.max_area, self.kept = max_area, kept
        self.stats = GraphStats()
        self._graphs: OrderedDict[tuple, Forward] = OrderedDict()
        self._failed: set[tuple] = set()
        self._lock = threading.Lock()  # the recorded buffers serve one caller at a time

    def __call__(self, *inputs: torch.Tensor, computation: tuple = ()) -> torch.Tensor:
        key = (computation, *((tuple(x.shape), x.dtype, x.stride()) for x in inputs))
        batch, height, width = inputs[0].shape[0], inputs[0].shape[-2], inputs[0].shape[-1]
        if key not in self._failed and batch * height * width <= self.max_area:
            with self._lock:
                graph = self._graphs.get(key) or self._record(key, inputs)
                if graph is not None:
                    self._graphs.move_to_end(key)
                    self.stats.replays += 1
                    # The next replay overwrites the graph's output: hand out a copy.
                    return graph(*inputs).clone()
        self.stats.eager += 1
        return self.forward(*inputs)

    def summary(self) -> dict[str, int]:
        return asdict(self.stats) | {"kept": len(self._graphs)}

    def _record(self, key: tuple, inputs: tuple[torch.Tensor, ...]) -> Forward | None:
        start = time.perf_counter()
        try:
            with torch.inference_mode(False):  # buffers that replays may copy into, in any mode
                static = tuple(x.clone() for x in inputs)
            graph = self.capture(self.forward, static)
            problem = self._check(graph, inputs)
        except torch.cuda.OutOfMemoryError:
            raise  # not the shape's fault: the request fails as too big, the next may record it
        except Exception as e:  # recording refused (a host sync, an unsupported op): run eager
            problem = f"{type(e).__name__}: {e}"
        shape = "x".join(str(n) for n in inputs[0].shape)
        if problem:
            self._failed.add(key)
            self.stats.failed += 1
            log.warning("no CUDA graph for the UNet at %s, which runs eager: %s", shape, problem[:300])
            return None
        self._graphs[key] = graph
        while len(self._graphs) > self.kept:
            self._graphs.popitem(last=False)
        self.stats.recorded += 1
        log.info("recorded a CUDA graph of the UNet at %s in %.2f s", shape, time.perf_counter() - start)
        return graph

    def _check(self, graph: Forward, inputs: tuple[torch.Tensor, ...]) -> str | None:
        """A replay on other values than the recorded ones against eager: any value that the
        graph froze at recording (a host-made tensor, say) shows as a difference."""
        varied = tuple(_vary(x) for x in inputs)
        want = self.forward(*varied).float()
        got = graph(*varied).float()
        if torch.allclose(got, want, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE, equal_nan=True):
            return None
        return f"its replay differs from eager by up to {(got - want).abs().nan_to_num(float('inf')).max():.3g}"


def _vary(x: torch.Tensor) -> torch.Tensor:
    """Other values of the same shape and kind (a timestep stays a valid timestep)."""
    return x // 2 + 1 if not x.is_floating_point() else x * 0.5 + 0.25
