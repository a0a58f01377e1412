"""Stage 1: synthetic only (SyRIP synthetic + MINI-RGBD 1:1), full pose/depth/normal supervision.

  python -m hyper_sapiens_jax.main --config configs/stage1.py:tiny --workdir /tmp/s1
  python -m hyper_sapiens_jax.main --config configs/stage1.py:sapiens_0.3b --workdir /runs/s1 \
      --config.init_from=/ckpt/sapiens_0.3b_pose   # a convert_weights.torch_to_flax directory

No prior and no geometry terms: the real-domain constraints come in stage 2.
"""

import ml_collections

from hyper_sapiens_jax.config import base_config, stage_blocks


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: the arch (tiny, sapiens_0.3b (default), sapiens_0.6b, sapiens_1b, sapiens_2b)."""
    config = base_config(arg)
    config.stage = 1
    config.batch_size = 16
    config.data.mix = ml_collections.ConfigDict({"syrip_syn": 1, "mini_rgbd": 1})
    config.trainable_blocks = stage_blocks(config.arch, 1)
    config.optim.lr = 2e-3 if config.arch == "tiny" else 5e-4  # tiny: from scratch
    return config
