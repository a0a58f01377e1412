"""The testbed foundation: human corpus -> MAE pretraining -> pose/depth/normal fine-tuning -> export.

  python -m hyper_sapiens_jax.main --config configs/foundation.py --workdir W

Regenerates, from nothing, the Sapiens-layout files that ship in ``hyper_sapiens_jax/testbed/foundation``
(``W/foundation/``: the pretrain backbone, the pose / depth / normal checkpoints and a manifest), the
way Sapiens itself is built: MAE on a corpus of human images (the testbed's adults and children, no
infants), then task fine-tuning. ``arg`` is the arch (default ``cpu``). The parts are reachable as
``--config.pretrain.num_steps=...``, ``--config.tasks.num_steps=...``, ``--config.data.humans.num_train=...``.
See ``hyper_sapiens_jax/testbed/foundation.py``.
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
    c.data = base_config(arch).data                # the corpus: data.humans, data.humans_dir
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

    # 2. Task fine-tuning: pose + depth + normal heads from random, the backbone from MAE, end to end.
    t = c.tasks = base_config(arch)
    t.stage = 0
    t.data.mix = ml_collections.ConfigDict({"humans": 1})
    t.trainable_blocks = None
    t.batch_size = 16
    t.num_steps = 4000
    t.optim.lr, t.optim.warmup_steps = 1e-3, 300
    t.ema_decay = 0.998
    t.log_every = 100
    t.eval.every = t.checkpoint.every = 2000

    # 3. The zero-shot score of the exported files: the demo's stage-1 view of the infant testbed.
    c.zero_shot = load_config_file(HERE / "stage1.py", arch)
    return c
