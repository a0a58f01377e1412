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
it; ``config.seeds`` repeats everything per seed. See ``hyper_sapiens_jax/semisup/demo.py`` for the
rows and results.json; README "Semi-supervised mode" for the measured table.
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import base_config, load_config_file
from hyper_sapiens_jax.testbed.foundation import FOUNDATION_DIR, FOUNDATION_FILES

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
    c.foundation = ml_collections.ConfigDict({"dir": str(FOUNDATION_DIR) if arch == "cpu" else "", **FOUNDATION_FILES})
    c.data = base_config(arch).data
    del c.data["mix"]
    c.data.num_labeled = 100
    if arch == "cpu":  # the demo's milder geometry (configs/demo.py)
        a = c.data.aug
        a.rotate_prob, a.rotate_factor, a.scale_range, a.half_body_prob, a.dropout_prob = (
            0.3,
            45.0,
            (0.7, 1.3),
            0.1,
            0.0,
        )

    c.prior = load_config_file(HERE / "prior.py")
    c.prior.num_steps = 2000
    c.prior.eval_every = c.prior.checkpoint_every = 1000
    c.prior.report = ml_collections.ConfigDict(  # the demo's short report (configs/demo.py)
        dict(
            num_samples=500,
            ddim_steps=50,
            num_ancestral=64,
            num_train_reference=2000,
            effect_poses=128,
            effect_steps=100,
        )
    )

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
