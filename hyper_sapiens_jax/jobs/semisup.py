"""The semi-supervised job (``config.job = 'semisup'``): NK-Sapiens' alignment stages on the fine-tuning loop.

  python -m hyper_sapiens_jax.main --config configs/semisup_stage1.py:cpu --workdir W \\
      --config.init_from=STAGE0_WORKDIR --config.prior_ckpt=PRIOR_WORKDIR

It is the fine-tuning job (``jobs/finetune.py``) with a ``training.trainer.Extension``: every global batch holds exactly
``config.batch_size`` labelled samples (``config.data.mix``, as in fine-tuning) and
``config.semisup.unlabeled_batch`` unlabelled ones (``config.data.unlabeled_images``, or the
testbed's unlabelled split), each seen in a weak and a strong view; the step is
``semisup.step.make_semisup_step``. Before the first step the job writes the kinematic reference
(``kinematic_reference.json``: the labelled crops' bone ratios, symmetry and joint angles, and their
limb lengths with the geometry teacher's depth) and loads the frozen prior (teacher B, L_dev) and
the frozen geometry teacher (``config.semisup.geometry_teacher``: 'copy' keeps the starting
model's weights as a second model; 'heads' uses the student's own depth / normal heads, which
``config.frozen_heads`` keeps frozen). Checkpoints, resumption, evaluation and logs are the loop's.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from hyper_sapiens_jax.data.catalog import Subset
from hyper_sapiens_jax.data.pipeline import eval_batches
from hyper_sapiens_jax.data.unlabeled import ViewPairTransform, unlabeled_dataset, zip_labeled_unlabeled
from hyper_sapiens_jax.jobs import finetune, inputs
from hyper_sapiens_jax.losses.geometry import bilinear_sample
from hyper_sapiens_jax.models.weights import abstract_model
from hyper_sapiens_jax.semisup.kinematics import REFERENCE_FILE, KinematicReference, compute_reference
from hyper_sapiens_jax.semisup.step import SemisupSpec, make_semisup_step
from hyper_sapiens_jax.sharding import param_shardings
from hyper_sapiens_jax.training import trainer
from hyper_sapiens_jax.training.batch import normalize_images

log = logging.getLogger(__name__)
UNLABELED_KEYS = ("u_weak", "u_strong", "u_view_affine", "u_view_flipped", "u_valid", "u_intrinsics")


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Train (or ``mode='eval'``: evaluate) a semi-supervised stage in ``workdir``; returns 0."""
    check_config(config)
    return finetune.run(config, workdir, mode, extension=extension)


def check_config(config: ml_collections.ConfigDict) -> SemisupSpec:
    """The config errors a semi-supervised run would otherwise meet deep inside (ValueError)."""
    spec = SemisupSpec.from_config(config)
    if config.micro_batches != 1:
        raise ValueError("config.micro_batches must be 1 for the semi-supervised step")
    if spec.needs_geometry:
        missing = [h for h in ("depth", "normal") if h not in tuple(config.model.heads)]
        if missing:
            raise ValueError(
                f"config.semisup.rigidity / orthogonality > 0 read the depth and normal heads, but "
                f"config.model.heads={tuple(config.model.heads)} lacks {missing}"
            )
        if spec.geometry_teacher == "heads":
            loose = [h for h in ("depth", "normal") if h not in tuple(config.get("frozen_heads", ()))]
            if loose:
                raise ValueError(
                    f"config.semisup.geometry_teacher='heads' needs the teacher heads frozen, but "
                    f"config.frozen_heads={tuple(config.get('frozen_heads', ()))} lacks {loose} "
                    "(trainable, weight decay would move them)"
                )
    return spec


