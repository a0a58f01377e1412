r"""The one entry point: ``python -m hyper_sapiens_jax.main --config CONFIG[:ARCH] --workdir W``.

The config's ``job`` field picks what runs (``JOBS``; each is ``hyper_sapiens_jax/jobs/<job>.py``):
  finetune      one stage of the curriculum (configs/stage1.py, stage2.py, stage3.py, semisup_stage0.py)
  prior         the diffusion pose prior on skeletons (configs/prior.py)
  pretrain      Sapiens-style MAE pretraining of the backbone on unlabelled images (configs/pretrain.py)
  foundation    the testbed foundation: human corpus -> MAE -> heads -> Sapiens-layout files
                (configs/foundation.py)
  demo          foundation -> prior -> stages 1, 2, 3 -> the results table (configs/demo.py)
  semisup       a semi-supervised (NK-Sapiens) stage (configs/semisup_stage1.py, semisup_stage2.py)
  semisup_demo  NK-Sapiens on the testbed: supervised-only against the semi-supervised rows
                (configs/semisup_demo.py)
  study         the ablation study: rows z, a-f, s over seeds, with 95% intervals (configs/study.py)
  sweep         the SDS / geometry weights on the tuning split (configs/sweep.py)

Examples::

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo
  python -m hyper_sapiens_jax.main --config configs/stage2.py:sapiens_0.3b --workdir /runs/s2 \
      --config.init_from=/runs/s1 --config.prior_ckpt=/runs/prior --config.data.syrip_real_ann=...
  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior
  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior \
      --config.data.source=files --config.data.skeletons=/data/skeletons.npz --config.num_steps=2000
  python -m hyper_sapiens_jax.main --config configs/study.py --workdir /tmp/study --config.study.seeds=0,1,2

Any config field can be overridden with ``--config.FIELD=VALUE``. ``--mode eval`` evaluates the
latest checkpoint in the workdir instead of training.

Other command-line tools: ``python -m hyper_sapiens_jax.predict`` (keypoints + overlays for image
files), ``python -m hyper_sapiens_jax.preview`` (the training batches as images),
``python -m convert_weights.torch_to_flax`` / ``flax_to_torch`` (checkpoints from / to PyTorch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import ml_collections

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.jobs import (
    demo,
    finetune,
    foundation,
    pretrain,
    prior,
    run_locked,
    semisup,
    semisup_demo,
    study,
    sweep,
)
from hyper_sapiens_jax.logs import setup_logging
from hyper_sapiens_jax.training.monitor import WorkdirError, WorkdirInUseError
from hyper_sapiens_jax.training.trainer import TrainingError

# config.job -> the job's run(config, workdir, mode).
JOBS = {
    "finetune": finetune.run,
    "prior": prior.run,
    "pretrain": pretrain.run,
    "foundation": foundation.run,
    "demo": demo.run,
    "semisup": semisup.run,
    "semisup_demo": semisup_demo.run,
    "study": study.run,
    "sweep": sweep.run,
}

# What the jobs raise for a problem the user can fix (a bad config, data or weights file; a run that
# cannot go on, e.g. a non-finite loss): the command line prints these as one line, exit code 1.
EXPECTED_ERRORS = (
    ValueError,  # DataError, ConfigError, WeightsError (CheckpointError), TuningSplitError among them
    FileNotFoundError,
    InterruptedError,  # the study and the sweep, when a run was stopped
    TrainingError,
    pretrain.PretrainError,
    prior.PriorTrainingError,
    WorkdirInUseError,
    WorkdirError,
)


def run_job(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Run ``config.job`` in ``workdir`` under its lock (``jobs.run_locked``); a ValueError names an
    unknown job, a ``ConfigError`` every value that breaks ``config.CONSTRAINTS``."""
    job = config.get("job")
    if job not in JOBS:
        raise ValueError(f"config.job={job!r} is not one of {sorted(JOBS)}")
    return run_locked(JOBS[job], config, workdir, mode)


def maybe_initialize_distributed(config) -> None:
    """``jax.distributed.initialize`` when the config names a coordinator (or asks for auto-detection,
    e.g. on TPU pods / SLURM); single-process runs skip it."""
    d = config.get("distributed")
    if d is None:
        return
    # A dead peer is detected by missed heartbeats: the survivors stop with an error after this long.
    timeouts = {"heartbeat_timeout_seconds": int(d.get("heartbeat_timeout_s", 100))}
    if d.coordinator_address:
        if d.get("cpu_collectives"):  # multi-process CPU runs (tests, laptops): gloo over loopback
            jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
        jax.distributed.initialize(
            coordinator_address=d.coordinator_address,
            num_processes=d.num_processes,
            process_id=d.process_id,
            **timeouts,
        )
    elif d.auto:
        jax.distributed.initialize(**timeouts)


def main(argv: list[str] | None = None) -> int:
    """The ``hyper-sapiens`` console script (``python -m hyper_sapiens_jax.main``); ``--help``
    lists the flags. Returns the job's exit code."""
    p = cli.parser(__doc__, config=True)
    p.add_argument("--workdir", required=True, help="where checkpoints, logs and reports go")
    p.add_argument("--mode", choices=["train", "eval"], default="train", help="train (resuming if possible) or eval")
    args = cli.parse(p, argv)
    setup_logging()
    job = args.config.get("job")
    if job not in JOBS:
        p.error(f"config.job={job!r} is not one of {sorted(JOBS)}")
    maybe_initialize_distributed(args.config)
    return cli.run_main(run_job, args.config, args.workdir, args.mode, errors=EXPECTED_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
