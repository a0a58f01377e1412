"""``config.job`` -> the module that runs it (each has ``run(config, workdir, mode) -> int``).

finetune      one stage of the curriculum (configs/stage1.py, stage2.py, stage3.py, semisup_stage0.py)
prior         the diffusion pose prior on skeletons (configs/prior.py)
demo          foundation -> prior -> stages 1, 2, 3 -> the results table (configs/demo.py)
pretrain      Sapiens-style MAE pretraining of the backbone on unlabelled images (configs/pretrain.py)
foundation    the testbed foundation: human corpus -> MAE -> heads -> Sapiens-layout files
semisup       a semi-supervised (NK-Sapiens) stage (configs/semisup_stage1.py, semisup_stage2.py)
semisup_demo  NK-Sapiens on the testbed: supervised-only against the semi-supervised rows
"""

from __future__ import annotations

import importlib
from pathlib import Path

import ml_collections

JOBS = {
    "prior": "hyper_sapiens_jax.prior.train",
    "finetune": "hyper_sapiens_jax.training.loop",
    "demo": "hyper_sapiens_jax.demo",
    "pretrain": "hyper_sapiens_jax.training.pretrain",
    "foundation": "hyper_sapiens_jax.testbed.foundation",
    "semisup": "hyper_sapiens_jax.semisup.job",
    "semisup_demo": "hyper_sapiens_jax.semisup.demo",
}


def run_job(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Run ``config.job`` in ``workdir``, holding its lock (a second job on the same workdir stops
    with ``WorkdirInUseError`` naming the first); a ValueError names an unknown job, a
    ``ConfigError`` every value that breaks ``config.CONSTRAINTS`` (checked before anything runs)."""
    from hyper_sapiens_jax.config import check_values
    from hyper_sapiens_jax.training.monitor import workdir_lock

    job = config.get("job")
    if job not in JOBS:
        raise ValueError(f"config.job={job!r} is not one of {sorted(JOBS)}")
    check_values(config)
    with workdir_lock(workdir):
        return importlib.import_module(JOBS[job]).run(config, workdir, mode) or 0


def expected_errors() -> tuple[type[BaseException], ...]:
    """What the jobs raise for a problem the user can fix (a bad config, data or weights file; a run
    that cannot go on, e.g. a non-finite loss): the command line prints these as one line."""
    from hyper_sapiens_jax.prior.train import PriorTrainingError
    from hyper_sapiens_jax.training.loop import TrainingError
    from hyper_sapiens_jax.training.monitor import WorkdirError, WorkdirInUseError
    from hyper_sapiens_jax.training.pretrain import PretrainError

    return (
        ValueError,  # DataError, ConfigError, WeightsError (CheckpointError), TuningSplitError among them
        FileNotFoundError,
        TrainingError,
        PretrainError,
        PriorTrainingError,
        WorkdirInUseError,
        WorkdirError,
    )
