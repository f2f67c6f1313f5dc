"""A first run without weights, where their source cannot be reached or refuses them: the
command line, `weights fetch` and the Cog server end with one message that says what was
being fetched, from where, why, and the ways out; no traceback unless asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cogserver import cog_server, free_port
from conftest import ROOT
from fileserver import FileServer

WAYS_OUT = ("ways out:", "ICLIGHT_WEIGHTS_URL=", "HF_ENDPOINT=", "HF_TOKEN=", "ICLIGHT_WEIGHTS_DIR=DIR")


def _run(*argv: str, module: str = "iclight", command: str | None = None, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ICLIGHT_", "HF_"))}
    first = [command] if command else []
    return subprocess.run(
        [sys.executable, "-m", module, *first, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean | env,
        timeout=300,
    )


def _one_message(run: subprocess.CompletedProcess, source: str, cause: str) -> None:
    assert run.returncode == 1, run.stderr[-2000:]
    error = run.stderr[run.stderr.index("error: ") :]
    assert error.startswith("error: cannot fetch ")
    assert f"  from: {source}" in error and f"  because: {cause}" in error
    assert all(way in error for way in WAYS_OUT)
    assert "Traceback" not in run.stderr and run.stdout == ""
    assert "torchvision" not in run.stderr  # transformers' notice that a user can do nothing about


@pytest.fixture
def closed_port() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_relight_against_a_closed_mirror(tmp_path: Path, closed_port: str, image_files) -> None:
    subject, background = image_files
    run = _run(
        "relight", str(subject), str(background), "--prompt", "sun", "-o", str(tmp_path / "out"),
        ICLIGHT_WEIGHTS_DIR=str(tmp_path / "weights"), ICLIGHT_WEIGHTS_URL=closed_port, ICLIGHT_DEVICE="cpu",
    )  # fmt: skip
    refused = "URLError: <urlopen error [Errno 111] Connection refused>"
    _one_message(run, f"the mirror {closed_port}/manifest.json", refused)
    assert not (tmp_path / "out").exists()


def test_weights_fetch_against_a_closed_hub_endpoint(tmp_path: Path, closed_port: str) -> None:
    run = _run("weights", "fetch", "--dest", str(tmp_path / "w"), HF_ENDPOINT=closed_port, HF_HOME=str(tmp_path))
    _one_message(run, f"the Hugging Face Hub at {closed_port} (repository stablediffusionapi/", "ConnectError: ")


def test_weights_fetch_from_a_mirror_that_answers_404(tmp_path: Path) -> None:
    """Both spellings of the command: `iclight weights fetch` and `python -m iclight.weights fetch`."""
    (tmp_path / "empty").mkdir()
    with FileServer(tmp_path / "empty") as srv:
        runs = [
            _run("weights", "fetch", "--dest", str(tmp_path / "w"), "--from", srv.url),
            _run("--from", srv.url, "--dest", str(tmp_path / "w"), module="iclight.weights", command="fetch"),
        ]
    for run in runs:
        _one_message(run, f"the mirror {srv.url}/manifest.json", "HTTPError: HTTP Error 404: Not Found")


def test_debug_shows_the_traceback(tmp_path: Path, closed_port: str) -> None:
    run = _run("weights", "fetch", "--dest", str(tmp_path / "w"), "--from", closed_port, "--debug")
    assert run.returncode == 1 and "Traceback" in run.stderr and "SourceError: cannot fetch" in run.stderr
    again = _run("weights", "fetch", "--dest", str(tmp_path / "w"), "--from", closed_port, ICLIGHT_DEBUG="1")
    assert "Traceback" in again.stderr


@pytest.mark.server
def test_the_server_reports_the_one_message_and_stays_up(tmp_path: Path, closed_port: str) -> None:
    with cog_server(tmp_path / "weights", tmp_path, want="SETUP_FAILED", ICLIGHT_WEIGHTS_URL=closed_port) as url:
        health = requests.get(f"{url}/health-check", timeout=5).json()
    logs = health["setup"]["logs"]
    assert "cannot fetch the weights' manifest" in logs and f"from: the mirror {closed_port}" in logs
    assert all(way in logs for way in WAYS_OUT) and "Traceback" not in logs
