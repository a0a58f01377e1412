"""The fine-tuning job (``config.job = 'finetune'``): one stage of the curriculum.

  python -m hyper_sapiens_jax.main --config configs/stage2.py:tiny --workdir W [--mode eval]

A ``training.trainer.Trainer`` does the work (see it for what a run does and writes); this job
trains it (resuming from the workdir) or, with ``--mode eval``, evaluates its latest checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import ml_collections

from hyper_sapiens_jax.jobs.inputs import run_data
from hyper_sapiens_jax.prior import DiffusionPrior
from hyper_sapiens_jax.prior.sds import sds_term
from hyper_sapiens_jax.training.trainer import Extension, Trainer, TrainingError

log = logging.getLogger(__name__)


def load_prior_from(workdir: str, field: str = "config.prior_ckpt") -> DiffusionPrior:
    """The frozen ``DiffusionPrior`` of a prior workdir; a TrainingError naming it (as ``field``) if
    unreadable."""
    try:
        prior = DiffusionPrior.load(workdir)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise TrainingError(f"{field}={workdir}: {e}") from None
    log.info("prior: %s (%d keypoints)", workdir, prior.num_keypoints)
    return prior


def prior_term(config: ml_collections.ConfigDict) -> Callable | None:
    """The objective's SDS term from ``config.prior_ckpt`` (``prior.sds.sds_term``), or None when
    ``config.loss.sds`` is 0; a TrainingError when a weight is set without a prior."""
    if config.loss.sds <= 0:
        return None
    if not config.prior_ckpt:
        raise TrainingError("config.loss.sds > 0 needs config.prior_ckpt (a workdir of configs/prior.py)")
    prior = load_prior_from(config.prior_ckpt)
    return sds_term(prior, t_range=(config.loss.sds_t_min, config.loss.sds_t_max), weighting=config.loss.sds_weighting)


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    mode: str = "train",
    extension: Callable[..., Extension] | None = None,
) -> int:
    """Train (resuming from ``workdir`` when it holds checkpoints) or, with ``mode='eval'``, evaluate
    its latest checkpoint. Returns 0; raises TrainingError when the run cannot go on.

    ``extension(config=, workdir=, mesh=, mcfg=, mix=, paths=, sample_cfg=)`` -> ``Extension``
    builds what a job on top of this loop adds (training mode only)."""
    prior_loss = prior_term(config) if mode == "train" else None  # evaluation needs no prior
    trainer = Trainer(config, workdir, run_data(config, mode), mode, extension, prior_loss)
    try:
        return trainer.evaluate_latest() if mode == "eval" else trainer.train()
    finally:
        trainer.close()
