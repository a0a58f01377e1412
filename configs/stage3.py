"""Stage 3: real:synthetic = 80:20 (synthetic replay).

  python -m hyper_sapiens_jax.data.inspect --config configs/stage3.py:tiny --batches 2 --out /tmp/inspect
"""

import ml_collections

from hyper_sapiens_jax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: the arch (tiny, sapiens_0.3b (default), sapiens_0.6b, sapiens_1b, sapiens_2b)."""
    config = base_config(arg)
    config.stage = 3
    config.batch_size = 20
    config.data.mix = ml_collections.ConfigDict({"syrip_real": 8, "syrip_syn": 1, "mini_rgbd": 1})
    return config
