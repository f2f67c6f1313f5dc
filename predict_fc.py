"""Cog runner: the hosted `zsxkib/ic-light` inputs (IC-Light fc: a subject relit from a prompt and a
light, no background), over `iclight.Relighter`; `cog-fc.yaml` names it. Everything but the inputs
and the output order is `predict.py`'s (`iclight/serving/runner.py`)."""

from __future__ import annotations

from typing import Optional

from cog import Path

from iclight.core import constants as C
from iclight.serving import batcher
from iclight.serving.runner import Runner, cog_input


def _input(name: str):
    return cog_input(C.FC_INPUT_SPECS[name])


class Predictor(Runner):
    model = C.FC
    newest_first = False  # the hosted fc model lists its outputs as they were made

    def run(
        self,
        subject_image: Path = _input("subject_image"),
        prompt: str = _input("prompt"),
        appended_prompt: str = _input("appended_prompt"),
        negative_prompt: str = _input("negative_prompt"),
        width: int = _input("width"),
        height: int = _input("height"),
        steps: int = _input("steps"),
        cfg: float = _input("cfg"),
        highres_scale: float = _input("highres_scale"),
        highres_denoise: float = _input("highres_denoise"),
        lowres_denoise: float = _input("lowres_denoise"),
        light_source: str = _input("light_source"),
        seed: Optional[int] = _input("seed"),  # noqa: UP045 - cog's schema needs Optional for an omittable int
        number_of_images: int = _input("number_of_images"),
        output_format: str = _input("output_format"),
        output_quality: int = _input("output_quality"),
    ) -> list[Path]:
        return self.answer(locals())

    if batcher.concurrency() > 1:
        run = batcher.concurrent(run, Runner.run_concurrently)  # run's inputs, async, sharing batches
