"""Inference API: ``load_predictor(DIR).forward(images)`` -> dict of numpy arrays.

``DIR`` is a weights directory written by ``convert_weights.torch_to_flax``, a training workdir
(its latest EMA weights) or a multi-stage demo workdir (its final stage). Images are float32
(B, H, W, 3), RGB, already Sapiens-normalised ((x - mean) / std), with (H, W) the model's image size.

Also a CLI that runs one forward pass and prints what came out:
  python -m hyper_sapiens_jax.inference --ckpt DIR [--batch 2] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyper_sapiens_jax.data.transforms import normalize_image
from hyper_sapiens_jax.evaluation.evaluate import flip_test as flip_averaged
from hyper_sapiens_jax.models.arch import ModelConfig
from hyper_sapiens_jax.models.weights import WeightsError, build_model
from hyper_sapiens_jax.training.checkpoint import load_any


class Predictor:
    """A jitted forward pass over a model's parameters (held on the default device).

    ``flip_test``: the pose heatmaps are averaged with those of the mirrored images (flipped back,
    left/right swapped), as in evaluation."""

    def __init__(self, model: nnx.Module, flip_test: bool = False):
        self.config: ModelConfig = model.config
        graphdef, self._state = nnx.split(model)

        def forward(state, images):
            model = nnx.merge(graphdef, state)
            out = model(images)
            if flip_test and "pose" in out:
                out["pose"] = flip_averaged(lambda x: model(x)["pose"], images)
            return out

        # One pure jitted function over (state, images): no NNX graph traversal per call.
        self._forward = jax.jit(forward)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.image_size

    def forward(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, H, W, 3) float32 normalised RGB, or uint8 RGB (normalised here with the Sapiens
        constants) -> {'features', and 'pose'/'depth'/'normal'}.

        Shapes: features (B, H/16, W/16, D), pose (B, H/4, W/4, K), depth (B, H, W, 1),
        normal (B, H/2, W/2, 3); all float32 numpy arrays.
        """
        images = np.asarray(images)
        h, w = self.image_size
        if images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"images must have shape (B, {h}, {w}, 3), got {images.shape}")
        if images.dtype == np.uint8:
            images = normalize_image(images)
        out = self._forward(self._state, jnp.asarray(images, jnp.float32))
        return {k: np.asarray(v) for k, v in out.items()}


def load_predictor(
    path: str | Path, *, dtype: str | None = None, attention: str | None = None, flip_test: bool = False
) -> Predictor:
    """Load ``path`` for inference.

    Args:
      path: a directory written by ``convert_weights.torch_to_flax``, or a training workdir.
      dtype: compute dtype override ('float32' or 'bfloat16'); parameters stay float32.
      attention: 'xla' or 'cudnn' override.
      flip_test: average the pose heatmaps with those of the mirrored images.
    """
    overrides = {k: v for k, v in (("dtype", dtype), ("attention", attention)) if v is not None}
    config, params, _ = load_any(path)
    return Predictor(build_model(config.replace(**overrides), params), flip_test=flip_test)


def main(argv: list[str] | None = None) -> int:
    """The ``hyper-sapiens-inference`` console script (``python -m hyper_sapiens_jax.inference``);
    ``--help`` lists the flags."""
    parser = argparse.ArgumentParser(
        prog="python -m hyper_sapiens_jax.inference",
        description="Run one forward pass of a converted Sapiens checkpoint on random normalised "
        "images and print the output shapes, value ranges and timing.",
    )
    parser.add_argument("--ckpt", required=True, help="weights directory from convert_weights.torch_to_flax")
    parser.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="compute dtype override")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(args.ckpt, dtype=args.dtype)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cfg = predictor.config
    print(
        f"model: {cfg.arch}, heads {list(cfg.heads)}, image {cfg.image_size[0]}x{cfg.image_size[1]}, "
        f"compute {cfg.dtype}, backend {jax.default_backend()}"
    )
    images = np.random.default_rng(args.seed).standard_normal((args.batch, *cfg.image_size, 3)).astype(np.float32)
    t0 = time.perf_counter()
    out = predictor.forward(images)
    t1 = time.perf_counter()
    predictor.forward(images)
    t2 = time.perf_counter()
    for name, arr in out.items():
        print(
            f"  {name:9s} {arr.shape!s:22s} min {arr.min():+.4f} max {arr.max():+.4f} "
            f"finite {bool(np.isfinite(arr).all())}"
        )
    print(f"first call (compile + run) {t1 - t0:.2f} s, second call {t2 - t1:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
