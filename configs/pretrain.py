"""Sapiens-style MAE pretraining of the ViT backbone (``config.job = 'pretrain'``).

  python -m hyper_sapiens_jax.main --config configs/pretrain.py:tiny --workdir W \
      --config.data.source=files --config.data.images=/path/to/frames
  python -m hyper_sapiens_jax.main --config configs/pretrain.py:sapiens_0.3b --workdir W \
      --config.data.source=files --config.data.images=/data/infant_frames \
      --config.init_from=ckpts/pre          # domain-adaptive: continue from a converted Sapiens backbone

``arg`` is the arch (``tiny``, ``sapiens_0.3b`` (default), ``sapiens_0.6b``, ``sapiens_1b``,
``sapiens_2b``). The recipe is Sapiens' (mmpretrain MAE): square 1024 x 1024 inputs (128 x 128 for
``tiny``), mask ratio 0.75, MSE on the masked patches against per-patch normalised pixels, a light
decoder (512 wide, 8 blocks, 16 heads), AdamW (beta 0.9/0.95, weight decay 0.05, none on biases,
norms, tokens and position embeddings) with linear warm-up and cosine decay, and a fixed 2-D sin-cos
position embedding (``mae.learn_pos_embed=False``, as MAEViT). ``optim.lr`` is per 256 images: the
learning rate used is ``optim.lr * batch_size / 256`` (MAE's rule) unless ``optim.scale_lr=False``.

Data (``data.source``): 'files' reads every .jpg/.jpeg/.png under ``data.images``; 'testbed' reads
the synthetic human corpus (``hyper_sapiens_jax.jobs.inputs.pretrain_source``).
"""

import ml_collections

from hyper_sapiens_jax.config import base_config, parse_arch


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The pretraining config for the arch named by ``arg`` (default sapiens_0.3b)."""
    arch = parse_arch(arg)
    tiny = arch == "tiny"
    c = base_config(arch)  # mesh, distributed, checkpoint, model execution options, data paths
    c.job = "pretrain"
    for unused in (
        "stage",
        "micro_batches",
        "eval_batch_size",
        "init_from_ema",
        "prior_ckpt",
        "trainable_blocks",
        "unfreeze",
        "ema_decay",
        "loss",
        "eval",
    ):
        if unused in c:
            del c[unused]
    c.batch_size = 16 if tiny else 256  # global, across all processes
    c.num_steps = 300 if tiny else 100_000
    c.log_every = 10 if tiny else 50
    # Empty: random init (MAE's xavier init). Else a directory from
    # `python -m convert_weights.torch_to_flax --pretrain ...` (or any weights directory / run whose
    # backbone matches the arch), or a *.safetensors file in the Sapiens pretrain layout (such as a
    # previous run's backbone_pretrain.safetensors, which also carries the cls token).
    c.init_from = ""

    c.model.image_size = (128, 128) if tiny else (1024, 1024)  # square (H, W)
    c.model.heads = ()  # the backbone alone; the decoder is MAE-only
    c.model.patch_padding = 2  # as the Sapiens pose models; the grid stays H/16 x W/16

    c.mae = ml_collections.ConfigDict(
        dict(
            mask_ratio=0.75,
            norm_pix=True,
            decoder_dim=32 if tiny else 512,
            decoder_depth=2 if tiny else 8,
            decoder_heads=4 if tiny else 16,
            learn_pos_embed=False,
        )
    )  # False: fixed 2-D sin-cos pos_embed / zero cls_pos (MAEViT)

    c.optim = ml_collections.ConfigDict(
        dict(
            lr=1.5e-4,
            scale_lr=not tiny,  # tiny trains at lr itself (batch 16 would make it tiny)
            b1=0.9,
            b2=0.95,
            weight_decay=0.05,
            grad_clip=0.0,  # 0: no clipping (MAE)
            warmup_steps=20 if tiny else 4000,
            final_lr_frac=0.0,
        )
    )
    if tiny:
        c.optim.lr = 2e-3

    c.checkpoint = ml_collections.ConfigDict(dict(every=100 if tiny else 2000, keep=2))
    c.eval_batches = 4  # --mode eval: mean loss over this many batches (fixed masks)

    d = c.data
    d.source = "testbed"  # 'files' (data.images) or 'testbed'
    d.images = ""  # a folder of .jpg/.jpeg/.png, searched recursively
    d.worker_count = 0  # Grain worker processes (0: decode in the main process)
    # Random-resized crop (whole image: area fraction scale_range; person box: box side x bbox_padding x
    # U(bbox_scale_range)), aspect jitter ratio_range, horizontal flip. See data/unlabeled.py.
    d.aug = ml_collections.ConfigDict(
        dict(
            scale_range=(0.2, 1.0),
            ratio_range=(3 / 4, 4 / 3),
            bbox_padding=1.25,
            bbox_scale_range=(0.8, 1.2),
            flip_prob=0.5,
        )
    )
    return c
