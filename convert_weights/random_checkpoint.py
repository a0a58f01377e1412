"""Write a randomly initialised checkpoint in the Sapiens PyTorch layout (demos and smoke tests).

  python -m convert_weights.random_checkpoint --arch tiny --task pose --image-size 256,192 --out FILE

Stands in for a downloaded Sapiens file on machines without one: it has the same keys, shapes and
``{'state_dict', 'meta'}`` wrapping, so ``torch_to_flax`` reads it exactly like a real checkpoint.
``--task pretrain`` writes the flat ``*_clean.pth`` form (no ``backbone.`` prefix, cls + 64x64 pos_embed).
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
from flax import nnx

from convert_weights.flax_to_torch import export_state_dict
from convert_weights.torch_io import save_state_dict
from hyper_sapiens_jax.models.arch import ARCHS, ModelConfig
from hyper_sapiens_jax.models.sapiens import Sapiens
from hyper_sapiens_jax.models.weights import flat_params

PRETRAIN_GRID = (64, 64)


def random_state_dict(arch: str, task: str, image_size: tuple[int, int], seed: int = 0, num_keypoints: int = 17):
    """(state dict, meta) of a freshly initialised model, in the Sapiens layout of ``task``."""
    heads = () if task in ("backbone", "pretrain") else (task,)
    config = ModelConfig(
        arch=arch,
        image_size=image_size,
        heads=heads,
        num_keypoints=num_keypoints,
        patch_padding=0 if task == "depth" else 2,
    )
    with jax.default_device(jax.devices("cpu")[0]):
        params = flat_params(Sapiens(config, rngs=nnx.Rngs(seed)))
    sd, meta = export_state_dict(config, params, "backbone" if task == "pretrain" else task)
    if task == "pretrain":
        d = sd["backbone.pos_embed"].shape[-1]
        rng = np.random.default_rng(seed)
        sd["backbone.pos_embed"] = (0.02 * rng.standard_normal((1, 1 + np.prod(PRETRAIN_GRID), d))).astype(np.float32)
        sd = {k.removeprefix("backbone."): v for k, v in sd.items()}
        sd["cls_token"] = np.zeros((1, 1, d), np.float32)
        meta = {**meta, "task": "pretrain"}
    return sd, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convert_weights.random_checkpoint", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arch", default="tiny", choices=list(ARCHS))
    parser.add_argument("--task", default="pose", choices=["pose", "depth", "normal", "backbone", "pretrain"])
    parser.add_argument("--image-size", default="256,192", help="H,W the model is built for")
    parser.add_argument("--num-keypoints", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output .pth or .safetensors file")
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.image_size.split(","))
    sd, meta = random_state_dict(args.arch, args.task, (h, w), args.seed, args.num_keypoints)
    save_state_dict(args.out, sd, meta)
    print(f"wrote {args.out}: random {args.arch} {args.task} checkpoint, {len(sd)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
