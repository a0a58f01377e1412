"""The training objective: supervised pose/depth/normal losses + geometry consistency (+ the prior).

``objective(outputs, batch, ...)`` returns (total, parts). Supervised terms are normalised by counts
of the *whole* batch (``batch_normalizers``), so gradient accumulation over micro-batches equals the
big batch exactly; the geometry and prior terms normalise within each micro-batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hyper_sapiens_jax.losses import (
    bone_ratio_loss,
    depth_normal_consistency,
    depth_silog_loss,
    keypoint_coordinate_loss,
    limb_rigidity_loss,
    normal_loss,
    pose_heatmap_loss,
    soft_argmax,
)
from hyper_sapiens_jax.losses.geometry import backproject_keypoints, peak_soft_argmax
from hyper_sapiens_jax.precision import widen

Array = jax.Array
# sds(xy (B, K, 2) input pixels, visible (B, K), weight (B,), key) -> scalar
PriorLoss = Callable[[Array, Array, Array, Array], Array]


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of each term. Stage 2 uses geometry (beta = 0.1) and the prior (alpha = 0.01)."""

    pose: float = 1.0
    coord: float = 0.0  # keypoint coordinate L1 (heatmap pixels) of the decoded heatmaps
    depth: float = 1.0
    normal: float = 1.0
    depth_normal: float = 0.0  # beta: depth-normal consistency
    bone_ratio: float = 0.0  # beta: bone-ratio consistency
    limb_rigidity: float = 0.0  # optional
    sds: float = 0.0  # alpha: prior
    geometry_on_real_only: bool = True
    near: float = 0.7  # nominal camera distance (m) that makes relative depth metric
    extent: float = 0.25  # nominal depth extent (m) of an infant
    keypoint_conf: float = 0.3  # soft-argmax confidence above which a joint counts as visible
    # Keypoints of the geometry and prior terms: 'soft' (soft-argmax over the whole heatmap) or 'peak'
    # (soft-argmax in a 5x5 window around the argmax: gradients move peaks only locally).
    geometry_keypoints: str = "soft"
    # Which predictions the bone-ratio / rigidity terms may move: 'both', 'keypoints' (depth under
    # stop-gradient) or 'depth' (keypoints under stop-gradient).
    bone_ratio_grad: str = "both"


def batch_normalizers(batch: dict[str, Array]) -> dict[str, Array]:
    """Sample counts per supervised term over the whole batch (padding excluded)."""
    valid = batch["valid"]
    return {k: jnp.sum(batch[f"has_{k}"] * valid) for k in ("pose", "depth", "normal")}


def heatmap_keypoints(
    heatmaps: jax.Array, image_hw: tuple[int, int], mode: str = "soft"
) -> tuple[jax.Array, jax.Array]:
    """Differentiable keypoints for the geometry and prior terms: heatmaps (B, h, w, K) ->
    (xy (B, K, 2) in input pixels (UDP scale), confidence (B, K) in [0, 1], stop-gradient).
    ``mode`` 'soft': soft-argmax over the whole map; 'peak': within a window at the peak."""
    if mode not in ("soft", "peak"):
        raise ValueError(f"loss.geometry_keypoints must be 'soft' or 'peak', got {mode!r}")
    coords, conf = (peak_soft_argmax if mode == "peak" else soft_argmax)(heatmaps)
    h, w = image_hw
    scale = jnp.array([(w - 1) / (heatmaps.shape[2] - 1), (h - 1) / (heatmaps.shape[1] - 1)], jnp.float32)
    return coords * scale, jnp.clip(jax.lax.stop_gradient(conf), 0.0, 1.0)


def objective(
    outputs: dict[str, Array],
    batch: dict[str, Array],
    weights: LossWeights,
    normalizers: dict[str, Array],
    bone_ref: tuple[Array, Array] | None = None,
    prior_loss: PriorLoss | None = None,
    key: Array | None = None,
    scales: dict[str, Array] | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Total loss and its parts (all float32 scalars) for one (micro-)batch.

    ``scales`` multiplies named weights by traced values (e.g. {'sds': annealing factor}); a term
    whose static weight is 0 is not computed at all."""
    valid = batch["valid"]
    parts: dict[str, Array] = {}
    if "pose" in outputs:
        parts["pose"] = pose_heatmap_loss(
            outputs["pose"], batch["heatmaps"], batch["target_weight"], batch["has_pose"] * valid, normalizers["pose"]
        )
    needs_keypoints = weights.bone_ratio or weights.limb_rigidity or weights.sds
    if (weights.coord or needs_keypoints) and "pose" in outputs:  # decoded once for every user
        xy, conf = heatmap_keypoints(outputs["pose"], batch["image"].shape[1:3], weights.geometry_keypoints)
    if weights.coord and "pose" in outputs:
        stride = (batch["image"].shape[2] - 1) / (outputs["pose"].shape[2] - 1)
        parts["coord"] = keypoint_coordinate_loss(
            xy, batch["keypoints"], batch["target_weight"], batch["has_pose"] * valid, stride, normalizers["pose"]
        )
    if "depth" in outputs:
        parts["depth"] = depth_silog_loss(
            outputs["depth"], batch["depth"], batch["has_depth"] * valid, normalizer=normalizers["depth"]
        )
    if "normal" in outputs:
        parts["normal"] = normal_loss(
            outputs["normal"], batch["normal"], batch["has_normal"] * valid, normalizers["normal"]
        )
    geo_w = valid * (batch["is_real"] if weights.geometry_on_real_only else 1.0)
    if weights.depth_normal and "depth" in outputs and "normal" in outputs:
        parts["depth_normal"] = depth_normal_consistency(
            outputs["depth"], outputs["normal"], batch["intrinsics"], geo_w, near=weights.near, extent=weights.extent
        )
    if needs_keypoints and "pose" in outputs:
        if (weights.bone_ratio or weights.limb_rigidity) and "depth" in outputs:
            grad = weights.bone_ratio_grad
            if grad not in ("both", "keypoints", "depth"):
                raise ValueError(f"loss.bone_ratio_grad must be 'both', 'keypoints' or 'depth', got {grad!r}")
            sg = jax.lax.stop_gradient
            pts = backproject_keypoints(
                sg(xy) if grad == "depth" else xy,
                sg(outputs["depth"]) if grad == "keypoints" else outputs["depth"],
                batch["intrinsics"],
                near=weights.near,
                extent=weights.extent,
            )
            if weights.bone_ratio and bone_ref is not None:
                parts["bone_ratio"] = bone_ratio_loss(pts, conf, geo_w, *bone_ref)
            if weights.limb_rigidity:
                parts["limb_rigidity"] = limb_rigidity_loss(pts, conf, geo_w)
        if weights.sds and prior_loss is not None:
            parts["sds"] = prior_loss(xy, (conf > weights.keypoint_conf).astype(jnp.float32), geo_w, key)
    # Terms normalised within the micro-batch: average (not sum) them over the micro-batches.
    per_micro = normalizers.get("micro_batches", 1.0)
    for name in ("depth_normal", "bone_ratio", "limb_rigidity", "sds"):
        if name in parts:
            parts[name] = parts[name] / per_micro
    scales = scales or {}
    total = sum(getattr(weights, name) * scales.get(name, 1.0) * value for name, value in parts.items())
    return widen(total), parts
