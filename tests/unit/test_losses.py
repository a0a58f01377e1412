"""Each loss against a hand-computed case, and per-sample masking by the task flags."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyper_sapiens_jax.data import geometry as np_geometry
from hyper_sapiens_jax.losses import (
    bone_lengths,
    bone_ratio_loss,
    bone_ratio_stats,
    bone_ratios,
    depth_normal_consistency,
    depth_silog_loss,
    keypoint_coordinate_loss,
    limb_rigidity_loss,
    normal_loss,
    normals_from_depth,
    pose_heatmap_loss,
    soft_argmax,
)
from hyper_sapiens_jax.losses.geometry import RATIO_BONES, backproject_keypoints, peak_soft_argmax


def test_pose_heatmap_loss_hand_case_and_masking():
    pred = jnp.zeros((2, 2, 2, 2)).at[0, 0, 0, 0].set(1.0).at[0, 1, 1, 1].set(2.0)
    target = jnp.zeros((2, 2, 2, 2))
    weight = jnp.array([[1.0, 0.5], [1.0, 1.0]])
    # sample 0: keypoint 0 contributes 1^2 * 1, keypoint 1 contributes 2^2 * 0.5 = 2 -> 3 / 8 elements
    assert float(pose_heatmap_loss(pred, target, weight, jnp.array([1.0, 0.0]))) == pytest.approx(3 / 8)
    # both samples count (sample 1 has zero error): 3 / 16
    assert float(pose_heatmap_loss(pred, target, weight, jnp.array([1.0, 1.0]))) == pytest.approx(3 / 16)
    assert pose_heatmap_loss(pred, target, weight, jnp.zeros(2)) == 0


def test_keypoint_coordinate_loss_is_l1_in_units_over_visible_keypoints():
    target = jnp.zeros((2, 3, 2))
    pred = target.at[0, 0].set(jnp.array([4.0, -8.0])).at[0, 2].set(100.0).at[1].set(50.0)
    weight = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # sample 0's third joint unseen
    has = jnp.array([1.0, 0.0])  # sample 1 has no pose label
    # sample 0: (|4| + |-8|) / 4 px per unit = 3 for joint 0, 0 for joint 1 -> mean 1.5
    assert float(keypoint_coordinate_loss(pred, target, weight, has, unit=4.0)) == pytest.approx(1.5)
    assert float(keypoint_coordinate_loss(target, target, weight, jnp.ones(2))) == 0.0
    g = jax.grad(lambda p: keypoint_coordinate_loss(p, target, weight, has, unit=4.0))(pred)
    assert np.all(np.asarray(g[1]) == 0) and np.all(np.asarray(g[0, 2]) == 0)
    np.testing.assert_allclose(np.asarray(g[0, 0]), [0.125, -0.125])  # sign / (4 * 2 visible)


def test_depth_silog_hand_case():
    target = jnp.array([1.0, np.e, -1.0, 0.0]).reshape(1, 1, 4, 1)  # two valid pixels
    pred = jnp.ones((1, 1, 4, 1))
    # d = [0, 1] -> sqrt(mean(d^2) - 0.5 mean(d)^2) = sqrt(0.5 - 0.125)
    assert float(depth_silog_loss(pred, target, jnp.ones(1))) == pytest.approx(np.sqrt(0.375), rel=1e-5)
    # scale invariance: a global factor on the prediction changes only the lambd-weighted mean term
    scaled = depth_silog_loss(3.0 * pred, target, jnp.ones(1), lambd=1.0)
    assert float(scaled) == pytest.approx(float(depth_silog_loss(pred, target, jnp.ones(1), lambd=1.0)), rel=1e-4)
    g = jax.grad(lambda p: depth_silog_loss(p, target, jnp.zeros(1)))(pred)
    assert not np.any(np.asarray(g))  # masked sample: no gradient


def test_normal_loss_hand_case():
    gt = (
        jnp.zeros((1, 1, 3, 3))
        .at[0, 0, 0]
        .set(jnp.array([0.0, 0.0, -1.0]))
        .at[0, 0, 1]
        .set(jnp.array([0.0, 0.0, -1.0]))
    )
    pred = (
        jnp.zeros((1, 1, 3, 3)).at[0, 0, 0].set(jnp.array([0.0, 0.0, -1.0])).at[0, 0, 1].set(jnp.array([1.0, 0.0, 0.0]))
    )
    # pixel 0 exact (0); pixel 1: L1 = (1 + 0 + 1) / 3, 1 - cos = 1; pixel 2 invalid (zero target)
    expected = (0 + (2 / 3 + 1)) / 2
    assert float(normal_loss(pred, gt, jnp.ones(1))) == pytest.approx(expected, rel=1e-5)
    assert normal_loss(pred, gt, jnp.zeros(1)) == 0


def test_soft_argmax_finds_subpixel_peaks():
    h, w = 64, 48  # sigma 2 at 64x48: the tiny/demo training setting
    yy, xx = np.mgrid[0:h, 0:w]
    centres = [(13.3, 14.6), (38.0, 50.25), (20.5, 30.7)]
    hm = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 2.0**2)) for cx, cy in centres], -1)
    coords, conf = soft_argmax(jnp.asarray(hm[None], jnp.float32))
    assert np.allclose(np.asarray(coords[0]), centres, atol=0.05)
    assert np.all(np.asarray(conf) > 0.9)


def _tilted_plane(h, w, k, n_true, offset=-0.8):
    """Depth (h, w) of the plane n . P = offset seen through intrinsics k (3, 3)."""
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.einsum("ij,hwj->hwi", np.linalg.inv(k), np.stack([u, v, np.ones_like(u)], -1).astype(float))
    return offset / (rays @ n_true)


def _gaussian_map(h, w, cx, cy, peak, sigma=2.0):
    yy, xx = np.mgrid[:h, :w]
    return peak * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def test_peak_soft_argmax_is_unbiased_where_the_whole_map_one_is_not():
    """A low peak (0.3, as an undertrained head gives) far from the centre: the whole-map soft-argmax
    is pulled toward the map's centre by the background's mass, the peak-window one is not; and the
    peak version's coordinates get no gradient from pixels outside the window."""
    hm = _gaussian_map(24, 32, cx=5.3, cy=18.6, peak=0.3)[None, :, :, None].astype(np.float32)
    soft, _ = soft_argmax(jnp.asarray(hm))
    peak, conf = peak_soft_argmax(jnp.asarray(hm))
    assert np.abs(np.asarray(peak)[0, 0] - (5.3, 18.6)).max() < 0.25
    assert np.abs(np.asarray(soft)[0, 0] - (5.3, 18.6)).max() > 1.0  # biased toward (15.5, 11.5)
    assert float(conf[0, 0]) == pytest.approx(hm.max())
    grad = jax.grad(lambda m: peak_soft_argmax(m)[0].sum())(jnp.asarray(hm))
    g = np.abs(np.asarray(grad)[0, :, :, 0])
    assert g[17:22, 3:8].sum() > 0 and g.sum() == pytest.approx(g[17:22, 3:8].sum())  # the 5x5 window at (5, 19)


