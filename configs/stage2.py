"""Stage 2: mixed batches, synthetic:real = 1:1 (SyRIP synthetic + MINI-RGBD : SyRIP real), with the
frozen diffusion prior (SDS, alpha = 0.01) and the geometry losses (beta = 0.1) on real images.

  python -m hyper_sapiens_jax.main --config configs/stage2.py:tiny --workdir /tmp/s2 \
      --config.init_from=/tmp/s1 --config.prior_ckpt=/tmp/prior

Progressive unfreezing: the last quarter of the blocks train first, the last half from mid-stage.
"""

import ml_collections

from hyper_sapiens_jax.config import base_config, stage_blocks


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """``arg``: the arch (tiny, sapiens_0.3b (default), sapiens_0.6b, sapiens_1b, sapiens_2b)."""
    config = base_config(arg)
    config.stage = 2
    config.batch_size = 16
    config.data.mix = ml_collections.ConfigDict({"syrip_syn": 1, "mini_rgbd": 1, "syrip_real": 2})
    config.trainable_blocks = stage_blocks(config.arch, 2)
    config.unfreeze = ((0.5, stage_blocks(config.arch, 1) or "all"),)  # from mid-stage, whatever num_steps
    config.optim.lr = 1e-3 if config.arch == "tiny" else 2e-4
    config.loss.sds = 0.01  # alpha
    config.loss.depth_normal = 0.1  # beta
    config.loss.bone_ratio = 0.1  # beta
    return config
