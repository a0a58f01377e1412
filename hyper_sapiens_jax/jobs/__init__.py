"""The jobs: what ``python -m hyper_sapiens_jax.main --config CONFIG --workdir W`` runs, one module each
(finetune, prior, pretrain, foundation, demo, semisup, semisup_demo, study, sweep), each
``run(config, workdir, mode)``; ``main.JOBS`` maps ``config.job`` to them and ``main``'s docstring
says what each does. ``inputs`` turns a config's data section into what a job reads.

The jobs sit above every library folder (models, data, testbed, losses, prior, evaluation, training,
semisup) and may import any of them; no library imports a job (docs/design.md §9). This module
holds what the jobs share: running one under its workdir lock, and the code revision their reports
record.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import check_values
from hyper_sapiens_jax.training.monitor import workdir_lock

Job = Callable[[ml_collections.ConfigDict, "str | Path", str], "int | None"]


def run_locked(job: Job, config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """``job(config, workdir, mode)`` holding the workdir's lock (a second job on the same workdir
    stops with ``WorkdirInUseError`` naming the first), after checking the config's values against
    ``config.CONSTRAINTS`` (a ``ConfigError`` names every bad one before anything runs)."""
    check_values(config)
    with workdir_lock(workdir):
        return job(config, workdir, mode) or 0


def code_revision() -> str:
    """The git commit of this checkout (with '+dirty' when it has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def command_line() -> str:
    """This process's command line, as it was typed (``python -m hyper_sapiens_jax.main ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(str(Path("hyper_sapiens_jax", "main.py"))):
        argv[0] = "-m hyper_sapiens_jax.main"
    return " ".join(["python", *argv])
