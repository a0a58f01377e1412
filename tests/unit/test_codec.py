"""Tests for the UDP heatmap codec and the image -> crop -> heatmap -> image round trip."""

import jax.numpy as jnp
import numpy as np
import pytest

from hyper_sapiens_jax.data import codec as C
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import flip_permutation

# A small config with the Sapiens proportions (input/4 heatmaps, sigma 2 at 64x48) keeps tests fast.
IN_WH, HM_WH, SIGMA = (192, 256), (48, 64), 2.0


def encode(kpts, vis=None, sigma=SIGMA):
    return C.encode_udp_heatmaps(kpts, vis, input_wh=IN_WH, heatmap_wh=HM_WH, sigma=sigma)


def to_input(points_hm):
    return np.asarray(points_hm, np.float64) * C.udp_scale_factor(IN_WH, HM_WH)


def mmpose_udp_gaussian_reference(heatmap_wh, kpts_hm, vis, sigma):
    """Straight per-keypoint loop of mmpose generate_udp_gaussian_heatmaps, (K, H, W) layout."""
    w, h = heatmap_wh
    heatmaps = np.zeros((len(kpts_hm), h, w), np.float32)
    weights = vis.astype(np.float32).copy()
    radius = sigma * 3
    size = 2 * radius + 1
    x = np.arange(0, size, 1, dtype=np.float32)
    y = x[:, None]
    for k, (mu_ac, v) in enumerate(zip(kpts_hm, vis)):
        if v < 0.5:
            continue
        mu = (mu_ac + 0.5).astype(np.int64)
        left, top = (mu - radius).astype(np.int64)
        right, bottom = (mu + radius + 1).astype(np.int64)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weights[k] = 0
            continue
        x0 = y0 = size // 2
        x0 += mu_ac[0] - mu[0]
        y0 += mu_ac[1] - mu[1]
        g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
        gx1, gx2 = max(0, -left), min(w, right) - left
        gy1, gy2 = max(0, -top), min(h, bottom) - top
        hx1, hx2, hy1, hy2 = max(0, left), min(w, right), max(0, top), min(h, bottom)
        heatmaps[k, hy1:hy2, hx1:hx2] = np.maximum(heatmaps[k, hy1:hy2, hx1:hx2], g[gy1:gy2, gx1:gx2])
    return heatmaps, weights


# ---------------------------------------------------------------------------------------------
# Encode
# ---------------------------------------------------------------------------------------------


def test_encode_matches_mmpose_reference_loop():
    rng = np.random.default_rng(0)
    kpts_hm = np.stack([rng.uniform(-10, 58, 40), rng.uniform(-10, 74, 40)], -1)  # some outside
    vis = (rng.random(40) > 0.2).astype(np.float32)
    heatmaps, weights = encode(to_input(kpts_hm), vis)
    ref_heatmaps, ref_weights = mmpose_udp_gaussian_reference(HM_WH, kpts_hm, vis, SIGMA)
    assert heatmaps.shape == (64, 48, 40) and heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, ref_heatmaps.transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_array_equal(weights, ref_weights)


def test_encode_peak_location_and_value():
    kpts_hm = np.array([[10.0, 20.0], [30.3, 40.8], [5.6, 50.2]])
    heatmaps, weights = encode(to_input(kpts_hm))
    locs, vals = C.get_heatmap_maximum(heatmaps)
    np.testing.assert_array_equal(locs, np.floor(kpts_hm + 0.5))  # peak at the rounded pixel
    assert vals[0] == pytest.approx(1.0)  # integer position: exact peak of 1
    d2 = ((locs - kpts_hm) ** 2).sum(-1)
    np.testing.assert_allclose(vals, np.exp(-d2 / (2 * SIGMA**2)), rtol=1e-5)
    # Value one pixel right of the first point and outside the 3-sigma window.
    assert heatmaps[20, 11, 0] == pytest.approx(np.exp(-1 / (2 * SIGMA**2)), rel=1e-5)
    assert heatmaps[20, 10 + 7, 0] == 0.0
    np.testing.assert_array_equal(weights, 1.0)


