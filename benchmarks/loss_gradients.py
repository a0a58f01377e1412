r"""How hard each loss term pulls on the shared backbone: value, weight and gradient norm per term.

  python benchmarks/loss_gradients.py --config configs/demo.py --stage stage2 --init runs/demo/stage1 \
      --batches 8 --out /tmp/loss_gradients.json [--config.stage2.loss.bone_ratio=0.1 ...]

For ``--batches`` training batches of the stage (its own mix, augmentation and objective, starting
from ``--init``: a workdir or weights directory, the weights the stage would start from), every
term of the objective is differentiated on its own with respect to the backbone parameters (patch
embedding, blocks, final norm: the part every head shares). The table gives per term the median
over batches of: the unweighted value, the weight in the config, the weighted value, the norm of
the weighted term's backbone gradient, and both relative to the supervised pose term. A term with
a gradient norm many times the pose term's decides where the backbone goes, whatever its value.

With a bone-ratio term, a second table asks whether the term can tell a right skeleton from a
wrong one: its value (median over batches) with the predicted or the ground-truth keypoints, and
the predicted or the ground-truth depth (the latter on samples that have depth: the synthetic ones).
A term whose value at the truth is no lower than at the prediction pulls the pose away from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.data.pipeline import train_dataset, train_iterator
from hyper_sapiens_jax.jobs import demo, finetune, inputs
from hyper_sapiens_jax.losses.geometry import backproject_keypoints, bone_ratio_loss
from hyper_sapiens_jax.models.weights import abstract_model
from hyper_sapiens_jax.training import adapters, reference, trainer
from hyper_sapiens_jax.training.batch import complete_batch
from hyper_sapiens_jax.training.objective import batch_normalizers, heatmap_keypoints


def term_gradients(config, stage: str, init: str, num_batches: int) -> dict[str, dict[str, float]]:
    """Median over batches of each term's value, weight, weighted value and backbone gradient norm."""
    sc = demo.shared_data(config[stage], config.get("data"))
    sc.init_from = init
    mcfg = adapters.model_config(sc)
    graphdef = nnx.graphdef(abstract_model(mcfg))
    backbone, rest = nnx.split_state(trainer.initial_params(sc, mcfg), nnx.PathContains("backbone"), ...)
    mix, _ = inputs.build_train_mix(sc)
    bone_ref = reference.compute(sc, mix, inputs.sample_config(sc)) if trainer.needs_bone_reference(sc) else None
    objective = trainer.make_objective(sc, bone_ref, finetune.prior_term(sc))
    weights = adapters.loss_weights(sc)

    def parts_fn(bb, batch, key):
        outputs = nnx.merge(graphdef, bb, rest)(batch["image"])
        normalizers = {**batch_normalizers(batch), "micro_batches": jnp.float32(1)}
        _, parts = objective(outputs, batch, normalizers, key, jnp.int32(0))
        return parts

    @jax.jit
    def one(bb, batch, key):
        parts = parts_fn(bb, batch, key)
        out = {}
        for name in parts:
            w = getattr(weights, name) * (adapters.sds_scale(sc, jnp.int32(0)) if name == "sds" else 1.0)
            grad = jax.grad(lambda b, w=w, name=name: w * parts_fn(b, batch, key)[name])(bb)
            out[name] = (parts[name], jnp.float32(w), optax.tree.norm(grad))
        return out

    @jax.jit
    def at_truth(bb, batch):
        outputs = nnx.merge(graphdef, bb, rest)(batch["image"])
        xy, conf = heatmap_keypoints(outputs["pose"], batch["image"].shape[1:3], weights.geometry_keypoints)
        true_xy, seen = batch["keypoints"], (batch["keypoints_visible"] > 0).astype(jnp.float32)
        real = batch["valid"] * batch["is_real"]
        with_depth = batch["valid"] * batch["has_depth"]
        ref = (jnp.asarray(bone_ref["mean"], jnp.float32), jnp.asarray(bone_ref["std"], jnp.float32))

        def value(kp, depth, c, w):
            pts = backproject_keypoints(kp, depth, batch["intrinsics"], near=weights.near, extent=weights.extent)
            return bone_ratio_loss(pts, c, w, *ref)

        return {
            "predicted keypoints, predicted depth (real)": value(xy, outputs["depth"], conf, real),
            "true keypoints, predicted depth (real)": value(true_xy, outputs["depth"], seen, real),
            "predicted keypoints, predicted depth (synthetic)": value(xy, outputs["depth"], conf, with_depth),
            "true keypoints, predicted depth (synthetic)": value(true_xy, outputs["depth"], seen, with_depth),
            "true keypoints, true depth (synthetic)": value(true_xy, batch["depth"], seen, with_depth),
        }

    it = train_iterator(train_dataset(mix, inputs.sample_config(sc), seed=sc.seed, num_batches=num_batches))
    rows: dict[str, list] = {}
    truth: dict[str, list] = {}
    for i in range(num_batches):
        host = {k: jnp.asarray(v) for k, v in next(it).items() if k != "source_id"}
        batch = complete_batch(host, heatmap_sigma=sc.data.heatmap_sigma)  # as the train step does
        for name, (value, w, g) in one(backbone, batch, jax.random.key(i)).items():
            rows.setdefault(name, []).append((float(value), float(w), float(g)))
        if bone_ref is not None and "depth" in mcfg.heads:
            for name, value in at_truth(backbone, batch).items():
                truth.setdefault(name, []).append(float(value))
    med = {name: np.median(np.array(v), axis=0) for name, v in rows.items()}
    pose_value, _, pose_grad = med["pose"]
    terms = {
        name: {
            "value": v,
            "weight": w,
            "weighted": v * w,
            "grad_norm": g,
            "weighted_vs_pose": v * w / pose_value,
            "grad_vs_pose": g / pose_grad,
        }
        for name, (v, w, g) in med.items()
    }
    return {"terms": terms, "bone_ratio_at_truth": {n: float(np.median(v)) for n, v in truth.items()}}


def main(argv: list[str] | None = None) -> int:
    """Print the two tables (``--help`` lists the flags); with ``--out``, write them as JSON."""
    p = cli.parser(__doc__, config=True)
    p.add_argument("--stage", default="stage2", help="which stage of the demo config")
    p.add_argument("--init", required=True, help="weights to start from (a workdir or weights directory)")
    p.add_argument("--batches", type=int, default=8, help="training batches to average over")
    p.add_argument("--out", help="optional JSON output")
    args = cli.parse(p, argv)
    result = term_gradients(args.config, args.stage, args.init, args.batches)
    print("| term | value | weight | weighted | weighted / pose | backbone grad norm | grad / pose |")
    print("|---|---|---|---|---|---|---|")
    for name, r in result["terms"].items():
        print(
            f"| {name} | {r['value']:.4g} | {r['weight']:g} | {r['weighted']:.4g} | {r['weighted_vs_pose']:.3g} | "
            f"{r['grad_norm']:.4g} | {r['grad_vs_pose']:.3g} |"
        )
    if result["bone_ratio_at_truth"]:
        print("\n| bone-ratio term (unweighted) with | value |\n|---|---|")
        for name, v in result["bone_ratio_at_truth"].items():
            print(f"| {name} | {v:.4g} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
