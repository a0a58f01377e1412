"""Semi-supervised stage 0 (NK-Sapiens): the supervised warm-up on the labelled set.

  python -m hyper_sapiens_jax.main --config configs/semisup_stage0.py:sapiens_0.3b --workdir W0 \\
      --config.init_from=/ckpt/sapiens_0.3b --config.data.syrip_real_ann=... --config.data.syrip_real_images=... \\
      --config.data.val_ann=... --config.data.val_images=...

A plain fine-tuning run (``job = 'finetune'``) on ``config.data.mix`` (the labelled set: SyRIP real by
default) with the pose loss only; the depth and normal heads stay frozen, as the later stages use them
as teachers. Stage 1 starts from its workdir.
"""

import ml_collections

from hyper_sapiens_jax.config import semisup_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return semisup_config(arg, 0)