def test_encode_weights_zero_for_invisible_and_outside_points():
    kpts_hm = np.array(
        [
            [20.0, 30.0],  # visible, inside
            [20.0, 30.0],  # invisible
            [-20.0, 30.0],  # far left: window misses the heatmap
            [60.0, 90.0],  # far bottom-right
            [-2.0, 30.0],  # just outside: partial Gaussian, kept (mmpose semantics)
        ]
    )
    vis = np.array([1, 0, 1, 1, 1], np.float32)
    heatmaps, weights = encode(to_input(kpts_hm), vis)
    np.testing.assert_array_equal(weights, [1, 0, 0, 0, 1])
    assert heatmaps[..., 1].max() == 0 and heatmaps[..., 2].max() == 0
    assert heatmaps[..., 3].max() == 0
    assert 0 < heatmaps[..., 4].max() < 1 and heatmaps[30, 0, 4] == pytest.approx(np.exp(-4 / (2 * SIGMA**2)), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------


def test_dark_refinement_beats_plain_argmax():
    rng = np.random.default_rng(1)
    kpts_hm = np.stack([rng.uniform(6, 42, 64), rng.uniform(6, 58, 64)], -1)
    heatmaps, _ = encode(to_input(kpts_hm))
    argmax_locs, _ = C.get_heatmap_maximum(heatmaps)
    decoded, scores = C.decode_udp_heatmaps(heatmaps, input_wh=IN_WH)
    argmax_err = np.linalg.norm(argmax_locs - kpts_hm, axis=-1)
    dark_err = np.linalg.norm(decoded / C.udp_scale_factor(IN_WH, HM_WH) - kpts_hm, axis=-1)
    assert argmax_err.mean() > 0.2  # uniform sub-pixel offsets: ~0.38 px on average
    assert dark_err.max() < 0.01  # DARK recovers a clean Gaussian's centre
    np.testing.assert_allclose(scores, np.exp(-(argmax_err**2) / (2 * SIGMA**2)), rtol=1e-5)


def test_dark_kernel_rule_keeps_sapiens_and_shrinks_with_the_map():
    assert C.dark_blur_kernel((192, 256), 6.0) == 11  # Sapiens at 1024x768: mmpose's kernel
    assert C.dark_blur_kernel((192, 256)) == 11
    assert C.dark_blur_kernel((48, 64), 2.0) == 5  # at most 1/8 of the shorter side
    assert C.dark_blur_kernel((24, 32), 2.0) == 3  # the cpu preset
    assert C.dark_blur_kernel((24, 32), 0.5) == 1  # kernel 3 blurs with sigma 0.8 > 0.5: no blur
    assert C.dark_blur_kernel((12, 16)) == 1
    assert all(C.dark_blur_kernel((w, w)) % 2 == 1 for w in range(1, 300))
    assert C.blur_sigma(11) == pytest.approx(2.0) and C.blur_sigma(3) == pytest.approx(0.8)  # cv2's rule


def test_dark_kernel_rule_recovers_points_near_the_edge_of_a_small_map():
    # A 32x24 map (the cpu preset at 128x96), sigma 2, points 2-4 heatmap px from the left/right edge:
    # kernel 11 reaches past the border (zero padding) and pulls them inward; the rule's kernel does not.
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.uniform(8, 16, 9), rng.uniform(80, 87, 8)])
    kp = np.stack([xs, rng.uniform(30, 100, 17)], 1)
    heatmaps, _ = C.encode_udp_heatmaps(kp, input_wh=(96, 128), heatmap_wh=(24, 32), sigma=2.0)
    ruled, _ = C.decode_udp_heatmaps(heatmaps, input_wh=(96, 128), sigma=2.0)
    fixed, _ = C.decode_udp_heatmaps(heatmaps, input_wh=(96, 128), blur_kernel_size=11)
    assert np.abs(ruled - kp).max() < 0.01
    assert np.abs(fixed - kp).mean() > 0.1
    # No blur (kernel 1) refines straight on the map.
    raw, _ = C.decode_udp_heatmaps(heatmaps, input_wh=(96, 128), blur_kernel_size=1)
    assert np.abs(raw - kp).max() < 0.01


def test_decode_batch_matches_single_and_handles_one_channel():
    rng = np.random.default_rng(2)
    batch = np.stack(
        [encode(to_input(np.stack([rng.uniform(5, 43, 17), rng.uniform(5, 59, 17)], -1)))[0] for _ in range(3)]
    )
    keypoints, scores = C.decode_udp_heatmaps(batch, input_wh=IN_WH)
    assert keypoints.shape == (3, 17, 2) and scores.shape == (3, 17)
    for b in range(3):
        k1, s1 = C.decode_udp_heatmaps(batch[b], input_wh=IN_WH)
        np.testing.assert_allclose(keypoints[b], k1, atol=1e-5)
        np.testing.assert_allclose(scores[b], s1)
    k_one, _ = C.decode_udp_heatmaps(batch[0][..., :1], input_wh=IN_WH)
    np.testing.assert_allclose(k_one[0], keypoints[0, 0], atol=1e-5)


