"""NK-Sapiens on the synthetic testbed: supervised-only against the semi-supervised rows, same labels.

  python -m hyper_sapiens_jax.main --config configs/semisup_demo.py --workdir /tmp/semisup
  python -m hyper_sapiens_jax.main --config configs/semisup_demo.py --workdir /tmp/semisup \\
      --config.data.source=files --config.data.syrip_real_ann=... --config.data.syrip_real_images=... \\
      --config.data.val_ann=... --config.data.val_images=... --config.data.unlabeled_images=DIR

``arg`` is the arch (default ``cpu``: the testbed foundation's preset). The labelled set is
``config.data.num_labeled`` (100) real-look training images, the unlabelled set the testbed's
unlabelled split (``config.data.num_unlabeled`` images, disjoint from the validation split) or
``config.data.unlabeled_images``. Stage 0 (``config.stage0``, configs/semisup_stage0.py) warms up on
the labels; each row of ``config.rows`` then runs ``config.stage1`` (configs/semisup_stage1.py) from
it; ``config.seeds`` repeats everything per seed. See ``hyper_sapiens_jax/jobs/semisup_demo.py`` for the
rows and results.json; docs/semisup.md for the measured table.
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import load_config_file

HERE = Path(__file__).parent
# (stage 0 steps, row steps) for the CPU-sized presets.
DEMO_STEPS = {"tiny": (300, 200), "cpu": (200, 200)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arch = arg or "cpu"
    c = ml_collections.ConfigDict()
    c.job = "semisup_demo"
    c.arch = arch
    c.seeds = (0,)
    c.rows = ("supervised", "semi-supervised")
    demo = load_config_file(HERE / "demo.py", arch)  # the same foundation, data and prior as the demo
    c.foundation, c.data, c.prior = demo.foundation, demo.data, demo.prior
    c.data.num_labeled = 100

    for stage, steps in zip((0, 1), DEMO_STEPS.get(arch, (None, None))):
        s = load_config_file(HERE / f"semisup_stage{stage}.py", arch)
        if steps is not None:
            s.num_steps = steps
            s.eval.every = s.checkpoint.every = steps
        if arch == "cpu":
            s.loss.pose = 100.0  # as configs/demo.py: the heatmap MSE is small next to its gradients' needs
            s.train_pos_embed = False
        if stage == 1:
            s.semisup.cons = s.loss.pose
        c[f"stage{stage}"] = s
    return c
