"""Training-time pose augmentation: joint dropout, then normalisation, rotation and mirroring.

Dropout comes *before* normalisation on purpose: a pose missing its hips or shoulders must be
normalised with the fallbacks, exactly as a partially visible predicted pose will be under SDS.
All functions are jnp and run inside the jitted train step. Shapes: xy (N, K, 2), visible (N, K).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import KEYPOINT_SUBSETS, flip_permutation
from hyper_sapiens_jax.prior import normalize as norm


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """What the train step does to each sampled skeleton."""

    rotate: bool = True
    max_rotation_deg: float = 180.0  # infants lie in any orientation
    flip: bool = True  # left/right mirror with probability 0.5
    dropout_prob: float = 0.5  # fraction of poses with random joint dropout ...
    dropout_max_rate: float = 0.5  # ... each at a rate drawn from U(0, max_rate)
    subset_prob: float = 0.2  # fraction of poses cut to ``subset`` (MINI-RGBD's 13 points)
    subset: str = "common13"
    min_visible: int = 2  # dropout that leaves fewer joints is undone


def drop_joints(rng: jax.Array, visible: jax.Array, spec: AugmentSpec) -> jax.Array:
    """A new visibility (N, K): each pose kept, cut to the subset, or randomly thinned."""
    n, k = visible.shape
    kind_key, rate_key, drop_key = jax.random.split(rng, 3)
    u = jax.random.uniform(kind_key, (n, 1))
    subset = np.zeros(k, np.float32)
    subset[list(KEYPOINT_SUBSETS[spec.subset])] = 1.0
    rate = jax.random.uniform(rate_key, (n, 1), maxval=spec.dropout_max_rate)
    thinned = (jax.random.uniform(drop_key, (n, k)) >= rate).astype(jnp.float32)
    mask = jnp.where(
        u < spec.subset_prob,
        jnp.asarray(subset)[None],
        jnp.where(u < spec.subset_prob + spec.dropout_prob, thinned, 1.0),
    )
    dropped = visible * mask
    enough = jnp.sum(dropped, -1, keepdims=True) >= spec.min_visible
    return jnp.where(enough, dropped, visible)


def training_poses(
    rng: jax.Array, xy: jax.Array, visible: jax.Array, norm_spec: norm.NormSpec, spec: AugmentSpec
) -> tuple[jax.Array, jax.Array]:
    """Raw skeletons -> augmented normalised poses z (N, K, 2) and their visibility (N, K)."""
    drop_key, rot_key, flip_key = jax.random.split(rng, 3)
    n = xy.shape[0]
    v = drop_joints(drop_key, visible, spec) if spec.dropout_prob + spec.subset_prob > 0 else visible
    z, _ = norm.normalize(xy, v, norm_spec)
    if spec.rotate:
        limit = math.radians(spec.max_rotation_deg)
        angle = jax.random.uniform(rot_key, (n,), minval=-limit, maxval=limit)
        if norm_spec.align_torso:  # aligned poses stay upright; those without a torso turn freely
            angle = jnp.where(norm.torso_length(xy, v)[1], 0.0, angle)
        z = norm.rotate(z, angle)
    if spec.flip:
        zf, vf = norm.flip(z, v, flip_permutation(xy.shape[1]))
        mirror = jax.random.bernoulli(flip_key, 0.5, (n,))
        z, v = jnp.where(mirror[:, None, None], zf, z), jnp.where(mirror[:, None], vf, v)
    return z, v
