"""Geometry losses tying pose, depth and normals together (float32, jit-friendly, no host syncs).

Camera convention as in ``data/geometry.py``: OpenCV frame (x right, y down, z forward), normals
facing the camera. ``intrinsics`` are per-sample 3x3 matrices of the *crop* (input pixels):
``ray(u, v) = inv(K) @ [u, v, 1]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyper_sapiens_jax.data.keypoints import COCO17_BODY_BONES, mirrored_bone_pairs
from hyper_sapiens_jax.precision import widen

Array = jax.Array
_F32 = jnp.float32

# Bones whose length ratios are constrained; lengths are taken relative to their mean (scale-free).
RATIO_BONES = COCO17_BODY_BONES
# Left/right pairs of RATIO_BONES indices that limb rigidity keeps equal in length.
SYMMETRIC_PAIRS = mirrored_bone_pairs(RATIO_BONES)


def safe_norm(x: Array, axis: int = -1, keepdims: bool = False, eps: float = 1e-12) -> Array:
    """Euclidean norm whose gradient stays finite at 0 (``jnp.linalg.norm``'s is NaN there)."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims) + eps)


def soft_argmax(heatmaps: Array, beta: float = 20.0) -> tuple[Array, Array]:
    """Differentiable keypoints from heatmaps (B, h, w, K) -> (coords (B, K, 2) as (x, y) in heatmap
    pixels, confidence (B, K) = the heatmap maximum).

    ``beta`` sharpens softmax(beta * heatmap): on unit-peak Gaussian heatmaps (sigma 2 at 64x48 or
    6 at 256x192) 20 is within 0.05 px of the true centre; much lower drifts toward the map's
    centre, much higher snaps to the integer argmax.
    """
    b, h, w, k = heatmaps.shape
    logits = beta * widen(heatmaps).reshape(b, h * w, k)
    prob = jax.nn.softmax(logits, axis=1).reshape(b, h, w, k)
    x = jnp.einsum("bhwk,w->bk", prob, jnp.arange(w, dtype=_F32))
    y = jnp.einsum("bhwk,h->bk", prob, jnp.arange(h, dtype=_F32))
    return jnp.stack([x, y], -1), widen(heatmaps).max(axis=(1, 2))


def peak_soft_argmax(heatmaps: Array, radius: int = 2, beta: float = 20.0) -> tuple[Array, Array]:
    """Keypoints refined around each heatmap's peak: (B, h, w, K) -> (coords (B, K, 2) (x, y) in
    heatmap pixels, confidence (B, K) = the maximum).

    The integer argmax (no gradient) plus the soft-argmax offset inside a (2r+1)^2 window around it.
    Unlike ``soft_argmax`` over the whole map, a gradient on the coordinates can only move the peak
    locally: it cannot be met by reshaping the background of the map, whose mass otherwise pulls
    the soft-argmax toward the map's centre whenever the peak is low.
    """
    b, h, w, k = heatmaps.shape
    hm = widen(heatmaps).transpose(0, 3, 1, 2).reshape(b * k, h, w)
    flat = jnp.argmax(hm.reshape(b * k, h * w), axis=1)
    py, px = flat // w, flat % w
    pad = jnp.pad(hm, ((0, 0), (radius, radius), (radius, radius)), constant_values=-jnp.inf)
    size = 2 * radius + 1
    window = jax.vmap(lambda m, y, x: jax.lax.dynamic_slice(m, (y, x), (size, size)))(pad, py, px)
    prob = jax.nn.softmax(beta * window.reshape(b * k, -1), axis=1).reshape(b * k, size, size)
    offsets = jnp.arange(size, dtype=_F32) - radius
    dx = jnp.einsum("nij,j->n", prob, offsets)
    dy = jnp.einsum("nij,i->n", prob, offsets)
    coords = jnp.stack([widen(px) + dx, widen(py) + dy], -1).reshape(b, k, 2)
    return coords, hm.max(axis=(1, 2)).reshape(b, k)


def pixel_rays(intrinsics: Array, height: int, width: int) -> Array:
    """Per-pixel camera rays (B, H, W, 3) with z = 1 for crop intrinsics (B, 3, 3)."""
    u, v = jnp.meshgrid(jnp.arange(width, dtype=_F32), jnp.arange(height, dtype=_F32))
    pix = jnp.stack([u, v, jnp.ones_like(u)], -1)  # (H, W, 3)
    rays = jnp.einsum("bij,hwj->bhwi", jnp.linalg.inv(widen(intrinsics)), pix)
    return rays / rays[..., 2:3]


def normals_from_depth(depth: Array, intrinsics: Array, valid: Array | None = None) -> tuple[Array, Array]:
    """Unit normals from metric depth: (B, H, W) + crop intrinsics (B, 3, 3) -> ((B, H, W, 3), mask (B, H, W)).

    Central differences of the back-projected points; border pixels and pixels whose neighbours
    are not ``valid`` get mask 0. Normals are turned to face the camera.
    """
    b, h, w = depth.shape
    pts = widen(depth)[..., None] * pixel_rays(intrinsics, h, w)
    du = jnp.zeros_like(pts).at[:, :, 1:-1].set(pts[:, :, 2:] - pts[:, :, :-2])
    dv = jnp.zeros_like(pts).at[:, 1:-1].set(pts[:, 2:] - pts[:, :-2])
    n = jnp.cross(dv, du)
    n = n / safe_norm(n, keepdims=True, eps=1e-30)
    n = jnp.where(jnp.sum(n * pts, -1, keepdims=True) > 0, -n, n)
    mask = jnp.zeros((b, h, w), bool).at[:, 1:-1, 1:-1].set(True)
    if valid is not None:
        v = valid.astype(bool)
        mask &= v & jnp.roll(v, 1, 1) & jnp.roll(v, -1, 1) & jnp.roll(v, 1, 2) & jnp.roll(v, -1, 2)
    return n, mask


def relative_to_metric(depth_rel: Array, near: float, extent: float) -> Array:
    """Relative depth in [0, 1] (Sapiens target convention) -> metres, z = near + extent * d."""
    return near + extent * widen(depth_rel)


def depth_normal_consistency(
    depth_rel: Array, normal: Array, intrinsics: Array, weight: Array, *, near: float = 0.7, extent: float = 0.25
) -> Array:
    """1 - cos between the predicted normals and the normals of the predicted depth, on the person.

    depth_rel: (B, H, W, 1) predicted relative depth (person >= 0, background -1); normal:
    (B, H/2, W/2, 3) predicted normals; intrinsics: (B, 3, 3) crop intrinsics at (H, W); weight:
    (B,) per-sample flags. The depth is made metric with a nominal ``near`` distance and person
    ``extent`` (the relative target has no scale), pooled 2x2 to the normal map's grid, and the
    person mask is taken from the prediction under stop-gradient.
    """
    b, H, W, _ = depth_rel.shape
    h, w = normal.shape[1:3]
    d = widen(depth_rel)[..., 0].reshape(b, h, H // h, w, W // w).mean(axis=(2, 4))
    person = jax.lax.stop_gradient(d) > -0.5
    scale = jnp.diag(jnp.array([w / W, h / H, 1.0], _F32))
    # Pooling 2x2 maps input pixel centres p to (p + 0.5) * s - 0.5: shift the principal point too.
    shift = jnp.array([[1, 0, 0.5 * w / W - 0.5], [0, 1, 0.5 * h / H - 0.5], [0, 0, 1]], _F32)
    k_small = shift @ scale @ widen(intrinsics)
    from_depth, mask = normals_from_depth(relative_to_metric(jnp.maximum(d, 0.0), near, extent), k_small, person)
    pred = widen(normal)
    cos = jnp.sum(pred * from_depth, -1) / (safe_norm(pred) + 1e-6)
    m = widen(mask)
    per_sample = jnp.sum((1.0 - cos) * m, axis=(1, 2)) / jnp.maximum(m.sum(axis=(1, 2)), 1.0)
    has = widen(weight) * (m.sum(axis=(1, 2)) > 0)
    return jnp.sum(per_sample * has) / jnp.maximum(has.sum(), 1.0)


def bilinear_sample(maps: Array, xy: Array) -> Array:
    """Values of maps (B, H, W, C) at points xy (B, N, 2) (x, y pixels, clipped to the map), bilinear
    and differentiable in both -> (B, N, C)."""
    maps = widen(maps)
    _, h, w, _ = maps.shape
    x = jnp.clip(xy[..., 0], 0, w - 1)
    y = jnp.clip(xy[..., 1], 0, h - 1)
    x0, y0 = jnp.floor(x), jnp.floor(y)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    gather = jax.vmap(lambda img, yy, xx: img[yy.astype(jnp.int32), xx.astype(jnp.int32)])
    return (
        (1 - fx) * (1 - fy) * gather(maps, y0, x0)
        + fx * (1 - fy) * gather(maps, y0, x1)
        + (1 - fx) * fy * gather(maps, y1, x0)
        + fx * fy * gather(maps, y1, x1)
    )


def backproject_keypoints(
    keypoints: Array, depth_rel: Array, intrinsics: Array, *, near: float = 0.7, extent: float = 0.25
) -> Array:
    """Keypoints (B, K, 2) in input pixels + predicted depth (B, H, W, 1) -> 3D points (B, K, 3).

    Depth is sampled bilinearly at each keypoint (differentiable in both) and made metric.
    """
    z = bilinear_sample(depth_rel, keypoints)[..., 0]
    z = relative_to_metric(jnp.maximum(z, 0.0), near, extent)
    pix = jnp.concatenate([widen(keypoints), jnp.ones(keypoints.shape[:-1] + (1,), _F32)], -1)
    rays = jnp.einsum("bij,bkj->bki", jnp.linalg.inv(widen(intrinsics)), pix)
    return rays / rays[..., 2:3] * z[..., None]


def bone_lengths(points: Array, bones=RATIO_BONES) -> Array:
    """Lengths (..., nB) of ``bones`` in points (..., K, D) (2D or 3D)."""
    a = jnp.array([i for i, _ in bones])
    b = jnp.array([j for _, j in bones])
    return safe_norm(points[..., a, :] - points[..., b, :])


def bone_ratios(points: Array, bones=RATIO_BONES) -> Array:
    """Scale-free bone proportions (..., nB): each length divided by the mean bone length (the
    bone-ratio loss and its reference; the prior's report uses ``prior.metrics.bone_length_shares``)."""
    lengths = bone_lengths(points, bones)
    return lengths / (jnp.mean(lengths, axis=-1, keepdims=True) + 1e-9)


def bone_ratio_stats(points, bones=RATIO_BONES) -> dict[str, list[float]]:
    """Reference statistics from skeletons (N, K, 3) of the synthetic set: per-bone ratio mean, std."""
    r = bone_ratios(widen(points), bones)
    return {
        "mean": [float(v) for v in r.mean(0)],
        "std": [float(v) for v in r.std(0)],
        "bones": [list(b) for b in bones],
    }


def bone_ratio_loss(
    points: Array,
    confidence: Array,
    weight: Array,
    ref_mean: Array,
    ref_std: Array,
    bones=RATIO_BONES,
    min_std: float = 0.05,
) -> Array:
    """Robust bone-ratio penalty: the mean of log(1 + z^2), z the ratio's z-score against the reference.

    points: (B, K, 3) back-projected keypoints; confidence: (B, K) in [0, 1] (stop-gradient, a bone
    counts by the product of its ends); weight: (B,) flags; ref_mean, ref_std: (nB,). The std is
    floored at ``min_std`` (synthetic bodies are nearly rigid: their ratio spread of ~0.01 would turn
    the depth noise of a back-projection into z-scores in the tens), and log(1 + z^2) bounds the
    gradient of a wildly wrong skeleton instead of letting it swamp the other losses.
    """
    z = (bone_ratios(points, bones) - ref_mean) / jnp.maximum(ref_std, min_std)
    c = jax.lax.stop_gradient(widen(confidence))
    a = jnp.array([i for i, _ in bones])
    b = jnp.array([j for _, j in bones])
    bone_w = c[:, a] * c[:, b] * widen(weight)[:, None]
    return jnp.sum(jnp.log1p(jnp.square(z)) * bone_w) / jnp.maximum(bone_w.sum(), 1e-6)


def limb_rigidity_loss(
    points: Array, confidence: Array, weight: Array, bones=RATIO_BONES, pairs=SYMMETRIC_PAIRS
) -> Array:
    """Left/right limbs of equal length: mean |l - r| / (l + r) over ``pairs`` of ``bones``."""
    lengths = bone_lengths(points, bones)
    left = jnp.array([i for i, _ in pairs])
    right = jnp.array([j for _, j in pairs])
    asym = jnp.abs(lengths[:, left] - lengths[:, right]) / (lengths[:, left] + lengths[:, right] + 1e-9)
    c = jax.lax.stop_gradient(widen(confidence))
    ends = jnp.array([[bones[p][0], bones[p][1], bones[q][0], bones[q][1]] for p, q in pairs])
    pair_w = jnp.prod(c[:, ends], axis=-1) * widen(weight)[:, None]
    return jnp.sum(asym * pair_w) / jnp.maximum(pair_w.sum(), 1e-6)
