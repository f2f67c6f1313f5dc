"""Batch relighting on Ray Data: an actor pool, one `Relighter` per actor, loaded once.

Each task (a job, or one window of a sequence: every window carries the first window's reference
frames, so windows are independent) is one row in its own block, so that the pool balances them
one by one and a task lost with its actor (a process killed, a node gone) is redone alone on a
new one.
Actors read the input files by path (on a cluster: shared storage, or the job's
`--working-dir`) and return encoded files to the driver, which writes them (see `batch`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, DataContext

from .job import Outcome, OutputFile, Task
from .run import execute_task

log = logging.getLogger("iclight")


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: RAY_ADDRESS if set, else a local Ray started here
    workers: int = 1
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0
    weights: str | None = None
    device: str | None = None
    base_model: str | None = None  # None: ICLIGHT_BASE_MODEL on the workers, else the bundled one
    matting: str | None = None  # None: ICLIGHT_MATTING on the workers, else rmbg-1.4
    model: str | None = None  # the IC-Light models served (fbc, fc, both); None: ICLIGHT_MODEL on the workers


class RelightWorker:
    """The callable class `map_batches` runs in each actor."""

    def __init__(
        self,
        weights: str | None,
        device: str | None,
        threads: int,
        base_model: str | None = None,
        matting: str | None = None,
        model: str | None = None,
    ) -> None:
        import torch

        from ..pipeline import Relighter

        logging.basicConfig(level=logging.WARNING)
        torch.set_num_threads(max(1, threads))
        self.relighter = Relighter.load(
            weights, device=device, base_model=base_model, matting_choice=matting, model=model
        )
        self.plans: dict = {}  # the sequence plans of the windows this actor ran

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        outcomes = [execute_task(self.relighter, task, self.plans) for task in batch["task"]]
        return {
            "id": [o.id for o in outcomes],
            "window": [-1 if o.window is None else o.window for o in outcomes],
            "recipe": ["" if o.recipe is None else json.dumps(o.recipe) for o in outcomes],
            "error": [o.error or "" for o in outcomes],
            "seed": [-1 if o.seed is None else o.seed for o in outcomes],
            "seconds": [o.seconds for o in outcomes],
            "names": [[f.name for f in o.files] for o in outcomes],
            "blobs": [[f.data for f in o.files] for o in outcomes],
            "recipes": [["" if f.recipe is None else json.dumps(f.recipe) for f in o.files] for o in outcomes],
        }


def _outcome(row: dict[str, Any]) -> Outcome:
    files = [
        OutputFile(str(name), bytes(data), json.loads(recipe) if recipe else None)
        for name, data, recipe in zip(row["names"], row["blobs"], row["recipes"], strict=True)
    ]
    seed, window = int(row["seed"]), int(row["window"])
    outcome = Outcome(
        str(row["id"]), str(row["error"]) or None, None if seed < 0 else seed, float(row["seconds"]), files
    )
    outcome.window = None if window < 0 else window
    outcome.recipe = json.loads(row["recipe"]) if row["recipe"] else None
    return outcome


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a local Ray when neither is
    set. False when this process was already connected (then it is not ours to shut down)."""
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None)
    else:
        ray.init(include_dashboard=False)
    return True


def ray_executor(settings: RaySettings):
    """An executor for `batch.run_batch` that runs the jobs on Ray Data."""

    def run(tasks: list[Task]) -> Iterator[Outcome]:
        ours = connect(settings.address)
        try:
            yield from _run(tasks)
        finally:
            if ours:
                ray.shutdown()

    def _run(tasks: list[Task]) -> Iterator[Outcome]:
        DataContext.get_current().enable_progress_bars = False  # the batch has its own
        gpus = settings.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        weights = None if settings.weights is None else str(Path(settings.weights).resolve())
        # Each row carries its checked task as it is (Ray pickles what is not a column type).
        rows = ray.data.from_items([{"task": task} for task in tasks], override_num_blocks=len(tasks))
        results = rows.map_batches(
            RelightWorker,
            fn_constructor_kwargs={
                "weights": weights,
                "device": settings.device,
                "threads": int(settings.cpus_per_worker),
                "base_model": settings.base_model,
                "matting": settings.matting,
                "model": settings.model,
            },
            batch_size=1,
            compute=ActorPoolStrategy(size=settings.workers),
            num_gpus=gpus,
            num_cpus=settings.cpus_per_worker,
        )
        for row in results.iter_rows():
            yield _outcome(row)

    return run
