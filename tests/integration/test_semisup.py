"""NK-Sapiens' pieces: the kinematic score, the hybrid teacher, the unlabelled losses, the step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyper_sapiens_jax.data.codec import encode_udp_heatmaps_device
from hyper_sapiens_jax.data.keypoints import COCO17_NAMES, flip_permutation
from hyper_sapiens_jax.prior import DiffusionPrior
from hyper_sapiens_jax.prior import normalize as norm
from hyper_sapiens_jax.prior.denoiser import DenoiserSpec
from hyper_sapiens_jax.prior.model import PriorSpec
from hyper_sapiens_jax.semisup import losses as L
from hyper_sapiens_jax.semisup.kinematics import ANGLES, compute_reference, kinematic_checks, kinematic_score
from hyper_sapiens_jax.semisup.teachers import align_keypoints, refine_with_prior, select_targets
from hyper_sapiens_jax.testbed.writer import sample_skeleton_keypoints

J = {n: i for i, n in enumerate(COCO17_NAMES)}


@pytest.fixture(scope="module")
def skeletons():
    """(N, 17, 3) projected infant skeletons, as the testbed makes them (all joints labelled)."""
    s = sample_skeleton_keypoints(11, 600, (480, 640))
    return s[(s[:, 5:, 2] > 0).all(-1)]


@pytest.fixture(scope="module")
def reference(skeletons):
    """From all but the last 50 skeletons (those are held out)."""
    return compute_reference(skeletons[:-50, :, :2], skeletons[:-50, :, 2] > 0)


def _broken(pose: np.ndarray) -> np.ndarray:
    """The pose with a left forearm 4x too long and the right knee bent backwards through the hip."""
    p = pose.copy()
    p[J["left_wrist"]] = p[J["left_elbow"]] + 4.0 * (p[J["left_wrist"]] - p[J["left_elbow"]])
    p[J["right_knee"]] = p[J["right_hip"]] + 3.0 * (p[J["right_hip"]] - p[J["right_shoulder"]])
    return p


# =============================================================================================
# Kinematic plausibility
# =============================================================================================
def test_kps_accepts_real_poses_rejects_broken_ones_and_is_similarity_invariant(skeletons, reference):
    held_out = skeletons[-50:, :, :2].astype(np.float32)  # not in the reference
    vis = np.ones(held_out.shape[:2], np.float32)
    good = np.asarray(kinematic_score(held_out, vis, reference))
    bad = np.asarray(kinematic_score(np.stack([_broken(p) for p in held_out]), vis, reference))
    assert np.median(good) >= 0.9 and (good > bad).mean() >= 0.95, (np.median(good), np.median(bad))
    assert np.median(bad) < 0.85
    # Translate, scale, rotate and mirror: the same score.
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    moved = 2.5 * held_out @ rot.T + np.array([30.0, -12.0], np.float32)
    mirrored = held_out * np.array([-1.0, 1.0], np.float32)
    for other in (moved, mirrored):
        np.testing.assert_allclose(np.asarray(kinematic_score(other, vis, reference)), good, atol=1e-6)


def test_kps_counts_only_checks_whose_joints_are_visible(skeletons, reference):
    pose = skeletons[:1, :, :2].astype(np.float32)
    vis = np.ones((1, 17), np.float32)
    vis[0, J["left_wrist"]] = 0.0
    checks = kinematic_checks(pose, vis, reference)
    _, valid = checks["angles"]
    assert valid[0, ANGLES.index((J["left_shoulder"], J["left_elbow"], J["left_wrist"]))] == 0
    assert float(kinematic_score(pose, np.zeros((1, 17), np.float32), reference)[0]) == 0.0
    # A broken left forearm does not count against a pose whose left wrist is invisible.
    broken = _broken(pose[0])
    broken[J["right_knee"]] = pose[0, J["right_knee"]]
    assert float(kinematic_score(broken[None], vis, reference)[0]) == pytest.approx(
        float(kinematic_score(pose, vis, reference)[0])
    )


# =============================================================================================
# Teachers
# =============================================================================================
def test_align_keypoints_maps_through_the_affine_and_swaps_sides_when_flipped():
    xy = np.random.default_rng(0).uniform(0, 40, (2, 17, 2)).astype(np.float32)
    conf = np.linspace(0.1, 0.9, 17, dtype=np.float32)[None].repeat(2, 0)
    affine = np.array([[[0.0, -1.0, 47.0], [1.0, 0.0, 0.0]]] * 2, np.float32)  # a 90 degree turn
    out, c = align_keypoints(jnp.asarray(xy), jnp.asarray(conf), jnp.asarray(affine), jnp.asarray([0.0, 1.0]))
    expected = np.stack([47.0 - xy[..., 1], xy[..., 0]], -1)
    np.testing.assert_allclose(np.asarray(out[0]), expected[0], atol=1e-5)
    perm = flip_permutation()
    np.testing.assert_allclose(np.asarray(out[1]), expected[1][perm], atol=1e-5)
    np.testing.assert_allclose(np.asarray(c[1]), conf[1][perm])


def test_selection_takes_a_when_confident_and_plausible_else_b():
    k = 17
    xy_a, xy_b = jnp.zeros((4, k, 2)), jnp.ones((4, k, 2))
    conf_a = jnp.asarray([0.9, 0.9, 0.2, 0.9])[:, None] * jnp.ones((4, k))
    conf_a = conf_a.at[0, 3].set(0.1)  # one weak joint of a confident sample
    kps_a = jnp.asarray([0.95, 0.3, 0.95, 0.95])
    vis_b = jnp.ones((4, k)).at[:, 0].set(0.0)
    t = select_targets(
        xy_a, conf_a, kps_a, xy_b, vis_b, conf_threshold=0.5, kps_threshold=0.7, keypoint_conf=0.3, gate=True
    )
    np.testing.assert_array_equal(np.asarray(t.from_a), [1, 0, 0, 1])  # implausible, unconfident -> B
    np.testing.assert_array_equal(np.asarray(t.xy[:, 0, 0]), [0, 1, 1, 0])
    assert float(t.weight[0, 3]) == 0.0 and float(t.weight[0, 4]) == 1.0  # A: weak joints drop
    assert float(t.weight[1, 0]) == 0.0 and float(t.weight[1, 1]) == 1.0  # B: its visibility
    plain = select_targets(
        xy_a, conf_a, kps_a, xy_b, vis_b, conf_threshold=0.5, kps_threshold=0.7, keypoint_conf=0.3, gate=False
    )
    np.testing.assert_array_equal(np.asarray(plain.from_a), 1.0)
    np.testing.assert_array_equal(np.asarray(plain.weight), 1.0)


class GaussianPrior(DiffusionPrior):
    """A prior whose data are N(mu, s^2 I) in the normalised frame, with the exact ε̂ (tests only)."""

    def __init__(self, graphdef, params, spec, mu, s):
        super().__init__(graphdef, params, spec)
        self.mu, self.s = mu, s

    def eps(self, x_t, visible, t, params=None):
        ab = self.schedule.alpha_bars[t][:, None, None]
        mu = jnp.asarray(self.mu) * visible[..., None]
        return jnp.sqrt(1 - ab) * (x_t - jnp.sqrt(ab) * mu) / (ab * self.s**2 + 1 - ab)


def test_teacher_b_pulls_an_implausible_pose_to_the_prior_and_keeps_a_plausible_one(skeletons):
    xy, vis = skeletons[:, :, :2].astype(np.float32), np.ones(skeletons.shape[:2], np.float32)
    spec = PriorSpec(DenoiserSpec(width=16, depth=1), norm.fit_spec(xy, vis))
    base = DiffusionPrior.create(spec)
    pose = xy[:1]
    mu = np.asarray(base.normalize(jnp.asarray(pose), jnp.asarray(vis[:1])))[0]
    prior = GaussianPrior(base.graphdef, base.params, spec, mu, 0.02)
    torso = np.linalg.norm(pose[0, J["left_shoulder"]] - pose[0, J["left_hip"]])
    bad = _broken(pose[0])[None]
    both = jnp.asarray(np.concatenate([pose, bad]))
    out = refine_with_prior(prior, both, jnp.ones((2, 17)), jax.random.key(0), t_frac=0.2, steps=5)
    moved = np.linalg.norm(np.asarray(out.xy_hat) - np.asarray(both), axis=-1)  # (2, K)
    assert moved[0].max() < 0.1 * torso, moved[0].max() / torso  # the plausible pose stays
    wrist = J["left_wrist"]
    before = np.linalg.norm(bad[0, wrist] - pose[0, wrist])
    after = np.linalg.norm(np.asarray(out.xy_hat)[1, wrist] - pose[0, wrist])
    assert after < 0.5 * before, (before, after)  # the broken arm moves most of the way back
    # z is the differentiable pose in the prior's frame; z_hat the (fixed) refinement.
    np.testing.assert_allclose(np.asarray(out.z[0]), mu, atol=1e-5)


# =============================================================================================
# Losses (hand-computed values)
# =============================================================================================
def test_consistency_loss_is_zero_at_the_target_and_the_mse_elsewhere():
    xy = jnp.asarray([[[10.0, 20.0]] * 17, [[30.0, 40.0]] * 17])
    w = jnp.ones((2, 17))
    target = encode_udp_heatmaps_device(xy, w, (48, 64), (12, 16), 2.0)
    assert float(L.consistency_loss(target, xy, w, jnp.ones(2), 2.0, (48, 64))) == pytest.approx(0.0, abs=1e-9)
    off = target + 0.1
    # Sample 2 carries weight 0: the loss is sample 1's mean squared error, 0.01.
    assert float(L.consistency_loss(off, xy, w, jnp.asarray([1.0, 0.0]), 2.0, (48, 64))) == pytest.approx(0.01)


def test_deviation_loss_by_hand():
    z = jnp.zeros((2, 17, 2))
    z_hat = jnp.zeros((2, 17, 2)).at[0, 0].set(jnp.asarray([3.0, 4.0]))
    vis = jnp.ones((2, 17)).at[0, 1:].set(0.0)  # sample 0: one visible joint, 25 away
    assert float(L.deviation_loss(z, z_hat, vis, jnp.asarray([1.0, 0.0]))) == pytest.approx(25.0)
    assert float(L.deviation_loss(z, z_hat, vis, jnp.ones(2))) == pytest.approx(25.0 / 18)
    grad = jax.grad(lambda h: L.deviation_loss(z, h, vis, jnp.ones(2)))(z_hat)
    assert float(jnp.abs(grad).max()) == 0.0  # the refinement is a fixed target


def _stick_pose(h: float = 63.0) -> np.ndarray:
    """An upright COCO pose in a 64-row crop: all 12 body bones of length 10 px."""
    p = np.zeros((17, 2), np.float32)
    p[J["left_shoulder"]], p[J["right_shoulder"]] = (20, 10), (30, 10)
    p[J["left_hip"]], p[J["right_hip"]] = (20, 20), (30, 20)
    p[J["left_elbow"]], p[J["right_elbow"]] = (10, 10), (40, 10)
    p[J["left_wrist"]], p[J["right_wrist"]] = (0, 10), (50, 10)
    p[J["left_knee"]], p[J["right_knee"]] = (20, 30), (30, 30)
    p[J["left_ankle"]], p[J["right_ankle"]] = (20, 40), (30, 40)
    return p


def test_depth_rigidity_by_hand():
    xy = jnp.asarray(_stick_pose()[None])
    flat = jnp.full((1, 64, 48, 1), 0.5)
    ones = jnp.ones((1, 17))
    # Equal limbs in a flat depth map: normalised lengths are all 1.
    assert float(L.depth_rigidity_loss(xy, flat, ones, jnp.ones(1), jnp.ones(12), 1.0)) == pytest.approx(0.0, abs=1e-6)
    limb_mean = jnp.full(12, 1.0).at[0].set(1.5)  # the reference wants one bone 1.5x as long
    # The pose's scale is sum(lengths) / sum(limb_mean): each equal bone normalises to 12.5 / 12.
    unit = 12.5 / 12
    expected = (abs(unit - 1.5) + 11 * abs(unit - 1.0)) / 12
    assert float(L.depth_rigidity_loss(xy, flat, ones, jnp.ones(1), limb_mean, 1.0)) == pytest.approx(
        expected, rel=1e-5
    )
    # Background depth (<= 0: the depth head is trained on the person only) drops the bones it touches.
    hidden = flat.at[0, :, :5].set(-1.0)  # under the left wrist: the left forearm (bone 2) drops out
    w_ref = jnp.ones(12).at[2].set(7.0)  # a forearm the loss would otherwise punish hard
    assert float(L.depth_rigidity_loss(xy, hidden, ones, jnp.ones(1), w_ref, 1.0)) == pytest.approx(0.0, abs=1e-6)
    # A depth step under the left wrist lengthens only the left forearm (bone 2):
    # sqrt((10/63)^2 + a * 0.3^2) with a = 1, over the new mean.
    depth = flat.at[0, :, :5].set(0.8)
    length = np.full(12, 10 / 63)
    length[2] = np.sqrt((10 / 63) ** 2 + 0.3**2)
    expected = np.abs(length / length.mean() - 1.0).mean()
    got = float(L.depth_rigidity_loss(xy, depth, ones, jnp.ones(1), jnp.ones(12), 1.0))
    assert got == pytest.approx(expected, rel=1e-4)


def test_the_rigidity_reference_and_the_loss_use_the_same_units():
    """A reference made from one pose (crop-height units, the depth at its keypoints) scores that
    pose, seen through the loss (pixels, a depth map), at 0; another pose scores above 0."""
    pose = _stick_pose()
    depth = np.full((1, 64, 48, 1), 0.4, np.float32)
    depth[0, :, 30:] = 0.7  # the right side further away: its lengths gain a depth term
    d_k = np.asarray(L.bilinear_sample(jnp.asarray(depth), jnp.asarray(pose[None])))[0, :, 0]
    ref = compute_reference(np.stack([pose / 63.0] * 4), np.ones((4, 17)), np.stack([d_k] * 4), depth_scale=2.0)
    args = (jnp.ones((1, 17)), jnp.ones(1), jnp.asarray(ref.limb_mean), 2.0)
    assert float(L.depth_rigidity_loss(jnp.asarray(pose[None]), jnp.asarray(depth), *args)) == pytest.approx(
        0.0, abs=1e-5
    )
    other = pose.copy()
    other[J["left_wrist"]] = (5, 10)  # a forearm half as long
    assert float(L.depth_rigidity_loss(jnp.asarray(other[None]), jnp.asarray(depth), *args)) > 0.02


def test_normal_orthogonality_by_hand():
    xy = jnp.asarray(_stick_pose()[None])
    depth = jnp.full((1, 64, 48, 1), 0.5)  # a fronto-parallel body: limbs lie in the image plane
    k = jnp.asarray([[[48.0, 0, 23.5], [0, 48.0, 31.5], [0, 0, 1]]])
    facing = jnp.zeros((1, 32, 24, 3)).at[..., 2].set(-1.0)  # normals towards the camera
    args = (k, jnp.ones((1, 17)), jnp.ones(1))
    assert float(L.normal_orthogonality_loss(xy, depth, facing, *args, near=0.7, extent=0.25)) == pytest.approx(
        0.0, abs=1e-6
    )
    sideways = jnp.zeros((1, 32, 24, 3)).at[..., 0].set(1.0)  # normals along +x
    # The bones are 6 horizontal (cos^2 = 1 against x) and 6 vertical (0): mean 0.5.
    got = float(L.normal_orthogonality_loss(xy, depth, sideways, *args, near=0.7, extent=0.25))
    assert got == pytest.approx(0.5, abs=1e-3)


# =============================================================================================
# The step
# =============================================================================================
@pytest.fixture(scope="module")
def step_inputs(testbed):
    from tests.helpers.train import first_batch, semisup_parts, with_unlabeled

    return with_unlabeled(first_batch(testbed.root)), semisup_parts()


def test_teachers_get_no_gradient_but_shape_the_loss(step_inputs):
    """d loss / d (EMA teacher, geometry teacher) is exactly 0, though both change the loss value."""
    from flax import nnx

    from hyper_sapiens_jax.semisup.step import semisup_loss
    from hyper_sapiens_jax.training.batch import complete_batch

    # Everything trains; the EMA teacher and the geometry copy start equal to the parameters.
    batch, (graphdef, params, spec, reference, prior, obj) = step_inputs
    batch = complete_batch(batch, 2.0)
    none = nnx.State({})

    def loss(p, ema, geo):
        kw = dict(graphdef=graphdef, objective=obj, spec=spec, reference=reference, prior=prior)
        total, _ = semisup_loss(p, ema, none, geo, batch, jax.random.key(0), jnp.int32(0), heatmap_sigma=2.0, **kw)
        return total

    # Jitted: op by op, the semi-supervised loss and its gradient take minutes on 2 CPU cores.
    value, (g_params, g_ema, g_geo) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, params, params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves((g_ema, g_geo)))
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(g_params)) > 0
    other = jax.tree.map(lambda x: x * 1.01 + 0.01, params)
    jloss = jax.jit(loss)
    assert float(jloss(params, other, params)) != pytest.approx(float(value), rel=1e-6)  # teacher A is used
    assert float(jloss(params, params, other)) != pytest.approx(float(value), rel=1e-6)  # the geometry copy too


def test_semisup_step_on_8_devices_equals_one_device(testbed):
    """data=4 x fsdp=2 on 8 fake CPU devices vs one device, one semi-supervised SGD step
    (tests/scripts/semisup_parity.py): the same loss and parameter updates. With the teachers and
    L_dev, to 2e-4 (measured 1.6e-5 on one CPU, 5.1e-5 on another and again on a rerun there; the
    supervised step alone gives 9e-6). With the geometry terms
    on the untrained test model, ~5e-4 (the loss to 1e-5): the near-constant depth of an untrained
    head enters through differences and normalised limb directions, which amplify float32 rounding,
    as the fine-tuning step's depth term does (test_train_step). A sharding bug shows up as O(1)."""
    from tests.helpers.train import parity_rows

    rows = parity_rows("semisup_parity.py", testbed.root)
    assert set(rows) == {"teachers", "full"}, rows
    assert float(rows["teachers"]["params_rel_err"]) <= 2e-4, rows
    assert float(rows["full"]["params_rel_err"]) <= 2e-3, rows
    for values in rows.values():
        assert float(values["loss_rel_err"]) <= 2e-5 and int(values["fsdp_sharded"]) > 0, values
        assert float(values["from_a"]) == 1.0, values  # thresholds 0: teacher A labels every sample
