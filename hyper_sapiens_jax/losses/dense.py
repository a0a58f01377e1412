"""Supervised dense losses (docs/design.md §4), float32, masked per sample.

Shapes: B batch, (h, w) heatmap size, (H, W) input size, K keypoints. ``has_*`` are (B,) 0/1 flags:
a sample without that target adds nothing to the loss or its gradient, and the loss is averaged
over the samples that have it (0 when none does). ``normalizer`` replaces that count: gradient
accumulation passes the whole batch's count so that micro-batches add up to the big batch exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyper_sapiens_jax.losses.geometry import safe_norm
from hyper_sapiens_jax.precision import widen

Array = jax.Array
_F32 = jnp.float32


def _masked_mean(per_sample: Array, mask: Array, normalizer: Array | None = None) -> Array:
    """Mean of per-sample values (B,) over mask (B,) (or sum / ``normalizer``); 0 when empty."""
    mask = widen(mask)
    count = jnp.sum(mask) if normalizer is None else normalizer
    return jnp.sum(per_sample * mask) / jnp.maximum(count, 1.0)


def pose_heatmap_loss(
    pred: Array, target: Array, target_weight: Array, has_pose: Array, normalizer: Array | None = None
) -> Array:
    """Per-pixel MSE x per-keypoint target weight (mmpose KeypointMSELoss with target weights).

    pred, target: (B, h, w, K); target_weight: (B, K); has_pose: (B,). With every flag set this is
    exactly ``mean((pred - target)^2 * weight)`` over B, h, w, K.
    """
    sq = jnp.square(widen(pred) - widen(target)) * widen(target_weight)[:, None, None, :]
    return _masked_mean(jnp.mean(sq, axis=(1, 2, 3)), has_pose, normalizer)


def keypoint_coordinate_loss(
    pred_xy: Array,
    target_xy: Array,
    target_weight: Array,
    has_pose: Array,
    unit: float = 1.0,
    normalizer: Array | None = None,
) -> Array:
    """L1 distance of decoded keypoints to the truth, per visible keypoint (integral regression).

    pred_xy, target_xy: (B, K, 2) in input pixels; target_weight: (B, K); ``unit``: pixels per unit
    (the heatmap stride makes it heatmap pixels). The heatmap MSE changes by only ~1.5% of a
    keypoint's loss for a half-pixel shift of a sigma-2 peak; this term is linear in the offset.
    """
    err = jnp.sum(jnp.abs(widen(pred_xy) - widen(target_xy)), -1) / unit  # (B, K)
    w = widen(target_weight)
    per_sample = jnp.sum(err * w, -1) / jnp.maximum(jnp.sum(w, -1), 1.0)
    return _masked_mean(per_sample, has_pose * (jnp.sum(w, -1) > 0), normalizer)


def depth_silog_loss(
    pred: Array,
    target: Array,
    has_depth: Array,
    eps: float = 1e-6,
    lambd: float = 0.5,
    normalizer: Array | None = None,
    pred_floor: float = 1e-3,
) -> Array:
    """Scale-invariant log loss sqrt(mean(d^2) - lambd * mean(d)^2), d = log(gt) - log(pred).

    pred, target: (B, H, W, 1) relative depth (target: person in [0, 1], background -1). Computed
    per sample over its pixels with gt > eps (each image has its own unknown depth scale), then
    averaged over the samples with depth. Predictions are floored at ``pred_floor`` before the log:
    an untrained head predicts values near 0 where d log / d pred = 1 / pred explodes, which makes
    the gradient (and its float32 sum) ill-conditioned.
    """
    pred = widen(pred)[..., 0]
    target = widen(target)[..., 0]
    valid = (target > eps).astype(_F32)
    n = jnp.maximum(valid.sum(axis=(1, 2)), 1.0)
    d = (jnp.log(jnp.maximum(target, eps)) - jnp.log(jnp.maximum(pred, pred_floor))) * valid
    mean_d = d.sum(axis=(1, 2)) / n
    mean_d2 = jnp.square(d).sum(axis=(1, 2)) / n
    per_sample = jnp.sqrt(jnp.maximum(mean_d2 - lambd * jnp.square(mean_d), 0.0) + 1e-12)
    has = widen(has_depth) * (valid.sum(axis=(1, 2)) > 0)
    return _masked_mean(per_sample, has, normalizer)


def normal_loss(pred: Array, target: Array, has_normal: Array, normalizer: Array | None = None) -> Array:
    """L1 + (1 - cos) between predicted and target normals over valid (non-zero target) pixels.

    pred, target: (B, h, w, 3); has_normal: (B,). L1 is the mean absolute difference per component.
    """
    pred = widen(pred)
    target = widen(target)
    valid = (jnp.sum(jnp.abs(target), axis=-1) > 0).astype(_F32)
    n = jnp.maximum(valid.sum(axis=(1, 2)), 1.0)
    l1 = jnp.mean(jnp.abs(pred - target), axis=-1)
    cos = jnp.sum(pred * target, -1) / (safe_norm(pred) * safe_norm(target) + 1e-6)
    per_sample = ((l1 + 1.0 - cos) * valid).sum(axis=(1, 2)) / n
    has = widen(has_normal) * (valid.sum(axis=(1, 2)) > 0)
    return _masked_mean(per_sample, has, normalizer)
