"""Cog runner: the hosted `zsxkib/ic-light-background` inputs (IC-Light fbc: a subject relit to a
background), over `iclight.Relighter` (`iclight/serving/runner.py`; `predict_fc.py` serves fc).

Where the server takes several predictions at once (`COG_MAX_CONCURRENCY` above 1, at most
`batcher.MAX_CONCURRENCY`; `cog.yaml` sets it for the image), `run` is async and the predictions
share the model's diffusion batches (`iclight/serving/batcher.py`). With one at a time (the default
elsewhere) `run` is the plain method: called with every input, it returns the files.
"""

from __future__ import annotations

from typing import Optional

from cog import Path

from iclight.core import constants as C
from iclight.serving import batcher
from iclight.serving.runner import Runner, cog_input


def _input(name: str):
    return cog_input(C.INPUT_SPECS[name])


class Predictor(Runner):
    model = C.FBC
    newest_first = True  # the hosted model lists its outputs last-made first

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
        return self.answer(locals())

    if batcher.concurrency() > 1:
        run = batcher.concurrent(run, Runner.run_concurrently)  # run's inputs, async, sharing batches
