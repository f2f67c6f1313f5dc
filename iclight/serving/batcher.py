"""Many clients on one model: concurrent predictions that share the diffusion batch.

The Cog server hands the predictor up to `COG_MAX_CONCURRENCY` predictions at once. Each is
checked on arrival (a bad one fails alone, with its usual message), then queued. One worker
thread runs the model: it takes the oldest request and every queued one that can share its
diffusion pass (`Relighter.share_key`: the same sizes, steps, cfg, high-res settings and prompt
length, and no compute_normal), waiting up to `ICLIGHT_BATCH_WINDOW_MS` for more, up to
`ICLIGHT_BATCH_IMAGES` images in all. A batch of one runs exactly as a lone prediction does.

Each prediction's log is its own: the worker writes a member's lines in that prediction's
context (its seed, its stage times, and how many requests and images shared its batch). A
canceled prediction stops waiting at once; the others in its batch still get their images.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core import config
from ..core.hooks import Hooks
from ..core.spec import RelightSpec
from ..pipeline import Relighter, RelightResult, Stopped

log = logging.getLogger("iclight")
MAX_CONCURRENCY = 8  # the most predictions the predictor declares it takes at once (the bench measured 1 to 8)


def concurrency() -> int:
    """How many predictions the Cog server hands the predictor at once (`COG_MAX_CONCURRENCY`)."""
    return config.COG_CONCURRENCY.read()


def concurrent(inputs_of: Callable, body: Callable) -> Callable:
    """`body` (async) as a Cog run method with `inputs_of`'s inputs, declared concurrent."""
    import cog

    @functools.wraps(inputs_of)
    async def run(self, **inputs):
        return await body(self, **inputs)

    return cog.concurrent(max=MAX_CONCURRENCY)(run)


@dataclass
class Pending:
    """A queued prediction and how to answer it."""

    request: RelightSpec
    key: tuple | None
    count: int
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def canceled(self) -> bool:
        return self.future.done()

    def answer(self, outcome: RelightResult | BaseException) -> None:
        def settle() -> None:
            if self.future.done():  # canceled meanwhile: nobody is waiting
                return
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        self.loop.call_soon_threadsafe(settle)


class Batcher:
    """The one thread that runs the model for every prediction, sharing batches where it can."""

    def __init__(self, relighter: Relighter, max_images: int | None = None, window_s: float | None = None) -> None:
        self.relighter = relighter
        self.max_images = max_images or config.BATCH_IMAGES.read()
        self.window_s = config.BATCH_WINDOW_MS.read() / 1000 if window_s is None else window_s
        self._queue: list[Pending] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._serve, name="iclight-batcher", daemon=True).start()

    async def relight(self, request: RelightSpec) -> RelightResult:
        """`request`'s result, once the worker has run it (alone or in a shared batch)."""
        loop = asyncio.get_running_loop()
        key = self.relighter.share_key(request)
        count = request.number_of_images
        pending = Pending(request, key, count, contextvars.copy_context(), loop, loop.create_future())
        with self._ready:
            self._queue.append(pending)
            self._ready.notify()
        return await pending.future  # canceled: the future is canceled with it, and the worker skips it

    def _serve(self) -> None:
        while True:
            batch = self._gather()
            try:
                self._run(batch)
            except BaseException as e:  # never lose the worker: every member gets the error
                for member in batch:
                    member.answer(e if isinstance(e, Exception) else RuntimeError(str(e)))

    def _gather(self) -> list[Pending]:
        with self._ready:
            while True:
                self._queue = [p for p in self._queue if not p.canceled]
                if self._queue:
                    break
                self._ready.wait()
            first = self._queue.pop(0)
            batch, images = [first], first.count
            if first.key is None:
                return batch
            deadline = time.monotonic() + self.window_s
            while images < self.max_images:
                for p in list(self._queue):
                    if p.key == first.key and not p.canceled and images + p.count <= self.max_images:
                        self._queue.remove(p)
                        batch.append(p)
                        images += p.count
                left = deadline - time.monotonic()
                if images >= self.max_images or left <= 0:
                    break
                self._ready.wait(timeout=left)
            return batch

    def _run(self, batch: list[Pending]) -> None:
        batch = [p for p in batch if not p.canceled]
        if not batch:
            return
        images = sum(p.count for p in batch)
        hooks = Hooks(stop=lambda: all(p.canceled for p in batch))
        try:
            self._run_batch(batch, images, hooks)
        except Stopped:
            log.info("a batch of %d canceled predictions stopped early", len(batch))

    def _run_batch(self, batch: list[Pending], images: int, hooks: Hooks) -> None:
        if len(batch) == 1:  # as a lone prediction: its log lines are written as they happen
            member = batch[0]
            member.answer(_outcome(member.context, self.relighter.run, member.request, hooks))
            return
        outcomes = self.relighter.run_shared([p.request for p in batch], hooks)
        for member, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, RelightResult):
                member.context.run(_log_shared, outcome, len(batch), images)
            member.answer(outcome)


def _outcome(context: contextvars.Context, fn, *args) -> RelightResult | Exception:
    try:
        return context.run(fn, *args)
    except Stopped:
        raise
    except Exception as e:
        return e


def _log_shared(result: RelightResult, requests: int, images: int) -> None:
    log.info("Using seed: %d", result.seed)
    for stage, seconds in result.timings.items():
        log.info("%s: %.2f s", stage, seconds)
    log.info("shared batch: %d requests, %d images (this request's: %d)", requests, images, len(result.images))