def labelled_reference(
    config: ml_collections.ConfigDict, mix, sample_cfg, mcfg, params: nnx.State, max_samples: int = 512
) -> KinematicReference:
    """The kinematic reference of the labelled mix sources: ground-truth crop keypoints of up to
    ``max_samples`` deterministic crops (a seeded sample of each source's records) and the depth the
    starting model predicts at them (clamped at 0, as the rigidity loss reads it)."""
    graphdef = nnx.graphdef(abstract_model(mcfg))

    @jax.jit
    def depth_at(p, images, keypoints):  # (B, K) the model's relative depth at the keypoints
        depth = nnx.merge(graphdef, p)(normalize_images(images))["depth"]
        return jnp.maximum(bilinear_sample(depth, keypoints)[..., 0], 0.0)

    has_depth = "depth" in mcfg.heads
    tree = jax.device_put(params) if has_depth else None
    xy, vis, depth = [], [], []
    per_source = max(max_samples // max(len(mix), 1), 1)
    for entry in mix:
        sample = Subset(entry.source, per_source, seed=int(config.seed))
        for batch in eval_batches(sample, sample_cfg, min(config.eval_batch_size, per_source)):
            keep = (batch["valid"] > 0) & (batch["has_pose"] > 0)
            if has_depth:
                depth.append(np.asarray(depth_at(tree, batch["image"], batch["keypoints"]))[keep])
            xy.append(batch["keypoints"][keep])
            vis.append(batch["keypoints_visible"][keep])
    if not xy or sum(len(v) for v in xy) == 0:
        raise trainer.TrainingError("the labelled sources hold no poses for the kinematic reference")
    spec = SemisupSpec.from_config(config)
    h = sample_cfg.input_size[0]
    return compute_reference(
        np.concatenate(xy) / (h - 1),  # crop heights, the unit of the rigidity loss
        np.concatenate(vis),
        np.concatenate(depth) if depth else None,
        depth_scale=spec.depth_scale,
    )


def reference_inputs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What the kinematic reference depends on: a saved one is reused only when these match."""
    d = config.data
    return {
        "init_from": str(config.init_from),
        "depth_scale": float(config.semisup.depth_scale),
        "mix": dict(d.mix),
        "num_labeled": int(d.get("num_labeled", 0) or 0),
        "labeled_seed": int(d.get("labeled_seed", 0)),
        "seed": int(config.seed),
        "image_size": list(config.model.image_size),
    }


def load_or_compute_reference(config, workdir: Path, mix, sample_cfg, mcfg, start: nnx.State) -> KinematicReference:
    """``WORKDIR/kinematic_reference.json`` when it was made from the same inputs, else computed and
    written (by process 0, atomically: a temporary file renamed into place)."""
    path = Path(workdir) / REFERENCE_FILE
    inputs = reference_inputs(config)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise trainer.TrainingError(f"{path}: unreadable ({e}); delete it to recompute it") from None
        if saved.get("inputs") == inputs:
            return KinematicReference.load(path)
        log.info("%s was made from other inputs: recomputing it", path)
    reference = labelled_reference(config, mix, sample_cfg, mcfg, start)
    if jax.process_index() == 0:
        tmp = path.with_suffix(".tmp")
        reference.save(tmp, extra={"inputs": inputs})
        os.replace(tmp, path)
    return reference


def extension(*, config, workdir, mesh, mcfg, mix, paths, sample_cfg) -> trainer.Extension:
    """The semi-supervised additions to the fine-tuning loop (see the module docstring)."""
    spec = check_config(config)
    prior = None
    if spec.needs_prior:
        if not config.prior_ckpt:
            raise trainer.TrainingError(
                f"config.semisup.teacher={spec.teacher!r} / dev={spec.dev} need the diffusion prior: "
                "set config.prior_ckpt (a workdir of configs/prior.py)"
            )
        prior = finetune.load_prior_from(config.prior_ckpt)
    start = trainer.initial_params(config, mcfg)  # the starting model: the 'copy' teacher and the reference
    reference = load_or_compute_reference(config, Path(workdir), mix, sample_cfg, mcfg, start)
    log.info("kinematic reference: %d labelled poses (%s)", reference.num_poses, Path(workdir) / REFERENCE_FILE)

    unlabeled_paths = inputs.resolved_paths(config.data, ["unlabeled"])
    source = inputs.build_source("unlabeled", unlabeled_paths, config.data.skip_bad_records)
    count = int(config.semisup.unlabeled_batch)
    if count <= 0 or count % mesh.devices.size:
        raise ValueError(
            f"config.semisup.unlabeled_batch={count} must be a positive multiple of the {mesh.devices.size} devices"
        )
    log.info("source %-10s %6d records, %d per global batch (unlabelled)", "unlabeled", len(source), count)
    weak = ViewPairTransform.weak_params(config.semisup.get("weak_view"), sample_cfg.geometry)

    def dataset(labelled):
        unlabelled = unlabeled_dataset(
            source,
            sample_cfg,
            weak,
            seed=config.seed,
            count=count,
            num_batches=config.num_steps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        return zip_labeled_unlabeled(labelled, unlabelled)

    def make_step(graphdef, tx, objective_fn):
        return make_semisup_step(
            graphdef,
            tx,
            objective_fn,
            spec=spec,
            reference=reference,
            prior=prior,
            heatmap_sigma=config.data.heatmap_sigma,
            ema_decay=config.ema_decay,
        )

    consts: tuple[Any, ...] = ()
    shardings: tuple[Any, ...] = ()
    if spec.needs_geometry and spec.geometry_teacher == "copy":
        sh = param_shardings(start, mesh)
        consts, shardings = (trainer.put(start, sh),), (sh,)
    return trainer.Extension(
        make_step=make_step, consts=consts, const_shardings=shardings, dataset=dataset, batch_keys=UNLABELED_KEYS
    )
