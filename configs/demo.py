"""The whole method on the synthetic testbed: foundation -> prior -> stage 1 -> 2 -> 3 -> table.

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo
  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo \\
      --config.data.source=files --config.data.syrip_syn_ann=... --config.data.skeletons=...

``arg`` is the arch (default ``cpu``, the testbed foundation's preset). Like a user with the released
Sapiens checkpoints, the demo starts from a pretrained foundation: ``config.foundation`` names
Sapiens-layout safetensors files (by default those shipped in ``hyper_sapiens_jax/testbed/foundation``,
made by ``configs/foundation.py``), converted by ``convert_weights.torch_to_flax``; set
``--config.foundation.dir=`` to start from random weights instead. Each part is the matching config
file (configs/prior.py, stage1.py, stage2.py, stage3.py) with a shorter schedule, reachable as
``--config.stage2.num_steps=...``, ``--config.prior.num_steps=...``; for ``cpu`` the stages also
weight the pose term 100x, freeze ``pos_embed`` with the frozen prefix, use a milder augmentation
and alpha = 1 (measured on the tuning split: docs/training.md, "The demo"). ``config.data`` applies to every
stage and the prior (each stage keeps its own ``mix``). The workdir gets foundation/, prior/,
stage1/, stage2/, stage3/ and results.md / results.json (the table, with the zero-shot row).
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import base_config, load_config_file
from hyper_sapiens_jax.testbed.shipped import FOUNDATION_DIR, FOUNDATION_FILES

HERE = Path(__file__).parent
# Demo schedules (steps) per stage, and the CPU-sized presets they apply to.
DEMO_STEPS = {"tiny": (600, 250, 250), "cpu": (300, 250, 250)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arch = arg or "cpu"
    c = ml_collections.ConfigDict()
    c.job = "demo"
    c.arch = arch
    c.stages = (1, 2, 3)  # which stages run, in order
    c.foundation = ml_collections.ConfigDict({"dir": str(FOUNDATION_DIR) if arch == "cpu" else "", **FOUNDATION_FILES})
    c.data = base_config(arch).data  # shared by every stage and the prior (each stage keeps its mix)
    del c.data["mix"]
    if arch == "cpu":
        # A milder geometry than the Sapiens recipe for the short schedules (as the foundation's).
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
    c.prior.report = ml_collections.ConfigDict(
        dict(
            num_samples=500,
            ddim_steps=50,
            num_ancestral=64,
            num_train_reference=2000,
            effect_poses=128,
            effect_steps=100,
        )
    )

    for stage, steps in zip((1, 2, 3), DEMO_STEPS.get(arch, (None,) * 3)):
        s = load_config_file(HERE / f"stage{stage}.py", arch)
        if steps is not None:
            s.num_steps = steps
            s.eval.every = s.checkpoint.every = steps
        if arch == "cpu":
            # The heatmap MSE (~0.01) pulls on the shared backbone ~100x less than the depth and normal
            # terms (benchmarks/loss_gradients.py: 146x and 77x at weight 1): weight it up so pose leads.
            s.loss.pose = 100.0
            s.train_pos_embed = False  # the frozen prefix then costs no backward (20% faster steps)
            if s.loss.sds > 0:
                # At the recipe's alpha = 0.01 the SDS gradient is 0.1% of the (weighted) pose term's:
                # a no-op. At 1 it pulls ~14% as hard. On the tuning split (python -m
                # configs/sweep.py, benchmarks/results/sweep.md) alpha in {0, 1} x beta in {0, 0.1} all scored within
                # noise of each other; the demo keeps the method's terms on.
                s.loss.sds = 1.0
        c[f"stage{stage}"] = s
    return c
