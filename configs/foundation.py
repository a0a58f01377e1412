"""The testbed foundation: human corpus -> MAE pretraining -> pose/depth/normal fine-tuning -> export.

  python -m hyper_sapiens_jax.main --config configs/foundation.py --workdir W

Regenerates, from nothing, the Sapiens-layout files that ship in ``hyper_sapiens_jax/testbed/foundation``
(``W/foundation/``: the pretrain backbone, the pose / depth / normal checkpoints and a manifest), the
way Sapiens itself is built: MAE on a corpus of human images (the testbed's adults and children, no
infants), then task fine-tuning: pose end to end, then the depth and normal heads on the frozen
pose backbone, so the three task files share one backbone (the demo's model has one). ``arg`` is the
arch (default ``cpu``). The parts are reachable as ``--config.pretrain.num_steps=...``,
``--config.pose.num_steps=...``, ``--config.geometry.num_steps=...``, ``--config.data.humans.num_train=...``.
See ``hyper_sapiens_jax/jobs/foundation.py``.
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import base_config, load_config_file

HERE = Path(__file__).parent


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arch = arg or "cpu"
    c = ml_collections.ConfigDict()
    c.job = "foundation"
    c.arch = arch
    c.data = base_config(arch).data  # the corpus: data.humans, data.humans_dir
    del c.data["mix"]

    # 1. MAE on the corpus's images (square crops around people, as Sapiens' human-centric crops).
    p = c.pretrain = load_config_file(HERE / "pretrain.py", arch)
    p.data.source = "testbed"
    p.model.image_size = (128, 128)
    p.model.dtype = "float32"
    p.model.remat = False
    p.batch_size = 64
    p.num_steps = 3000
    p.log_every = 100
    p.checkpoint.every = 1000
    p.mae.decoder_dim, p.mae.decoder_depth, p.mae.decoder_heads = 128, 2, 4
    p.optim.lr, p.optim.scale_lr, p.optim.warmup_steps = 1.5e-3, False, 200

    # 2. Pose fine-tuning, end to end from the MAE backbone (the pose head from random). Pose alone:
    #    trained next to depth and normal on one backbone, the pose loss (~0.01) is a small part of
    #    the objective (depth ~0.9, normal ~0.5) and stalled at humans-val PCK@0.05 0.20 in 4000
    #    steps; alone it takes half the step time. A milder geometry than the Sapiens recipe's
    #    (rotation 80 deg at p=0.6, coarse dropout always) suits the short schedule.
    t = c.pose = base_config(arch)
    t.stage = 0
    t.data.mix = ml_collections.ConfigDict({"humans": 1})
    t.model.heads = ("pose",)
    t.loss.depth = t.loss.normal = 0.0
    t.trainable_blocks = None
    t.batch_size = 16
    t.num_steps = 8000
    # lr 2e-3 without layer decay: from the same start, 600 steps reach humans-val PCK@0.05 0.30
    # where lr 5e-4 with decay 0.85 plateaus at 0.28.
    t.optim.lr, t.optim.layer_decay, t.optim.warmup_steps = 2e-3, 1.0, 300
    t.ema_decay = 0.998
    t.log_every = 100
    t.eval.every = t.checkpoint.every = 2000
    a = t.data.aug
    a.rotate_prob, a.rotate_factor, a.scale_range, a.half_body_prob, a.dropout_prob = 0.3, 45.0, (0.7, 1.3), 0.1, 0.0

    # 3. Depth and normal heads (from random) on the frozen pose backbone: only the final norm and the
    #    three heads train, the backbone runs forward only. The pose loss stays on, so the pose head
    #    follows the final norm. Every exported file holds this run's backbone.
    g = c.geometry = ml_collections.ConfigDict(t.to_dict())
    g.model.heads = ("pose", "depth", "normal")
    g.loss.depth = g.loss.normal = 1.0
    g.trainable_blocks = 0
    g.train_pos_embed = False
    g.num_steps = 2000
    g.optim.warmup_steps = 100
    g.eval.every = g.checkpoint.every = 2000

    # 4. The zero-shot score of the exported files: the demo's stage-1 view of the infant testbed.
    c.zero_shot = load_config_file(HERE / "stage1.py", arch)
    return c
