"""The semi-supervised train step: L_sup + λ_cons L_cons + λ_dev L_dev + λ_rig L_rig + λ_orth L_orth.

One student forward covers the labelled images and the unlabelled strong views together. Teacher A
(the EMA weights) sees the weak views; the frozen geometry teacher gives depth and normals on the
strong views, either from a frozen copy of the starting model (``geometry_teacher='copy'``, passed
to the step as ``geometry``) or from the student's own frozen depth / normal heads on its shared
backbone (``'heads'``). Every teacher output is stop-gradient (``semisup_loss`` takes the EMA and
geometry weights as arguments so a test can check that their gradients are exactly zero).

Batch keys: the labelled ``training.batch.STEP_KEYS`` plus ``u_weak``, ``u_strong`` (B_u, H, W, 3)
uint8, ``u_view_affine`` (B_u, 2, 3), ``u_view_flipped``, ``u_valid`` (B_u,), ``u_intrinsics``
(B_u, 3, 3): the strong view's camera.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from hyper_sapiens_jax.semisup import losses as L
from hyper_sapiens_jax.semisup.kinematics import KinematicReference, kinematic_score
from hyper_sapiens_jax.semisup.teachers import align_keypoints, inside, refine_with_prior, select_targets
from hyper_sapiens_jax.training.batch import complete_batch, normalize_images
from hyper_sapiens_jax.training.objective import batch_normalizers, heatmap_keypoints
from hyper_sapiens_jax.training.state import TrainState
from hyper_sapiens_jax.training.step import Objective, apply_gradients, train_metrics

sg = jax.lax.stop_gradient
TEACHERS = ("ema", "hybrid")
GEOMETRY_TEACHERS = ("copy", "heads")


@dataclasses.dataclass(frozen=True)
class SemisupSpec:
    """``config.semisup`` as a static spec (see configs/semisup_stage1.py for each field's meaning)."""

    teacher: str = "hybrid"  # 'ema': the plain mean teacher (A, no gate); 'hybrid': A or B by the gate
    conf_threshold: float = 0.5  # teacher A's mean joint peak above which it may be used
    kps_threshold: float = 0.7  # teacher A's KPS above which it may be used
    keypoint_conf: float = 0.3  # a joint counts as visible above this heatmap peak
    denoise_t: float = 0.1  # teacher B / L_dev: noise level t as a fraction of the prior's T
    denoise_steps: int = 5  # DDIM moves back from t
    cons: float = 1.0  # λ_cons
    dev: float = 0.0  # λ_dev
    rigidity: float = 0.0  # λ_geo on the limb rigidity term
    orthogonality: float = 0.0  # λ_geo on the normal orthogonality term
    geometry_teacher: str = "copy"
    depth_scale: float = 1.0  # a in sqrt(|Δp|² + a ΔD²) (p in crop heights, D relative depth)
    near: float = 0.7
    extent: float = 0.25

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ValueError(f"config.semisup.teacher={self.teacher!r} is not one of {TEACHERS}")
        if self.geometry_teacher not in GEOMETRY_TEACHERS:
            raise ValueError(
                f"config.semisup.geometry_teacher={self.geometry_teacher!r} is not one of {GEOMETRY_TEACHERS}"
            )

    @property
    def needs_prior(self) -> bool:
        return self.teacher == "hybrid" or self.dev > 0

    @property
    def needs_geometry(self) -> bool:
        return self.rigidity > 0 or self.orthogonality > 0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> SemisupSpec:
        s = config.semisup
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(s.keys()) - fields - {"unlabeled_batch", "weak_view"})
        if unknown:
            raise ValueError(f"unknown config.semisup fields {unknown}; known: {sorted(fields)}")
        return cls(**{k: v for k, v in s.items() if k in fields})


