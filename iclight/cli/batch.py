"""`iclight batch`: many jobs, locally or on a Ray cluster; resumable."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.validation import InputError
from ..jobs import run
from ..jobs.job import Task, models_for
from ..jobs.manifest import read_jobs
from .options import ENVIRONMENT, OUTPUTS, add_model_options, epilog, files, identity, job_settings, load_relighter

EXAMPLES = """\
python -m iclight batch photos/ --background studio.jpg --background street.jpg \\
    --prompt "soft window light" -o out        # run it again to resume
python -m iclight batch jobs.jsonl --prompt "soft window light" -o out --ray --workers 2
ray job submit --working-dir . -- python -m iclight batch jobs.jsonl -o /shared/out \\
    --ray auto --workers 8 --gpus-per-worker 1"""
JOBS = """\
jobs:
  A JSONL manifest has one job per line: "subject" (or "sequence": a video or a folder of frames),
  "background" (optional with a synthetic light), "prompt", an optional "id", and any option, e.g.
    {"id": "shoe-1", "subject": "shoe.jpg", "background": "beach.jpg", "prompt": "sunset", "seed": 7}
  Relative paths are relative to the manifest. A job's files are named from its id (given, or
  derived from everything that makes its images: its options, its files and their content, the
  model), ID-N.FMT, so a rerun skips it and a changed job runs again beside it.
"""


def register(command) -> None:
    p = command(
        "batch",
        "relight many subjects, locally or on a Ray cluster; resumable",
        "Relight every job in JOBS: a folder of images or a text file listing one image path per line (each "
        "against every --background), or a JSONL manifest with one job per line. The options are every job's "
        "defaults. Finished jobs are skipped when run again; OUT/results.jsonl says what became of each job.",
        epilog(EXAMPLES, JOBS, OUTPUTS, ENVIRONMENT),
    )
    p.add_argument("subjects", type=Path, metavar="JOBS", help="folder of images, list file, or JSONL manifest")
    p.add_argument("--background", type=Path, action="append", default=[], help="a background (repeatable)")
    add_model_options(p, prompt_required=False)
    r = p.add_argument_group("distributed (Ray Data; needs the `ray` extra)")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no ADDRESS joins RAY_ADDRESS if set, else starts a local Ray; 'auto' or "
        "'ray://HOST:10001' joins a cluster",
    )
    r.add_argument("--workers", type=int, default=1, help="actors, each holding one model (default 1)")
    r.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per actor (default: 1 if the cluster has GPUs, else 0)",
    )
    r.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (and torch threads) per actor (default 1)")
    p.set_defaults(run=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from ..jobs.batch import report, run_batch

    if not args.subjects.exists():
        raise InputError(f"JOBS: {args.subjects} does not exist")
    jobs = read_jobs(args.subjects, args.background, job_settings(args), files(args), args.save_matte, identity(args))
    logging.getLogger("iclight").setLevel(logging.WARNING)  # per-stage timings would drown the job bar
    if args.ray is not None:
        if args.workers < 1:
            raise InputError(f"--workers: {args.workers} is out of range; at least 1")
        try:
            from ..jobs.distributed import RaySettings, ray_executor
        except ImportError as e:
            raise InputError(f"--ray: needs the `ray` extra ({e}); pip install 'iclight-background[ray]'") from e
        settings = RaySettings(
            address=args.ray or None,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
            weights=None if args.weights is None else str(args.weights),
            device=args.device,
            base_model=None if args.base_model is None else str(args.base_model.resolve()),
            matting=args.matting,
            model=models_for(jobs),
        )
        executor = ray_executor(settings)
    else:
        executor = local_executor(args, models_for(jobs))
    summary = run_batch(jobs, args.out, executor)
    print(report(summary))
    return 1 if summary.failures else 0


def local_executor(args: argparse.Namespace, model: str | None = None):
    def execute_all(tasks: list[Task]):
        relighter = load_relighter(args, model=model)  # only once there is something to run
        plans: dict = {}
        for task in tasks:
            yield run.execute(relighter, task.job) if task.window is None else run.execute_task(relighter, task, plans)

    return execute_all
