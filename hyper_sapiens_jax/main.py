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

from absl import app, flags
from ml_collections import config_flags

from hyper_sapiens_jax.jobs import JOBS, run_job
from hyper_sapiens_jax.logs import setup_logging

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/stage2.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where checkpoints, logs and reports go")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (resuming if possible) or eval")


def maybe_initialize_distributed(config) -> None:
    """``jax.distributed.initialize`` when the config names a coordinator (or asks for auto-detection,
    e.g. on TPU pods / SLURM); single-process runs skip it."""
    import jax

    d = config.get("distributed")
    if d is None:
        return
    if d.coordinator_address:
        if d.get("cpu_collectives"):  # multi-process CPU runs (tests, laptops): gloo over loopback
            jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
        jax.distributed.initialize(
            coordinator_address=d.coordinator_address, num_processes=d.num_processes, process_id=d.process_id
        )
    elif d.auto:
        jax.distributed.initialize()


def main(argv) -> None:
    del argv
    setup_logging()
    config = _CONFIG.value
    job = config.get("job")
    if job not in JOBS:
        raise app.UsageError(f"config.job={job!r} is not one of {sorted(JOBS)}")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required")
    maybe_initialize_distributed(config)
    sys.exit(run_job(config, _WORKDIR.value, _MODE.value))


def cli() -> None:
    """The ``hyper-sapiens`` console script (``python -m hyper_sapiens_jax.main``)."""
    flags.mark_flags_as_required(["config"])
    app.run(main)


if __name__ == "__main__":
    cli()
