from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from iclight.core import config
from iclight.pipeline.standins import write_tiny_weights

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

# The fuzzer's profiles (tests/pipeline/test_fuzz.py): `ci`, what `make test` runs, is derandomised so that
# every run tries the same examples; `long` is `make fuzz`.
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=30, derandomize=True, deadline=None, suppress_health_check=_SLOW)
settings.register_profile(
    "long", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")), deadline=None, suppress_health_check=_SLOW
)
settings.load_profile("ci")

# Under `make test`'s workers (pytest-xdist), each worker and what it starts use one torch thread,
# so that the workers share the cores instead of spinning against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# The longest modules first (by their time in a run of the suite on 2 cores): each worker takes one
# of them at once, and the many short modules fill in around them. The Makefile runs xdist with
# --no-loadscope-reorder, which keeps this order (by default xdist puts the most tests first).
LONGEST_FIRST = (
    "test_deployment.py", "test_ui.py", "test_fuzz.py", "test_matting.py", "test_ray.py", "test_serving.py",
    "test_server.py", "test_video.py", "test_speed.py", "test_models.py", "test_weights.py", "test_packaging.py",
    "test_lighting.py", "test_server_fc.py", "test_gpucheck.py", "test_windows.py", "test_cli.py",
    "test_cudagraphs.py", "test_fc.py", "test_outputs.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _no_speed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their settings themselves, whatever the shell running them has set."""
    for var in config.VARIABLES:
        monkeypatch.delenv(var.name, raising=False)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def relighter(weights_dir: Path):
    from iclight.pipeline import Relighter

    return Relighter.load(weights_dir, device="cpu")


@pytest.fixture(scope="session")
def both(weights_dir: Path):
    """A relighter serving both models (fbc, the default, and fc)."""
    from iclight.pipeline import Relighter

    return Relighter.load(weights_dir, device="cpu", model="both")


def _subject(size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A bright disc on a dark ground, with some texture."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) < (min(w, h) / 3) ** 2
    img = np.zeros((h, w, 3), np.uint8) + 30
    img[disc] = (200, 150, 100)
    img[..., 1] += ((xx * 7 + yy * 3) % 40).astype(np.uint8)
    return img


@pytest.fixture
def subject_array() -> np.ndarray:
    return _subject()


@pytest.fixture
def background_array() -> np.ndarray:
    h, w = 120, 160
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    return np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8).copy()


@pytest.fixture
def image_files(tmp_path: Path, subject_array: np.ndarray, background_array: np.ndarray) -> tuple[Path, Path]:
    from PIL import Image

    s, b = tmp_path / "subject.png", tmp_path / "background.jpg"
    Image.fromarray(subject_array).save(s)
    Image.fromarray(background_array).save(b)
    return s, b


@pytest.fixture
def cog_predict(weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The Cog predictor as the worker drives it: setup(), then run() with every input given
    (the hosted defaults, overridden by the keywords); returns the files it wrote."""
    from cog import Path as CogPath

    from iclight.core import constants as C
    from predict import Predictor

    monkeypatch.setenv("ICLIGHT_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("ICLIGHT_DEVICE", "cpu")
    monkeypatch.setenv("ICLIGHT_OUTPUT_DIR", str(tmp_path / "cog-outputs"))
    predictor = Predictor()
    predictor.setup()

    def run(subject: Path, background: Path, **inputs) -> list[Path]:
        values = {s.name: s.default for s in C.INPUTS} | inputs
        values |= {"subject_image": CogPath(subject), "background_image": CogPath(background)}
        return [Path(f) for f in predictor.run(**values)]

    return run