def semisup_loss(
    params: Any,
    ema: Any,
    frozen: Any,
    geometry: Any,
    batch: dict[str, jax.Array],
    key: jax.Array,
    step: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    objective: Objective,
    spec: SemisupSpec,
    reference: KinematicReference,
    prior,
    heatmap_sigma: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total, parts) of one semi-supervised batch (already completed: normalised labelled images
    and heatmaps). ``ema`` and ``geometry`` are teacher weights: they never receive gradients."""
    _, k_obj, k_refine = jax.random.split(key, 3)
    n_l = batch["image"].shape[0]
    strong, weak = normalize_images(batch["u_strong"]), normalize_images(batch["u_weak"])
    h, w = strong.shape[1:3]
    uw = batch["u_valid"].astype(jnp.float32)

    student = nnx.merge(graphdef, params, frozen)
    # No dropout: only the depth / normal heads have it, and here they are frozen teachers.
    out = student(jnp.concatenate([batch["image"], strong]))
    out_l = {k: v[:n_l] for k, v in out.items()}
    out_u = {k: v[n_l:] for k, v in out.items()}
    total, parts = objective(out_l, batch, batch_normalizers(batch), k_obj, step)

    # Teacher A: the EMA student on the weak view, mapped into the strong view.
    teacher = nnx.merge(graphdef, sg(ema), sg(frozen))
    xy_a, conf_a = heatmap_keypoints(sg(teacher(weak)["pose"]), (h, w), "peak")
    xy_a, conf_a = align_keypoints(sg(xy_a), conf_a, batch["u_view_affine"], batch["u_view_flipped"])
    kps_a = kinematic_score(xy_a, conf_a > spec.keypoint_conf, reference)

    # The student's strong-view keypoints (at the peaks: a whole-map soft-argmax drifts toward the
    # map's centre when the peak is low); teacher B refines them with the prior.
    xy_s, conf_s = heatmap_keypoints(out_u["pose"], (h, w), "peak")
    vis_s = (conf_s > spec.keypoint_conf).astype(jnp.float32)
    refined = (
        refine_with_prior(prior, xy_s, vis_s, k_refine, spec.denoise_t, spec.denoise_steps)
        if spec.needs_prior
        else None
    )
    targets = select_targets(
        xy_a,
        conf_a,
        kps_a,
        xy_a if refined is None else refined.xy_hat,
        vis_s,
        conf_threshold=spec.conf_threshold,
        kps_threshold=spec.kps_threshold,
        keypoint_conf=spec.keypoint_conf,
        gate=spec.teacher == "hybrid",
    )
    target_weight = targets.weight * inside(targets.xy, (w, h))
    parts["cons"] = L.consistency_loss(out_u["pose"], targets.xy, target_weight, uw, heatmap_sigma, (w, h))
    total = total + spec.cons * parts["cons"]
    if spec.dev > 0:
        parts["dev"] = L.deviation_loss(refined.z, refined.z_hat, vis_s, uw)
        total = total + spec.dev * parts["dev"]
    if spec.needs_geometry:
        if spec.geometry_teacher == "copy":
            geo = nnx.merge(graphdef, sg(geometry))(strong)
        else:
            geo = out_u
        depth, normal = sg(geo["depth"]), sg(geo["normal"])
        if spec.rigidity > 0:
            parts["rigidity"] = L.depth_rigidity_loss(
                xy_s, depth, vis_s, uw, jnp.asarray(reference.limb_mean), spec.depth_scale
            )
            total = total + spec.rigidity * parts["rigidity"]
        if spec.orthogonality > 0:
            parts["orthogonality"] = L.normal_orthogonality_loss(
                xy_s, depth, normal, batch["u_intrinsics"], vis_s, uw, near=spec.near, extent=spec.extent
            )
            total = total + spec.orthogonality * parts["orthogonality"]
    n_u = jnp.maximum(jnp.sum(uw), 1.0)
    parts["from_a"] = jnp.sum(targets.from_a * uw) / n_u  # the fraction of samples teacher A labels
    parts["kps_a"] = jnp.sum(kps_a * uw) / n_u
    parts["conf_a"] = jnp.sum(jnp.mean(conf_a, -1) * uw) / n_u
    return jnp.asarray(total, jnp.float32), parts


# Parts that are diagnostics, not loss terms (reported, never weighted).
DIAGNOSTICS = ("from_a", "kps_a", "conf_a")


def make_semisup_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    objective: Objective,
    *,
    spec: SemisupSpec,
    reference: KinematicReference,
    prior,
    heatmap_sigma: float,
    ema_decay: float,
) -> Callable[[TrainState, dict, jax.Array, Any], tuple[TrainState, dict]]:
    """``step(state, batch, key, geometry) -> (state, metrics)`` (jit it with donated state);
    ``geometry`` is the frozen copy's parameter tree ('copy') or None ('heads')."""

    def loss_fn(params, state, geometry, batch, key):
        return semisup_loss(
            params,
            state.ema,
            state.frozen,
            geometry,
            batch,
            key,
            state.step,
            graphdef=graphdef,
            objective=objective,
            spec=spec,
            reference=reference,
            prior=prior,
            heatmap_sigma=heatmap_sigma,
        )

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict, key: jax.Array, geometry: Any = None):
        batch = complete_batch(batch, heatmap_sigma)
        (loss, parts), grads = grad_fn(state.params, state, geometry, batch, key)
        return apply_gradients(state, grads, tx, ema_decay), train_metrics(loss, parts, grads)

    return step
