"""What the SDS prior costs next to the pose model: wall time on this machine and XLA FLOPs.

  sds fwd+bwd       jitted value_and_grad of ``sds_loss`` w.r.t. the poses, batch --batch (64) poses
  tiny-ViT step     jitted value_and_grad of an MSE loss on all three heads of
                    Sapiens(arch='tiny', 256x192, pose+depth+normal), batch --vit-batch (16) images
  0.3B step FLOPs   the same step for sapiens_0.3b at 1024x768 (all heads, and pose only), lowered
                    from abstract shapes (nnx.eval_shape + jax.ShapeDtypeStruct: nothing big is
                    allocated or compiled), bf16 compute as in the stage configs

FLOPs come from XLA's cost analysis (compiled for the small programs, the lowered HLO for 0.3B).
Times are the median of --repeats calls after --warmup, with block_until_ready.

  python benchmarks/prior_cost.py [--workdir W] [--out /tmp/prior_cost.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.prior import DiffusionPrior, PriorSpec, sds_loss
from hyper_sapiens_jax.prior.denoiser import DenoiserSpec


def flops(stage) -> float:
    """Total FLOPs from a Lowered / Compiled stage's cost analysis (a dict, or a list of them)."""
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def median_seconds(fn, args, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# SDS
# ---------------------------------------------------------------------------------------------
def sds_step(prior: DiffusionPrior, batch: int):
    """(jitted fn, args): value and gradient of the SDS loss for ``batch`` poses in pixels."""
    k = prior.num_keypoints
    xy = jax.random.uniform(jax.random.key(0), (batch, k, 2), minval=100.0, maxval=400.0)
    visible = jnp.ones((batch, k), jnp.float32)
    fn = jax.jit(jax.value_and_grad(lambda p, xy, v, key: sds_loss(p, xy, v, key)))  # prior as an input
    return fn, (prior, xy, visible, jax.random.key(1))


# ---------------------------------------------------------------------------------------------
# Sapiens train step (forward + backward of an MSE on every head)
# ---------------------------------------------------------------------------------------------
def vit_step_fn(graphdef):
    def loss(params, images, targets):
        out = nnx.merge(graphdef, params)(images)
        return sum(jnp.mean((out[name] - targets[name]) ** 2) for name in targets)

    return jax.jit(jax.value_and_grad(loss))


def vit_inputs(config: ModelConfig, batch: int, abstract: bool):
    """Images and per-head targets (arrays, or ShapeDtypeStructs when ``abstract``)."""
    h, w = config.image_size
    shapes = {
        "pose": (batch, h // 4, w // 4, config.num_keypoints),
        "depth": (batch, h, w, 1),
        "normal": (batch, h // 2, w // 2, 3),
    }
    make = (lambda s: jax.ShapeDtypeStruct(s, jnp.float32)) if abstract else (lambda s: jnp.zeros(s, jnp.float32))
    return make((batch, h, w, 3)), {k: make(shapes[k]) for k in config.heads}


def tiny_vit_step(batch: int):
    config = ModelConfig(arch="tiny", image_size=(256, 192), heads=("pose", "depth", "normal"))
    graphdef, params = nnx.split(Sapiens(config, rngs=nnx.Rngs(0)))
    images, targets = vit_inputs(config, batch, abstract=False)
    images = jax.random.normal(jax.random.key(0), images.shape)
    return vit_step_fn(graphdef), (params, images, targets)


def sapiens_03b_step_flops(batch: int, dtype: str, heads: tuple[str, ...]) -> float:
    """FLOPs of one sapiens_0.3b step at 1024x768 with ``heads``, from shapes only."""
    config = ModelConfig(arch="sapiens_0.3b", image_size=(1024, 768), heads=heads, dtype=dtype)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: Sapiens(config, rngs=nnx.Rngs(0))))
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    images, targets = vit_inputs(config, batch, abstract=True)
    return flops(vit_step_fn(graphdef).lower(params, images, targets))


def default_prior() -> DiffusionPrior:
    """An untrained prior of configs/prior.py's size (the cost does not depend on the weights)."""
    spec = importlib.util.spec_from_file_location("prior_config", Path(__file__).parents[1] / "configs/prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.get_config().model
    return DiffusionPrior.create(PriorSpec(DenoiserSpec(17, m.width, m.depth, m.hidden_mult, m.time_dim)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", help="a trained prior (default: an untrained one of the default size)")
    parser.add_argument("--batch", type=int, default=64, help="poses per SDS call")
    parser.add_argument("--vit-batch", type=int, default=16, help="images per tiny-ViT step")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-03b", action="store_true", help="skip the (slow to lower) 0.3B FLOP count")
    parser.add_argument("--out", help="also write the results here (JSON)")
    args = parser.parse_args(argv)

    prior = DiffusionPrior.load(args.workdir) if args.workdir else default_prior()
    n_params = sum(x.size for x in jax.tree.leaves(prior.params))

    sds_fn, sds_args = sds_step(prior, args.batch)
    vit_fn, vit_args = tiny_vit_step(args.vit_batch)
    vit_ms = 1e3 * median_seconds(vit_fn, vit_args, args.warmup, max(3, args.repeats // 4))
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "load_average_1min": os.getloadavg()[0],
        },
        "prior": {"params": int(n_params), **prior.spec.denoiser.to_json()},
        "sds": {
            "batch": args.batch,
            "fwd_bwd_ms": round(1e3 * median_seconds(sds_fn, sds_args, args.warmup, args.repeats), 3),
            "flops": flops(sds_fn.lower(*sds_args).compile()),
        },
        "tiny_vit_step": {
            "batch": args.vit_batch,
            "image_size": [256, 192],
            "ms": round(vit_ms, 3),
            "flops": flops(vit_fn.lower(*vit_args).compile()),
        },
    }
    result["sds"]["ms_per_pose"] = round(result["sds"]["fwd_bwd_ms"] / args.batch, 4)
    result["tiny_vit_step"]["ms_per_image"] = round(result["tiny_vit_step"]["ms"] / args.vit_batch, 3)
    result["ratio_time_sds_over_tiny_vit_step"] = round(result["sds"]["fwd_bwd_ms"] / vit_ms, 5)
    if not args.skip_03b:
        for heads in (("pose", "depth", "normal"), ("pose",)):
            f = sapiens_03b_step_flops(1, "bfloat16", heads)
            result[f"sapiens_0.3b_step_{'+'.join(heads)}"] = {
                "image_size": [1024, 768],
                "flops_per_image": f,
                "flops_batch_16": 16 * f,
                "ratio_sds_call_over_step_per_image": result["sds"]["flops"] / f,
            }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