def test_decode_empty_channel_has_zero_score():
    heatmaps = np.zeros((64, 48, 2), np.float32)
    heatmaps[..., 0] = encode(to_input([[20.0, 20.0]]))[0][..., 0]
    keypoints, scores = C.decode_udp_heatmaps(heatmaps, input_wh=IN_WH)
    assert scores[1] == 0 and scores[0] == pytest.approx(1.0)
    assert np.all(np.isfinite(keypoints))


# ---------------------------------------------------------------------------------------------
# Flip test
# ---------------------------------------------------------------------------------------------


def test_flip_back_recovers_heatmaps_of_unflipped_input():
    rng = np.random.default_rng(3)
    kpts = to_input(np.stack([rng.uniform(6, 42, 17), rng.uniform(6, 58, 17)], -1))
    heatmaps, _ = encode(kpts)
    flipped_kpts = T.flip_points(kpts, IN_WH[0])[flip_permutation()]  # mirrored input crop
    heatmaps_of_flipped, _ = encode(flipped_kpts)
    np.testing.assert_allclose(C.flip_heatmaps(heatmaps_of_flipped), heatmaps, atol=1e-5)
    averaged = 0.5 * (heatmaps + C.flip_heatmaps(heatmaps_of_flipped))  # the flip test's average
    np.testing.assert_allclose(averaged, heatmaps, atol=1e-5)
    # Without the channel swap the left eye would come back on the right eye's channel.
    assert not np.allclose(heatmaps_of_flipped[:, ::-1, 1], heatmaps[..., 1], atol=1e-3)
    decoded, _ = C.decode_udp_heatmaps(averaged, input_wh=IN_WH)
    np.testing.assert_allclose(decoded, kpts, atol=0.05)


def test_flip_heatmaps_batched_is_involution():
    rng = np.random.default_rng(4)
    heatmaps = rng.random((2, 8, 6, 17)).astype(np.float32)
    np.testing.assert_array_equal(C.flip_heatmaps(C.flip_heatmaps(heatmaps)), heatmaps)


# ---------------------------------------------------------------------------------------------
# Full round trip: source image -> UDP crop -> heatmaps -> decode -> source image
# ---------------------------------------------------------------------------------------------


def _roundtrip_errors(rng, n_trials, in_wh, hm_wh, sigma, border_margin):
    """Errors in heatmap pixels of points >= border_margin inside the heatmap, and the count."""
    img_w, img_h = 640, 480
    params = T.GeometryAugParams(shift_prob=1.0, rotate_prob=1.0)
    errors, checked, total = [], 0, 0
    for trial in range(n_trials):
        bw, bh = rng.uniform(60, 400), rng.uniform(60, 400)
        x, y = rng.uniform(-20, img_w - bw + 20), rng.uniform(-20, img_h - bh + 20)
        kpts = np.stack([rng.uniform(x, x + bw, 17), rng.uniform(y, y + bh, 17)], -1)
        vis = np.ones(17, np.float32)
        center, scale = T.bbox_xywh_to_center_scale([x, y, bw, bh], aspect_ratio=None)
        center, scale, rot = T.random_bbox_transform(center, scale, rng, params)
        scale = T.fix_aspect_ratio(scale, in_wh[0] / in_wh[1])
        flipped = trial % 2 == 1
        if flipped:  # flip in the source frame, as the training pipeline does
            kpts_src, vis_src = T.flip_keypoints(kpts, vis, img_w)
            center = T.flip_points(center, img_w)
        else:
            kpts_src, vis_src = kpts, vis

        matrix = T.get_udp_warp_matrix(center, scale, rot, in_wh)
        crop_kpts, crop_vis = T.warp_keypoints(kpts_src, vis_src, matrix, in_wh)
        heatmaps, weights = C.encode_udp_heatmaps(crop_kpts, crop_vis, input_wh=in_wh, heatmap_wh=hm_wh, sigma=sigma)
        decoded, _ = C.decode_udp_heatmaps(heatmaps, input_wh=in_wh)
        back = T.crop_to_image_coords(decoded, center, scale, rot, in_wh)
        hm_pos = crop_kpts / C.udp_scale_factor(in_wh, hm_wh)
        interior = ((hm_pos >= border_margin) & (hm_pos <= np.array(hm_wh) - 1 - border_margin)).all(-1) & (weights > 0)
        if flipped:  # undo the flip (an involution) to compare with the original points
            back, interior = T.flip_keypoints(back, interior, img_w)
        px_per_hm_px = (scale / (np.array(hm_wh) - 1)).max()
        errors.append(np.linalg.norm(back - kpts, axis=-1)[interior] / px_per_hm_px)
        checked += interior.sum()
        total += 17
    return np.concatenate(errors), checked, total


