"""The diffusion pose prior: an MLP DDPM on skeleton-only keypoints (trained before stages 2 and 3).

  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior
  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir /tmp/prior \
      --config.data.source=files --config.data.skeletons=/data/skeletons.npz --config.num_steps=2000

By default (``data.source='testbed'``) the testbed's skeleton set (10k poses) is used. The defaults train a
useful prior on ~10k skeletons in well under 10 minutes on 2 CPU cores. ``arg`` is unused (kept
for the ``get_config(arg)`` convention).
"""

import ml_collections

from hyper_sapiens_jax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    c = ml_collections.ConfigDict()
    c.job = "prior"
    c.seed = 0

    # Skeletons (with data.source='files'): an .npz [N, 17, 2|3], a COCO keypoint JSON or a MINI-RGBD root.
    c.data = base_config().data
    c.data.source = "testbed"
    c.data.heldout_fraction = 0.1
    c.data.min_visible = 6  # poses with fewer labelled joints are not used

    c.model = ml_collections.ConfigDict(dict(width=256, depth=3, hidden_mult=2, time_dim=64))
    # schedule: "linear" or "cosine". Samplers clip x̂0's joints to x0_clip_factor x the largest joint
    # radius of the normalised training poses (0: no clipping).
    c.diffusion = ml_collections.ConfigDict(dict(num_steps=1000, schedule="linear", x0_clip_factor=1.2))
    # align_torso: rotate each pose so its torso points up (the prior then models one orientation).
    # min_torso_frac: foreshortened torsos (~10% of the testbed's views are < half the usual length)
    # are floored at this fraction of the RMS-based scale, so they do not blow the pose up.
    c.norm = ml_collections.ConfigDict(dict(min_torso_frac=0.75, align_torso=True))

    c.augment = ml_collections.ConfigDict(dict(rotate=True, max_rotation_deg=180.0, flip=True))
    # Joint dropout so the prior scores partial skeletons: a `prob` share of poses loses joints at a
    # rate ~ U(0, max_rate); a `subset_prob` share is cut to MINI-RGBD's 13 COCO points.
    c.dropout = ml_collections.ConfigDict(
        dict(prob=0.4, max_rate=0.5, subset_prob=0.2, subset="common13", min_visible=2)
    )

    c.optim = ml_collections.ConfigDict(
        dict(lr=1e-3, warmup_steps=500, final_lr_frac=0.05, weight_decay=1e-4, grad_clip=1.0)
    )
    c.batch_size = 256
    c.num_steps = 20_000
    c.ema_decay = 0.999
    c.steps_per_call = 200  # train steps per jitted call (one lax.scan)
    c.eval_every = 1000  # held-out denoising loss (EMA weights) -> metrics.jsonl
    c.checkpoint_every = 2000
    c.keep_checkpoints = 2

    c.report = ml_collections.ConfigDict(
        dict(
            num_samples=2000,
            ddim_steps=100,
            num_ancestral=256,
            num_train_reference=5000,
            effect_poses=384,
            effect_steps=400,
        )
    )
    return c
