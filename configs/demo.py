"""The whole method on the synthetic testbed: prior -> stage 1 -> stage 2 -> stage 3 -> evaluation.

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo

``arg`` is the arch (default ``tiny``: the whole run takes a few minutes on 2 CPU cores). Each part
is the matching config file (configs/prior.py, stage1.py, stage2.py, stage3.py) with shorter
schedules, reachable as ``--config.stage2.num_steps=...``, ``--config.prior.num_steps=...``. Each
stage starts from the previous one's final EMA weights; stages 2 and 3 use the prior trained first.
The workdir gets prior/, stage1/, stage2/, stage3/ and results.md / results.json (the table).
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import load_config_file, rescale_unfreeze

HERE = Path(__file__).parent


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arch = arg or "tiny"
    c = ml_collections.ConfigDict()
    c.job = "demo"
    c.arch = arch
    c.stages = "1,2,3"                      # which stages run, in order

    c.prior = load_config_file(HERE / "prior.py")
    c.prior.num_steps = 2000
    c.prior.eval_every = c.prior.checkpoint_every = 1000
    c.prior.report = ml_collections.ConfigDict(dict(
        num_samples=500, ddim_steps=50, num_ancestral=64, num_train_reference=2000, effect_poses=128,
        effect_steps=100))

    for stage, steps in ((1, 600), (2, 250), (3, 250)):
        s = load_config_file(HERE / f"stage{stage}.py", arch)
        if arch == "tiny":
            s.unfreeze = rescale_unfreeze(s.unfreeze, s.num_steps, steps)
            s.num_steps = steps
            s.eval.every = s.checkpoint.every = steps
        c[f"stage{stage}"] = s
    return c
