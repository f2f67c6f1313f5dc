"""Cog runner: the hosted `zsxkib/ic-light-background` inputs, over `iclight.Relighter`.

Where the server takes several predictions at once (`COG_MAX_CONCURRENCY` above 1, at most
`serving.MAX_CONCURRENCY`; `cog.yaml` sets it for the image), `run` is async and the predictions
share the model's diffusion batches (`iclight/serving/batcher.py`). With one at a time (the default
elsewhere) `run` is the plain method: called with every input, it returns the files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from cog import BaseRunner, Input, Path

from iclight import Relighter
from iclight.core import constants as C
from iclight.core.spec import Encoding, RelightSpec, encoding, relight_spec
from iclight.imaging.images import save_images
from iclight.serving import batcher as serving
from iclight.store.outputs import OutputFolders

log = logging.getLogger("iclight")


def _input(name: str):
    return Input(**C.INPUT_SPECS[name].cog_kwargs())


class Predictor(BaseRunner):
    def setup(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("iclight").setLevel(logging.INFO)
        self.outputs = OutputFolders.from_env()
        self.relighter = Relighter.load()
        self.batcher = serving.Batcher(self.relighter) if serving.concurrency() > 1 else None

    def run(
        self,
        subject_image: Path = _input("subject_image"),
        background_image: Path = _input("background_image"),
        prompt: str = _input("prompt"),
        appended_prompt: str = _input("appended_prompt"),
        negative_prompt: str = _input("negative_prompt"),
        compute_normal: bool = _input("compute_normal"),
        width: int = _input("width"),
        height: int = _input("height"),
        steps: int = _input("steps"),
        cfg: float = _input("cfg"),
        highres_scale: float = _input("highres_scale"),
        highres_denoise: float = _input("highres_denoise"),
        light_source: str = _input("light_source"),
        seed: Optional[int] = _input("seed"),  # noqa: UP045 - cog's schema needs Optional for an omittable int
        number_of_images: int = _input("number_of_images"),
        output_format: str = _input("output_format"),
        output_quality: int = _input("output_quality"),
    ) -> list[Path]:
        encoded = encoding(output_format, output_quality)
        spec = relight_spec(
            subject_image, background_image, prompt, appended_prompt=appended_prompt,
            negative_prompt=negative_prompt, compute_normal=compute_normal, width=width, height=height, steps=steps,
            cfg=cfg, highres_scale=highres_scale, highres_denoise=highres_denoise, light_source=light_source,
            seed=seed, number_of_images=number_of_images,
        )  # fmt: skip
        return self.save(self.relighter.run(spec).images, encoded)

    async def run_concurrently(self, **inputs) -> list[Path]:
        spec, encoded = _checked(inputs)  # a bad input fails here, alone
        result = await self.batcher.relight(spec)
        return await asyncio.to_thread(self.save, result.images, encoded)

    if serving.concurrency() > 1:
        run = serving.concurrent(run, run_concurrently)  # run's inputs, async, sharing batches

    def save(self, images: list, encoded: Encoding) -> list[Path]:
        start = time.perf_counter()
        # The hosted model lists its outputs last-made first.
        with self.outputs.folder() as folder:
            paths = save_images(list(reversed(images)), encoded.format, encoded.quality, folder)
        log.info("encode: %.2f s", time.perf_counter() - start)
        return [Path(p) for p in paths]


def _checked(inputs: dict) -> tuple[RelightSpec, Encoding]:
    """The relight and the output's encoding the inputs ask for, checked at the door."""
    encoded = encoding(inputs.pop("output_format", None), inputs.pop("output_quality", None))
    return relight_spec(inputs.pop("subject_image", None), inputs.pop("background_image", None), **inputs), encoded
