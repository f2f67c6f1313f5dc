"""The container's CUDA agrees with the torch it installs, and the README says which driver."""

from __future__ import annotations

import yaml
from conftest import ROOT

from benchmarks.cuda import MIN_DRIVER, driver_problem, pairing_problems, wheel_cuda

COG = yaml.safe_load((ROOT / "cog.yaml").read_text())
REQUIREMENTS = (ROOT / "requirements.txt").read_text()


def test_cog_cuda_matches_the_torch_wheel() -> None:
    assert pairing_problems(COG["build"]["cuda"], REQUIREMENTS) == []
    assert COG["build"]["python_version"] == "3.11"


def test_readme_names_the_minimum_driver() -> None:
    cuda = wheel_cuda(REQUIREMENTS)
    readme = (ROOT / "README.md").read_text()
    assert f"CUDA {cuda}" in readme and MIN_DRIVER[cuda] in readme


def test_a_bad_pairing_is_caught() -> None:
    assert "brings CUDA 12.8" in pairing_problems("13.0", "torch==2.9.1\n")[0]
    assert pairing_problems("12.8", "torch==2.9.1\n") == [
        "CUDA 12.8: its minimum driver is not in benchmarks/cuda.py MIN_DRIVER; add it"
    ]
    assert "not in benchmarks/cuda.py TORCH_LINUX_CUDA" in pairing_problems("13.0", "torch==9.9.9\n")[0]
    assert pairing_problems("13.0", "numpy==2\n") == ["requirements.txt: no exact torch pin (torch==X.Y.Z)"]
    index = "--extra-index-url https://download.pytorch.org/whl/cu126\ntorch==2.13.0\n"
    assert wheel_cuda(index) == "12.6" and pairing_problems("12.6", index) == []
    assert "brings CUDA 12.6" in pairing_problems("13.0", index)[0]


def test_driver_check() -> None:
    assert driver_problem("580.95.05", "13.0") is None
    assert driver_problem("590.10", "13.0") is None
    assert "older than 580.65.06" in driver_problem("570.172.08", "13.0")