def test_depth_to_normals_on_a_tilted_plane_gives_its_normal():
    n_true = np.array([0.3, -0.4, -1.0]) / np.linalg.norm([0.3, -0.4, -1.0])
    k = np.array([[300.0, 0, 40], [0, 310.0, 30], [0, 0, 1]])
    depth = _tilted_plane(64, 80, k, n_true)
    n, mask = normals_from_depth(jnp.asarray(depth[None], jnp.float32), jnp.asarray(k[None], jnp.float32))
    n, mask = np.asarray(n[0]), np.asarray(mask[0])
    assert mask[1:-1, 1:-1].all() and not mask[0].any()
    assert np.abs(n[mask] - n_true).max() < 1e-4
    ref = np_geometry.normals_from_depth(depth, np.ones_like(depth, bool), (300.0, 310.0, 40.0, 30.0), stencil=1)
    assert np.abs(n[2:-2, 2:-2] - ref[2:-2, 2:-2]).max() < 1e-4  # same as the data-side normals


def test_depth_normal_consistency_zero_for_consistent_prediction():
    n_true = np.array([0.2, 0.1, -1.0]) / np.linalg.norm([0.2, 0.1, -1.0])
    H, W = 32, 24
    k = np.array([[200.0, 0, 11.5], [0, 200.0, 15.5], [0, 0, 1]])
    near, extent = 0.7, 0.25
    metric = _tilted_plane(H, W, k, n_true, offset=-0.8)
    rel = (metric - near) / extent
    good = jnp.broadcast_to(jnp.asarray(n_true, jnp.float32), (1, H // 2, W // 2, 3))
    args = (jnp.asarray(rel[None, ..., None], jnp.float32),)
    kk = jnp.asarray(k[None], jnp.float32)
    assert depth_normal_consistency(*args, good, kk, jnp.ones(1), near=near, extent=extent) < 1e-3
    bad = jnp.broadcast_to(jnp.array([0.0, 0.0, -1.0]), (1, H // 2, W // 2, 3))
    expected = 1 - n_true @ np.array([0, 0, -1.0])
    assert float(depth_normal_consistency(*args, bad, kk, jnp.ones(1), near=near, extent=extent)) == pytest.approx(
        expected, rel=1e-2
    )
    assert depth_normal_consistency(*args, bad, kk, jnp.zeros(1), near=near, extent=extent) == 0


def _skeleton(scale=1.0):
    """A known upright 3D skeleton (17, 3): limbs of set lengths, shoulders 2 apart, hips 1.4 apart."""
    p = np.zeros((17, 3))
    p[5], p[6] = [-1, 0, 0], [1, 0, 0]  # shoulders
    p[7], p[8] = [-1, 1.0, 0], [1, 1.0, 0]  # elbows: upper arm 1.0
    p[9], p[10] = [-1, 1.8, 0], [1, 1.8, 0]  # wrists: forearm 0.8
    p[11], p[12] = [-0.7, 2, 0], [0.7, 2, 0]  # hips
    p[13], p[14] = [-0.7, 3.2, 0], [0.7, 3.2, 0]  # knees: thigh 1.2
    p[15], p[16] = [-0.7, 4.2, 0], [0.7, 4.2, 0]  # ankles: shin 1.0
    return p * scale


def test_bone_ratios_of_a_known_skeleton():
    sk = _skeleton()
    lengths = np.asarray(bone_lengths(jnp.asarray(sk)))
    torso = np.hypot(0.3, 2.0)
    expected = [1.0, 1.0, 0.8, 0.8, 1.2, 1.2, 1.0, 1.0, 2.0, 1.4, torso, torso]
    assert np.allclose(lengths, expected, atol=1e-6)
    ratios = np.asarray(bone_ratios(jnp.asarray(sk)))
    assert np.allclose(ratios, np.array(expected) / np.mean(expected), atol=1e-6)
    assert np.allclose(np.asarray(bone_ratios(jnp.asarray(_skeleton(3.7)))), ratios, atol=1e-6)  # scale-free
    stats = bone_ratio_stats(np.stack([sk, _skeleton(2.0)]))
    assert np.allclose(stats["mean"], ratios, atol=1e-6) and np.allclose(stats["std"], 0, atol=1e-6)
    conf = jnp.ones((1, 17))
    ref_mean, ref_std = jnp.asarray(stats["mean"]), jnp.full(len(RATIO_BONES), 0.1)
    assert bone_ratio_loss(jnp.asarray(sk[None]), conf, jnp.ones(1), ref_mean, ref_std) < 1e-8
    stretched = sk.copy()
    stretched[9] = [-1, 2.6, 0]  # left forearm 1.6 instead of 0.8
    # Robust: mean over the bones of log(1 + z^2), z = (ratio - mean) / max(std, 0.05).
    z = (np.asarray(bone_ratios(jnp.asarray(stretched[None])))[0] - np.asarray(ref_mean)) / 0.1
    expected = np.mean(np.log1p(z**2))
    got = float(bone_ratio_loss(jnp.asarray(stretched[None]), conf, jnp.ones(1), ref_mean, ref_std))
    assert got == pytest.approx(expected, rel=1e-5) and got > 0.3
    tiny_std = jnp.full(len(RATIO_BONES), 1e-4)  # floored at 0.05: z halves vs std 0.1 -> 0.05
    z_floor = z * 0.1 / 0.05
    assert float(bone_ratio_loss(jnp.asarray(stretched[None]), conf, jnp.ones(1), ref_mean, tiny_std)) == pytest.approx(
        np.mean(np.log1p(z_floor**2)), rel=1e-5
    )
    assert limb_rigidity_loss(jnp.asarray(sk[None]), conf, jnp.ones(1)) < 1e-8
    # left forearm 1.6 vs right 0.8: |1.6 - 0.8| / 2.4 over one of the 5 pairs
    assert float(limb_rigidity_loss(jnp.asarray(stretched[None]), conf, jnp.ones(1))) == pytest.approx(
        (0.8 / 2.4) / 5, rel=1e-4
    )


def test_backprojected_keypoints_follow_the_depth():
    k = jnp.asarray([[[100.0, 0, 10], [0, 100.0, 8], [0, 0, 1]]])
    depth = jnp.full((1, 16, 20, 1), 0.4)
    pts = backproject_keypoints(jnp.asarray([[[10.0, 8.0], [15.0, 8.0]]]), depth, k, near=0.5, extent=0.5)
    z = 0.5 + 0.5 * 0.4
    assert np.allclose(np.asarray(pts[0]), [[0, 0, z], [5 / 100 * z, 0, z]], atol=1e-6)
    g = jax.grad(lambda d: backproject_keypoints(jnp.asarray([[[10.3, 8.6]]]), d, k).sum())(depth)
    assert np.count_nonzero(np.asarray(g)) == 4  # bilinear: four taps


def test_geometry_gradients_stay_finite_on_degenerate_inputs():
    """Coincident keypoints (zero-length bones) and zero normal predictions: the stage-2 losses'
    gradients must be finite (a NaN here poisons every parameter through the optimizer)."""
    pts = jnp.zeros((2, 17, 3))
    conf, w = jnp.ones((2, 17)), jnp.ones(2)
    ref = jnp.ones(len(RATIO_BONES)), jnp.full(len(RATIO_BONES), 0.1)
    g = jax.grad(lambda p: bone_ratio_loss(p, conf, w, *ref) + limb_rigidity_loss(p, conf, w))(pts)
    assert np.isfinite(np.asarray(g)).all()
    k = jnp.asarray([[[50.0, 0, 8], [0, 50.0, 8], [0, 0, 1]]] * 2)
    depth, normal = jnp.full((2, 16, 16, 1), 0.5), jnp.zeros((2, 8, 8, 3))
    g = jax.grad(lambda n: depth_normal_consistency(depth, n, k, w) + normal_loss(n, n, w))(normal)
    assert np.isfinite(np.asarray(g)).all()
