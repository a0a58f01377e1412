"""Semi-supervised stage 1 (NK-Sapiens): alignment with unlabelled images.

  python -m hyper_sapiens_jax.main --config configs/semisup_stage1.py:sapiens_0.3b --workdir W1 \\
      --config.init_from=W0 --config.prior_ckpt=PRIOR --config.data.unlabeled_images=/data/unlabelled \\
      [--config.data.unlabeled_boxes=dets.json --config.data.unlabeled_image_list=images.json] ...

L_sup + λ_cons L_cons + λ_dev L_dev + λ_geo (L_rigidity + L_orthogonality): the labelled mix as in
stage 0 plus ``config.semisup.unlabeled_batch`` unlabelled crops per step, seen in a weak and a strong
view; teacher A (EMA) or teacher B (the prior-refined student) labels each, by the kinematic gate
(``config.semisup``; docs/semisup.md).
"""

import ml_collections

from hyper_sapiens_jax.config import semisup_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return semisup_config(arg, 1)
