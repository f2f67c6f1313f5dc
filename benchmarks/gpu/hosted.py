"""The hosted model's own code (`zsxkib/IC-Light`, branch background-model), driven through its
runner (`ref_run.py`, beside the exported files in the git-ignored `.ref/`): never part of this
repository, loaded from where `make reference` put it."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from iclight.core import constants as C
from iclight.imaging.images import save_image
from iclight.models.timing import cuda_memory, sync


class Hosted:
    """The hosted code loaded on `device` from the weights folder, and its predictions."""

    def __init__(self, ref_dir: Path, weights: Path, device: torch.device, images: tuple[Path, Path]) -> None:
        sys.path.insert(0, str(ref_dir))
        import ref_run  # the runner, copied beside the hosted files

        start = time.perf_counter()
        self.runner = ref_run
        with cuda_memory(device) as footprint:
            self.ref = ref_run.load_reference(str(ref_dir), str(weights), str(device))
            sync(device)
        self.setup_s = time.perf_counter() - start
        self.cuda_gb = footprint.get("added_cuda_gb")
        self.device = device
        self.images = images

    def run(self, case: dict, images: tuple[Path, Path] | None = None) -> dict[str, Any]:
        """As `predict_once` gives ours: the images in generation order (under "images"), the
        seconds of a whole prediction, with the images encoded as the hosted predictor does it
        (one after the other), and its CUDA memory. `images`: the subject and background (default:
        those it was made with)."""
        subject, background = images or self.images
        full = {s.name: s.default for s in C.INPUTS if s.type is not object}
        full |= {"prompt": "sunshine from window", "seed": 12345, **case}
        full |= {"subject_image": subject.name, "background_image": background.name}
        fmt, quality = full["output_format"], full["output_quality"]
        sync(self.device)
        start = time.perf_counter()
        with cuda_memory(self.device) as used:
            outs = self.runner.run_case(self.ref, full, str(subject.parent))
            sync(self.device)
        with tempfile.TemporaryDirectory(prefix="iclight-hosted-") as folder:
            for i, image in enumerate(outs):
                save_image(image, Path(folder) / f"{i}.{fmt}", fmt, quality)
        seconds = time.perf_counter() - start
        # run_case gives the hosted predictor's order, reversed
        return {"images": list(reversed(outs)), "predict_s": seconds, **used}
