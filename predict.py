"""Cog runner: the hosted `zsxkib/ic-light-background` inputs, over `iclight.Relighter`."""

from __future__ import annotations

import logging
import time
from typing import Optional

from cog import BaseRunner, Input, Path

from iclight import Relighter
from iclight import constants as C
from iclight.imaging import save_images
from iclight.outputs import OutputFolders
from iclight.validation import validate

log = logging.getLogger("iclight")


def _input(name: str):
    return Input(**C.INPUT_SPECS[name].cog_kwargs())


class Predictor(BaseRunner):
    def setup(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("iclight").setLevel(logging.INFO)
        self.outputs = OutputFolders.from_env()
        self.relighter = Relighter.load()

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
        args = validate({k: v for k, v in locals().items() if k != "self"})
        fmt, quality = args.pop("output_format"), args.pop("output_quality")
        result = self.relighter.relight(args.pop("subject_image"), args.pop("background_image"), **args)
        start = time.perf_counter()
        # The hosted model lists its outputs last-made first.
        with self.outputs.folder() as folder:
            paths = save_images(list(reversed(result.images)), fmt, quality, folder)
        log.info("encode: %.2f s", time.perf_counter() - start)
        return [Path(p) for p in paths]
