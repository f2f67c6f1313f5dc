"""What the two Cog predictors share (`predict.py`: fbc, the hosted `ic-light-background`;
`predict_fc.py`: fc, the hosted `ic-light`): the boot, the door, concurrent predictions and the
files written. Each predictor is its inputs, its model and its hosted output order."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, ClassVar

from cog import BaseRunner, Input, Path

from ..core import constants as C
from ..core.spec import Encoding, RelightSpec, encoding, relight_spec
from ..imaging.images import save_images
from ..pipeline import Relighter
from ..store.outputs import OutputFolders
from . import batcher

log = logging.getLogger("iclight")


def cog_input(spec: C.InputSpec) -> Any:
    """A hosted input as Cog declares it."""
    return Input(**spec.cog_kwargs())


class Runner(BaseRunner):
    """One IC-Light model served with its hosted model's inputs and outputs."""

    model: ClassVar[str]
    newest_first: ClassVar[bool]  # the hosted order of the output files

    def setup(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("iclight").setLevel(logging.INFO)
        self.outputs = OutputFolders.from_env()
        self.relighter = Relighter.load(model=self.model)
        self.batcher = batcher.Batcher(self.relighter) if batcher.concurrency() > 1 else None

    def answer(self, inputs: dict[str, Any]) -> list[Path]:
        """One prediction, run here: every hosted input by name (a run method's `locals()`)."""
        spec, encoded = self.checked({k: v for k, v in inputs.items() if k != "self"})
        return self.save(self.relighter.run(spec).images, encoded)

    async def run_concurrently(self, **inputs: Any) -> list[Path]:
        spec, encoded = self.checked(inputs)  # a bad input fails here, alone
        result = await self.batcher.relight(spec)
        return await asyncio.to_thread(self.save, result.images, encoded)

    def checked(self, inputs: dict[str, Any]) -> tuple[RelightSpec, Encoding]:
        """The relight and the output's encoding the inputs ask for, checked at the door."""
        given = dict(inputs)
        encoded = encoding(given.pop("output_format", None), given.pop("output_quality", None))
        subject, background = given.pop("subject_image", None), given.pop("background_image", None)
        return relight_spec(subject, background, model=self.model, **given), encoded

    def save(self, images: list, encoded: Encoding) -> list[Path]:
        start = time.perf_counter()
        ordered = list(reversed(images)) if self.newest_first else list(images)
        with self.outputs.folder() as folder:
            paths = save_images(ordered, encoded.format, encoded.quality, folder)
        log.info("encode: %.2f s", time.perf_counter() - start)
        return [Path(p) for p in paths]
