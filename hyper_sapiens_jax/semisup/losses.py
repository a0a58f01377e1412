"""The losses on unlabelled images (float32, each masked per sample by ``weight`` (B,)).

  consistency_loss      L_cons: the student's strong-view heatmaps against heatmaps rendered at the
                        teacher's (aligned) pseudo-label keypoints, the supervised MSE's form
  deviation_loss        L_dev = ‖ŷ − sg(Denoise(ŷ, t))‖², in the prior's normalised frame (centred on
                        the mid-hip, scaled by the torso: scale-invariant), mean over visible joints
  depth_rigidity_loss   |ℓ̂_b − ℓ̄_b| where ℓ_b = sqrt(‖p_i − p_j‖² + a (D(p_i) − D(p_j))²) with p in
                        units of the crop height and D the frozen teacher's relative depth; ℓ̂ is ℓ over
                        the pose's mean limb length (scale-invariant), ℓ̄ the labelled set's mean
  normal_orthogonality_loss  (d_b · n_b)²: a limb's 3D direction (keypoints back-projected with the
                        frozen depth) against the frozen surface normal at the limb's midpoint: limbs
                        run along the body surface, so the two are orthogonal

Shapes: heatmaps (B, h, w, K), xy (B, K, 2) input pixels, visible (B, K) 0/1, depth (B, H, W, 1),
normal (B, H/2, W/2, 3) unit camera-frame vectors, intrinsics (B, 3, 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.codec import encode_udp_heatmaps_device
from hyper_sapiens_jax.losses import pose_heatmap_loss
from hyper_sapiens_jax.losses.geometry import RATIO_BONES, backproject_keypoints, bilinear_sample, safe_norm
from hyper_sapiens_jax.semisup.kinematics import limb_lengths

Array = jax.Array
_A = np.array([i for i, _ in RATIO_BONES])
_B = np.array([j for _, j in RATIO_BONES])


def _weighted_mean(values: Array, w: Array) -> Array:
    return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1e-6)


def bone_weights(visible: Array, weight: Array) -> Array:
    """(B, nB) weight of each body bone: 1 where both end joints are visible (``visible`` (B, K),
    stop-gradient), times the sample's weight."""
    v = jax.lax.stop_gradient(visible.astype(jnp.float32))
    return v[:, _A] * v[:, _B] * weight.astype(jnp.float32)[:, None]


def consistency_loss(
    student: Array, target_xy: Array, target_weight: Array, weight: Array, sigma: float, input_wh: tuple[int, int]
) -> Array:
    """L_cons: heatmap MSE (B, h, w, K) against UDP heatmaps of ``sigma`` rendered at ``target_xy``
    (B, K, 2) with per-joint ``target_weight`` (B, K); the mean over the samples with weight > 0."""
    h, w = student.shape[1:3]
    target = encode_udp_heatmaps_device(target_xy, target_weight, input_wh, (w, h), sigma)
    return pose_heatmap_loss(student, target, target_weight, weight, jnp.sum(weight))


def deviation_loss(z: Array, z_hat: Array, visible: Array, weight: Array) -> Array:
    """L_dev: squared distance (B, K, 2) of the normalised pose to its prior refinement (held fixed),
    averaged over the visible joints of the weighted samples."""
    sq = jnp.sum(jnp.square(z - jax.lax.stop_gradient(z_hat)), -1)
    return _weighted_mean(sq, visible.astype(jnp.float32) * weight.astype(jnp.float32)[:, None])


def depth_rigidity_loss(
    xy: Array,
    depth: Array,
    visible: Array,
    weight: Array,
    limb_mean: Array,
    depth_scale: float,
) -> Array:
    """Normalised limb lengths with depth against the labelled set's ``limb_mean`` (nB,); L1 over the
    bones whose ends are visible and on the person (depth > 0: the depth head is trained on the
    person only, its background values are arbitrary). The pose's scale is estimated from those
    bones against the reference (``kinematics.limb_lengths``), so a partly visible pose is judged
    on the same scale as a whole one. xy (B, K, 2) input pixels, depth (B, H, W, 1) relative depth."""
    h = depth.shape[1]
    d_k = bilinear_sample(depth, xy)[..., 0]  # (B, K)
    on_person = jax.lax.stop_gradient((d_k > 0).astype(jnp.float32))
    w = bone_weights(visible * on_person, weight)
    ref = jnp.asarray(limb_mean, jnp.float32)
    lengths = limb_lengths(xy / (h - 1), jnp.maximum(d_k, 0.0), depth_scale, weight=w, reference=ref)
    return _weighted_mean(jnp.abs(lengths - ref), w)


def normal_orthogonality_loss(
    xy: Array,
    depth: Array,
    normal: Array,
    intrinsics: Array,
    visible: Array,
    weight: Array,
    *,
    near: float,
    extent: float,
) -> Array:
    """Mean (d · n)² over the body bones: d the unit 3D limb direction (back-projected with ``depth``),
    n the unit ``normal`` sampled at the limb's midpoint (the normal map is at half resolution)."""
    points = backproject_keypoints(xy, depth, intrinsics, near=near, extent=extent)  # (B, K, 3)
    d = points[:, _B] - points[:, _A]
    d = d / safe_norm(d, keepdims=True)
    h, w = depth.shape[1:3]
    nh, nw = normal.shape[1:3]
    scale = jnp.asarray([(nw - 1) / (w - 1), (nh - 1) / (h - 1)], jnp.float32)
    mid = 0.5 * (xy[:, _A] + xy[:, _B]) * scale
    n = bilinear_sample(normal, mid)
    n = n / safe_norm(n, keepdims=True)
    return _weighted_mean(jnp.square(jnp.sum(d * n, -1)), bone_weights(visible, weight))
