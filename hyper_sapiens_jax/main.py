r"""The one entry point: ``python -m hyper_sapiens_jax.main --config CONFIG[:ARCH] --workdir W``.

The config's ``job`` field picks what runs:
  finetune  one stage of the curriculum (configs/stage1.py, stage2.py, stage3.py)
  prior     train the diffusion pose prior on skeletons (configs/prior.py)
  demo      foundation -> prior -> stage 1 -> stage 2 -> stage 3 -> evaluation table (configs/demo.py)
  pretrain  Sapiens-style MAE pretraining of the backbone on unlabelled images (configs/pretrain.py)
  foundation  the testbed foundation: human corpus -> MAE -> pose/depth/normal heads -> Sapiens-layout
            files (configs/foundation.py)
  semisup   a semi-supervised NK-Sapiens stage (configs/semisup_stage1.py, semisup_stage2.py; stage 0
            is a finetune job, configs/semisup_stage0.py)
  semisup_demo  NK-Sapiens on the testbed: supervised-only against the semi-supervised rows
            (configs/semisup_demo.py)
Examples::

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo
  python -m hyper_sapiens_jax.main --config configs/stage2.py:sapiens_0.3b --workdir /runs/s2 \
      --config.init_from=/runs/s1 --config.prior_ckpt=/runs/prior --config.data.syrip_real_ann=...
  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior
  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior \
      --config.data.source=files --config.data.skeletons=/data/skeletons.npz --config.num_steps=2000

Any config field can be overridden with ``--config.FIELD=VALUE``. ``--mode eval`` evaluates the
latest checkpoint in the workdir instead of training.

Other command-line tools: ``python -m hyper_sapiens_jax.predict`` (keypoints + overlays for image
files), ``python -m hyper_sapiens_jax.study`` (the ablation study over seeds),
``python -m convert_weights.torch_to_flax`` / ``flax_to_torch`` (checkpoints from / to PyTorch).
"""

from __future__ import annotations

import sys

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.jobs import JOBS, expected_errors, run_job
from hyper_sapiens_jax.logs import setup_logging


def maybe_initialize_distributed(config) -> None:
    """``jax.distributed.initialize`` when the config names a coordinator (or asks for auto-detection,
    e.g. on TPU pods / SLURM); single-process runs skip it."""
    import jax

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
    return cli.run_main(run_job, args.config, args.workdir, args.mode, errors=expected_errors())


if __name__ == "__main__":
    sys.exit(main())
