"""Stage 1: synthetic only (SyRIP synthetic + MINI-RGBD), full pose/depth/normal supervision.

  python -m hyper_sapiens_jax.data.inspect --config configs/stage1.py:tiny --batches 2 --out /tmp/inspect
"""

import ml_collections

from hyper_sapiens_jax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: the arch (tiny, sapiens_0.3b (default), sapiens_0.6b, sapiens_1b, sapiens_2b)."""
    config = base_config(arg)
    config.stage = 1
    config.batch_size = 16
    config.data.mix = ml_collections.ConfigDict({"syrip_syn": 1, "mini_rgbd": 1})
    return config
