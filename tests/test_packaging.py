"""The pip package: runtime pins equal the Cog image's, extras, a console command that works
from a fresh virtual environment, and a wheel and a Cog image that hold only what serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))]


def test_runtime_dependencies_are_the_cog_pins() -> None:
    assert PYPROJECT["project"]["dependencies"] == _requirements()


def test_cog_image_stays_lean() -> None:
    names = " ".join(_requirements()).lower()
    assert "ray" not in names and "gradio" not in names and "playwright" not in names
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["ray"] == ["ray[data,default]==2.60.0"]
    assert {"dev", "ray", "ui"} <= extras.keys()
    assert not any(r.startswith(("pillow", "gradio ", "gradio=")) for r in extras["ui"])


def test_console_command_is_declared() -> None:
    assert PYPROJECT["project"]["scripts"] == {"iclight": "iclight.cli:main"}


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment that sees this one's packages (a .pth file) but not the
    project, so that `pip install .` must build and install it, and finds every pin met."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    ours = Path(sysconfig.get_path("purelib"))
    (site / "deps-from-dev-venv.pth").write_text(str(ours) + "\n")
    src = root / "src"
    shutil.copytree(ROOT / "iclight", src / "iclight", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    return venv


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_pip_install_gives_a_working_command(fresh_venv: Path, tmp_path: Path) -> None:
    src = fresh_venv.parent / "src"
    done = _pip(fresh_venv, f"{src}[ray]")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Successfully installed iclight-background" in done.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run = subprocess.run(
        [str(fresh_venv / "bin" / "iclight"), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage: iclight" in run.stdout and "batch" in run.stdout and "relight" in run.stdout
    where = subprocess.run(
        [
            str(fresh_venv / "bin" / "python"),
            "-c",
            "import iclight, iclight.jobs.distributed; from iclight import Relighter; print(iclight.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert str(fresh_venv) in where.stdout  # the installed copy, not this checkout


def test_kuberay_example_runs_our_command() -> None:
    import shlex

    import yaml

    from iclight.cli import build_parser

    job = yaml.safe_load((ROOT / "examples" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "iclight"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "batch" and args.ray == "auto"
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert args.workers * args.gpus_per_worker <= workers["replicas"] * gpus
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["ICLIGHT_WEIGHTS_URL"] and env["ICLIGHT_WEIGHTS_DIR"]


# What neither the wheel nor the Cog image may hold: measurement tooling, docs, tests, the
# hosted code, wheels for other machines, weights.
NOT_SHIPPED = ("benchmarks", "docs", "tools", "tests", ".ref", ".whl", "weights")


def test_the_wheel_holds_only_the_package(tmp_path: Path) -> None:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", "weights", ".ref", ".whl")
    shutil.copytree(ROOT, src, ignore=skip)
    (src / "weights").mkdir()
    (src / "weights" / "README.md").write_text("weights go here")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = tmp_path.glob("iclight_background-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"iclight", f"iclight_background-{PYPROJECT['project']['version']}.dist-info"}
    assert "iclight/pipeline/relighter.py" in names and "iclight/core/config.py" in names
    assert not any(name.startswith(f"{folder}/") for name in names for folder in NOT_SHIPPED)
    assert not {"iclight/gpucheck.py", "iclight/bench.py", "iclight/cuda.py"} & set(names)


def test_the_cog_image_leaves_out_what_does_not_serve() -> None:
    """`cog build` sends the checkout to Docker less what .dockerignore names."""
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert set(NOT_SHIPPED) <= ignored
    assert not {"iclight", "predict.py", "cog.yaml", "requirements.txt"} & ignored


def test_import_iclight_is_cheap_and_exports_the_api() -> None:
    code = (
        "import sys, iclight\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'import iclight loaded torch'\n"
        "print(iclight.__version__)\n"
        "import iclight.cli\n"
        "assert 'torch' not in sys.modules, 'the command line loaded torch before a command needed it'\n"
        "from iclight import Fill, Light\n"
        "assert 'torch' not in sys.modules, 'a designed light loaded torch'\n"
        "from iclight import Relighter, RelightResult, SequenceResult\n"
        "print(Relighter.__name__, RelightResult.__name__, SequenceResult.__name__, Light(angle=30).angle)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [PYPROJECT["project"]["version"], "Relighter", "RelightResult", "SequenceResult", "30"]
