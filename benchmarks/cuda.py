"""Which CUDA the pinned torch runs on, and the NVIDIA driver that follows.

A Linux torch wheel carries its own CUDA runtime (the `nvidia-*` or `cuda-toolkit`
packages it requires), so the container's CUDA (`build.cuda` in cog.yaml) must be the
same one, and the host needs a driver at least as new as that CUDA asks for. Cog's own
torch -> CUDA table (August 2026) ends at torch 2.11, so for newer pins `build.cuda` must be
given: Cog then picks its newest base image of that CUDA and installs the pinned torch as is.
"""

from __future__ import annotations

import re

# torch version -> the CUDA of its PyPI wheel for Linux x86_64 (cp311, manylinux_2_28), read
# from each wheel's metadata: Requires-Dist nvidia-cuda-runtime-cu12==12.x or cuda-toolkit==13.x.
TORCH_LINUX_CUDA: dict[str, str] = {
    "2.6.0": "12.4",
    "2.7.1": "12.6",
    "2.8.0": "12.8",
    "2.9.0": "12.8",
    "2.9.1": "12.8",
    "2.10.0": "12.8",
    "2.11.0": "13.0",
    "2.13.0": "13.0",
    "2.14.0": "13.0",
}
# CUDA -> the minimum Linux driver of its GA toolkit (NVIDIA's CUDA release notes); any newer
# driver of the same major version works (minor version compatibility).
MIN_DRIVER: dict[str, str] = {"12.6": "560.28.03", "13.0": "580.65.06"}
PYTORCH_INDEX = re.compile(r"download\.pytorch\.org/whl/cu(\d+)(\d)\b")


def torch_pin(requirements: str) -> str | None:
    match = re.search(r"^torch==([\w.]+)\s*$", requirements, re.MULTILINE)
    return match[1] if match else None


def wheel_cuda(requirements: str) -> str | None:
    """The CUDA that `pip install -r requirements` puts under torch: that of a PyTorch index
    the file names (`--extra-index-url .../whl/cu128`), else that of PyPI's wheel."""
    index = PYTORCH_INDEX.search(requirements)
    if index:
        return f"{index[1]}.{index[2]}"
    return TORCH_LINUX_CUDA.get(torch_pin(requirements) or "")


def pairing_problems(cog_cuda: str | None, requirements: str) -> list[str]:
    """What is wrong between cog.yaml's `build.cuda` and the torch that requirements.txt installs."""
    torch = torch_pin(requirements)
    if torch is None:
        return ["requirements.txt: no exact torch pin (torch==X.Y.Z)"]
    cuda = wheel_cuda(requirements)
    if cuda is None:
        return [f"torch {torch}: its Linux wheel's CUDA is not in benchmarks/cuda.py TORCH_LINUX_CUDA; add it"]
    problems = []
    if str(cog_cuda) != cuda:
        problems.append(f"cog.yaml build.cuda is {cog_cuda!r} but torch {torch} brings CUDA {cuda}")
    if cuda not in MIN_DRIVER:
        problems.append(f"CUDA {cuda}: its minimum driver is not in benchmarks/cuda.py MIN_DRIVER; add it")
    return problems


def driver_problem(driver: str, cuda: str) -> str | None:
    """None when `driver` (as nvidia-smi prints it) is new enough for `cuda`."""
    need = MIN_DRIVER.get(cuda)
    if need is None:
        return None

    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v))

    return None if parts(driver) >= parts(need) else f"driver {driver} is older than {need}, needed by CUDA {cuda}"
