"""Stage 3: 80% real / 20% synthetic replay (SyRIP real 8 : SyRIP synthetic 1 : MINI-RGBD 1); the prior
weight is annealed linearly from alpha = 0.01 to 0 over the stage; geometry stays at beta = 0.1.

  python -m hyper_sapiens_jax.main --config configs/stage3.py:tiny --workdir /tmp/s3 \
      --config.init_from=/tmp/s2 --config.prior_ckpt=/tmp/prior
"""

import ml_collections

from hyper_sapiens_jax.config import base_config, stage_blocks


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: the arch (tiny, sapiens_0.3b (default), sapiens_0.6b, sapiens_1b, sapiens_2b)."""
    config = base_config(arg)
    config.stage = 3
    config.batch_size = 20
    config.data.mix = ml_collections.ConfigDict({"syrip_real": 8, "syrip_syn": 1, "mini_rgbd": 1})
    config.trainable_blocks = stage_blocks(config.arch, 3)
    config.optim.lr = 5e-4 if config.arch == "tiny" else 1e-4
    config.loss.sds = 0.01  # alpha, annealed ...
    config.loss.sds_final = 0.0  # ... to 0 at the end of the stage
    config.loss.depth_normal = 0.1
    config.loss.bone_ratio = 0.1
    return config