def test_roundtrip_within_half_heatmap_pixel():
    """Random boxes, shifts, scales, rotations and sub-pixel points, with and without flip.

    Points closer than 2 heatmap px to the heatmap border are left out: there mmpose's DARK-UDP
    is biased by design (truncated target + zero-padded blur), up to ~1 px at sigma 2.
    """
    errors, checked, total = _roundtrip_errors(np.random.default_rng(5), 120, IN_WH, HM_WH, SIGMA, border_margin=2.0)
    assert checked > 0.6 * total
    assert errors.max() <= 0.5
    assert np.median(errors) < 0.01


def test_roundtrip_full_size_sigma6():
    errors, checked, total = _roundtrip_errors(
        np.random.default_rng(6), 6, (768, 1024), (192, 256), 6.0, border_margin=6.0
    )
    assert checked > 0.6 * total
    assert errors.max() <= 0.5


@pytest.mark.parametrize("arch, kernel", [("sapiens_0.3b", 11), ("sapiens_2b", 11), ("cpu", 3)])
def test_presets_decode_with_the_kernel_rule(arch, kernel):
    """The Sapiens presets keep mmpose's / Sapiens' DARK kernel (11 at sigma 6 on 256x192: no drift);
    the cpu preset's 32x24 maps at sigma 2 get 3 (what the tuning measurements chose)."""
    from hyper_sapiens_jax.config import base_config
    from hyper_sapiens_jax.jobs.inputs import sample_config

    config = base_config(arch)
    cfg = sample_config(config)
    assert config.eval.blur_kernel == 0 and config.eval.flip_test
    assert C.dark_blur_kernel(cfg.heatmap_wh, cfg.heatmap_sigma) == kernel


@pytest.mark.parametrize(("input_wh", "sigma"), [((48, 64), 2.0), ((192, 256), 2.0), ((768, 1024), 6.0)])
def test_device_heatmaps_equal_the_host_codec(input_wh, sigma):
    """Random keypoints, some outside the crop (partial and missed windows), some unlabelled or
    half-visible: the device encoder equals ``encode_udp_heatmaps`` (float64) to 2e-6, and the
    codec's own weights (``udp_target_weights``) are what it draws from. The gap is float32's: the
    sub-pixel centre kp / scale carries ~1e-7 relative error, ~1e-5 heatmap pixels at 256x192,
    which moves a sigma-2 Gaussian by up to 1.6e-6 (measured) on 0.02% of the pixels."""
    rng = np.random.default_rng(0)
    heatmap_wh = (input_wh[0] // 4, input_wh[1] // 4)
    b, k = 4, 17
    span = np.asarray(input_wh, np.float32)
    keypoints = rng.uniform(-0.3 * span, 1.3 * span, size=(b, k, 2)).astype(np.float32)
    visible = rng.choice([0.0, 0.3, 1.0, 2.0], size=(b, k)).astype(np.float32)
    ref_maps, ref_weights = zip(
        *(
            C.encode_udp_heatmaps(kp, v, input_wh=input_wh, heatmap_wh=heatmap_wh, sigma=sigma)
            for kp, v in zip(keypoints, visible)
        )
    )
    weights = np.stack(
        [
            C.udp_target_weights(kp, v, input_wh=input_wh, heatmap_wh=heatmap_wh, sigma=sigma)
            for kp, v in zip(keypoints, visible)
        ]
    )
    np.testing.assert_array_equal(weights, np.stack(ref_weights))
    assert 0 < (weights > 0).sum() < weights.size  # both drawn and undrawn points occur
    maps = np.asarray(
        C.encode_udp_heatmaps_device(jnp.asarray(keypoints), jnp.asarray(weights), input_wh, heatmap_wh, sigma)
    )
    assert maps.shape == (b, heatmap_wh[1], heatmap_wh[0], k) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, np.stack(ref_maps), rtol=0, atol=2e-6)
