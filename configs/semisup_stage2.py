"""Semi-supervised stage 2 (NK-Sapiens, optional): stage 1 with the backbone frozen but for its last 2 blocks.

  python -m hyper_sapiens_jax.main --config configs/semisup_stage2.py:sapiens_0.3b --workdir W2 \\
      --config.init_from=W1 --config.prior_ckpt=PRIOR --config.data.unlabeled_images=...
"""

import ml_collections

from hyper_sapiens_jax.config import semisup_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return semisup_config(arg, 2)
