"""Tests for the top-down transforms: boxes, UDP warps, flips, normals/depth, texture, norm."""

import math

import cv2
import numpy as np
import pytest

from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import COCO17_FLIP_PAIRS, flip_permutation


def mmpose_udp_warp_reference(center, scale, rot, output_size):
    """mmpose get_udp_warp_matrix, element by element."""
    input_size = center * 2
    r = np.deg2rad(rot)
    sx = (output_size[0] - 1) / scale[0]
    sy = (output_size[1] - 1) / scale[1]
    m = np.zeros((2, 3))
    m[0, 0] = math.cos(r) * sx
    m[0, 1] = -math.sin(r) * sx
    m[0, 2] = sx * (-0.5 * input_size[0] * math.cos(r) + 0.5 * input_size[1] * math.sin(r) + 0.5 * scale[0])
    m[1, 0] = math.sin(r) * sy
    m[1, 1] = math.cos(r) * sy
    m[1, 2] = sy * (-0.5 * input_size[0] * math.sin(r) - 0.5 * input_size[1] * math.cos(r) + 0.5 * scale[1])
    return m


# ---------------------------------------------------------------------------------------------
# Boxes and affine maps
# ---------------------------------------------------------------------------------------------


def test_bbox_to_center_scale_pads_and_fixes_aspect():
    center, scale = T.bbox_xywh_to_center_scale([10, 20, 100, 100])
    np.testing.assert_allclose(center, [60, 70])
    np.testing.assert_allclose(scale, [125, 125 / 0.75])  # too wide for 3:4 -> taller
    _, scale = T.bbox_xywh_to_center_scale([0, 0, 30, 200])
    np.testing.assert_allclose(scale, [250 * 0.75, 250])  # too tall -> wider
    _, scale = T.bbox_xywh_to_center_scale([0, 0, 30, 200], aspect_ratio=None)
    np.testing.assert_allclose(scale, [37.5, 250])


def test_udp_warp_matrix_matches_mmpose_and_maps_box_to_crop_corners():
    rng = np.random.default_rng(0)
    for _ in range(10):
        center, scale = rng.uniform(50, 500, 2), rng.uniform(20, 400, 2)
        rot = rng.uniform(-80, 80)
        np.testing.assert_allclose(
            T.get_udp_warp_matrix(center, scale, rot, (192, 256)),
            mmpose_udp_warp_reference(center, scale, rot, (192, 256)),
            rtol=1e-10,
            atol=1e-9,
        )
    matrix = T.get_udp_warp_matrix(np.array([100.0, 80.0]), np.array([60.0, 80.0]), 0.0, (192, 256))
    corners = T.apply_affine([[70.0, 40.0], [130.0, 120.0], [100.0, 80.0]], matrix)
    np.testing.assert_allclose(corners, [[0, 0], [191, 255], [95.5, 127.5]], atol=1e-9)


def test_inverse_maps_agree_and_are_batched():
    rng = np.random.default_rng(1)
    centers, scales = rng.uniform(50, 500, (4, 2)), rng.uniform(20, 400, (4, 2))
    rots = rng.uniform(-80, 80, 4)
    points = rng.uniform(-50, 300, (4, 17, 2))
    batched = T.crop_to_image_coords(points, centers, scales, rots, (192, 256))
    for b in range(4):
        matrix = T.get_udp_warp_matrix(centers[b], scales[b], rots[b], (192, 256))
        linear_inv = np.linalg.inv(matrix[:, :2])
        inverse = np.concatenate([linear_inv, -linear_inv @ matrix[:, 2:]], axis=1)
        np.testing.assert_allclose(T.apply_affine(T.apply_affine(points[b], inverse), matrix), points[b], atol=1e-9)
        np.testing.assert_allclose(batched[b], T.apply_affine(points[b], inverse), atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Flips
# ---------------------------------------------------------------------------------------------


def test_flip_twice_is_identity():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    normal = rng.normal(size=(40, 30, 3)).astype(np.float32)
    kpts, vis = rng.uniform(0, 29, (17, 2)), (rng.random(17) > 0.3).astype(np.float32)
    np.testing.assert_array_equal(T.flip_image(T.flip_image(image)), image)
    np.testing.assert_array_equal(T.flip_normals(T.flip_normals(normal)), normal)
    k2, v2 = T.flip_keypoints(*T.flip_keypoints(kpts, vis, 30), 30)
    np.testing.assert_allclose(k2, kpts, atol=1e-12)
    np.testing.assert_array_equal(v2, vis)
    # One flip: mirrored image, negated normal x, and the pixel-centre mirror x -> W - 1 - x.
    np.testing.assert_array_equal(T.flip_image(image)[:, 0], image[:, -1])
    np.testing.assert_array_equal(T.flip_normals(normal)[:, 0, 0], -normal[:, -1, 0])
    np.testing.assert_array_equal(T.flip_normals(normal)[:, 0, 1:], normal[:, -1, 1:])
    np.testing.assert_allclose(T.flip_points([[0.0, 5.0], [29.0, 1.0]], 30), [[29, 5], [0, 1]])


def test_flip_symmetric_skeleton_is_invariant_and_swaps_sides():
    width, axis = 101, 50.0
    rng = np.random.default_rng(3)
    kpts = np.zeros((17, 2))
    kpts[0] = [axis, 10.0]  # nose on the symmetry axis
    for left, right in COCO17_FLIP_PAIRS:
        dx, y = rng.uniform(3, 40), rng.uniform(10, 90)
        kpts[left], kpts[right] = [axis + dx, y], [axis - dx, y]  # facing the camera
    vis = np.ones(17)
    flipped, _ = T.flip_keypoints(kpts, vis, width)
    np.testing.assert_allclose(flipped, kpts, atol=1e-12)
    # An asymmetric pose: the flipped left wrist sits at the mirrored right wrist.
    kpts[10] += [5.0, 7.0]
    flipped, _ = T.flip_keypoints(kpts, vis, width)
    np.testing.assert_allclose(flipped[9], [width - 1 - kpts[10, 0], kpts[10, 1]])
    assert (flip_permutation()[[9, 10]] == [10, 9]).all()


# ---------------------------------------------------------------------------------------------
# Normals and depth
# ---------------------------------------------------------------------------------------------


def _plane_scene(slope_x=0.3, slope_y=-0.5, shape=(200, 240)):
    """Depth of a tilted plane inside a disk (background -1) and its analytic normals.

    With camera axes x right, y down, z forward, the surface (x, y, z(x, y)) has the
    camera-facing normal (z_x, z_y, -1) / norm in pixel units.
    """
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = (xs - w / 2) ** 2 + (ys - h / 2) ** 2 < (0.45 * h) ** 2
    depth = np.where(inside, 200.0 + slope_x * xs + slope_y * ys, -1.0).astype(np.float32)
    n = np.array([slope_x, slope_y, -1.0]) / np.linalg.norm([slope_x, slope_y, -1.0])
    normal = np.where(inside[..., None], n, 0.0).astype(np.float32)
    return depth, normal, n


def _normal_from_depth_fit(depth):
    """Fit z = a x + b y + c to the valid pixels; return the camera-facing normal."""
    ys, xs = np.nonzero(depth > -1)
    design = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64)
    (a, b, _), *_ = np.linalg.lstsq(design, depth[ys, xs].astype(np.float64), rcond=None)
    return np.array([a, b, -1.0]) / np.linalg.norm([a, b, -1.0])


@pytest.mark.parametrize("rot", [35.0, -70.0])
def test_warped_normals_follow_the_warped_geometry(rot):
    depth, normal, n0 = _plane_scene()
    out_wh = (120, 100)
    # scale = output - 1 makes the crop 1:1 in pixels, so the warp is a pure rotation.
    center, scale = np.array([120.0, 100.0]), np.array([119.0, 99.0])
    out = T.warp_sample(center, scale, rot, output_wh=out_wh, depth=depth, normal=normal)
    valid = np.linalg.norm(out["normal"], axis=-1) > 0
    assert valid.mean() > 0.3
    np.testing.assert_allclose(np.linalg.norm(out["normal"][valid], axis=-1), 1.0, atol=1e-5)
    # Independent check: the normal of the plane fitted to the *warped depth*.
    n_geometry = _normal_from_depth_fit(out["depth"])
    np.testing.assert_allclose(out["normal"][valid], np.broadcast_to(n_geometry, (valid.sum(), 3)), atol=2e-3)
    # And the analytic rotation of the original normal by the image-plane rotation.
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    n_rot = np.array([c * n0[0] - s * n0[1], s * n0[0] + c * n0[1], n0[2]])
    np.testing.assert_allclose(out["normal"][valid].mean(0), n_rot, atol=1e-4)
    # Invalid (background / outside) pixels stay zero, and agree with the depth validity.
    assert np.all(out["normal"][~valid] == 0)
    assert np.mean(valid == (out["depth"] > -1)) > 0.99


def test_warped_normals_with_y_up_convention():
    depth, normal, _ = _plane_scene()
    normal_up = normal * np.array([1, -1, 1], np.float32)
    center, scale = np.array([120.0, 100.0]), np.array([119.0, 99.0])
    out = T.warp_sample(center, scale, 50.0, output_wh=(120, 100), depth=depth, normal=normal_up, normal_y_down=False)
    valid = np.linalg.norm(out["normal"], axis=-1) > 0
    n_geometry_up = _normal_from_depth_fit(out["depth"]) * [1, -1, 1]
    np.testing.assert_allclose(out["normal"][valid].mean(0), n_geometry_up, atol=2e-3)


def test_flipped_normals_follow_the_flipped_geometry():
    depth, normal, _ = _plane_scene()
    n_flip = T.flip_normals(normal)
    valid = np.linalg.norm(n_flip, axis=-1) > 0
    np.testing.assert_allclose(n_flip[valid].mean(0), _normal_from_depth_fit(T.flip_image(depth)), atol=1e-3)


def test_depth_warp_never_blends_foreground_with_background():
    rng = np.random.default_rng(4)
    h, w = 120, 160
    ys, xs = np.mgrid[0:h, 0:w]
    blobs = ((xs - 60) ** 2 + (ys - 50) ** 2 < 900) | ((abs(xs - 120) < 15) & (abs(ys - 80) < 30))
    depth = np.where(blobs, rng.uniform(0.2, 1.0, (h, w)), -1.0).astype(np.float32)
    saw_edge = False
    for _ in range(10):
        center = rng.uniform([50, 40], [110, 80])
        scale = rng.uniform(40, 200) * np.array([0.75, 1.0])
        rot = rng.uniform(-80, 80)
        matrix = T.get_udp_warp_matrix(center, scale, rot, (60, 80))
        out = T.warp_depth(depth, matrix, (60, 80))
        assert out.dtype == np.float32 and out.shape == (80, 60)
        assert np.all((out == -1.0) | ((out >= 0.2 - 1e-5) & (out <= 1.0 + 1e-5)))
        # Valid pixels coincide (up to boundary pixels) with a nearest-neighbour mask warp.
        nearest = T.warp_mask(blobs.astype(np.uint8), matrix, (60, 80)) > 0
        assert np.mean(nearest == (out > -1)) > 0.97
        naive = cv2.warpAffine(depth, matrix, (60, 80), flags=cv2.INTER_LINEAR, borderValue=-1)
        saw_edge |= bool(np.any((naive > -1 + 1e-3) & (naive < 0.2 - 1e-3)))
    assert saw_edge  # the naive bilinear warp would have produced blended values here


def _warp_whole_source(values, valid, matrix, output_wh):
    """The normalised-convolution warp over the whole source (the reference)."""
    v = valid.astype(np.float32)[..., None]
    stacked = np.concatenate([values.astype(np.float32) * v, v], axis=-1)
    warped = cv2.warpAffine(stacked, matrix, output_wh, flags=cv2.INTER_LINEAR, borderValue=0)
    return warped[..., :-1], warped[..., -1]


def test_depth_and_normal_warps_read_only_their_window_and_equal_the_whole_source_warp():
    rng = np.random.default_rng(8)
    h, w = 96, 128
    ys, xs = np.mgrid[0:h, 0:w]
    person = (xs - 70) ** 2 / 900 + (ys - 50) ** 2 / 400 < 1
    depth = np.where(person, rng.uniform(1.0, 2.0, (h, w)), -1.0).astype(np.float32)
    normal = np.stack([(xs - 70) / 30, (ys - 50) / 20, -np.ones((h, w))], -1)  # a smooth surface's
    normal = np.where(person[..., None], normal / np.linalg.norm(normal, axis=-1, keepdims=True), 0.0)
    windows = 0
    for center, size, rot in [((70, 50), 60, 0.0), ((70, 50), 40, 35.0), ((5, 5), 50, -20.0), ((300, 300), 30, 0.0)]:
        matrix = T.get_udp_warp_matrix(np.array(center, float), size * np.array([0.75, 1.0]), rot, (48, 64))
        window = T.source_window(matrix, (48, 64), (h, w))
        windows += (
            window is not None
            and (window[0][0].stop - window[0][0].start) * (window[0][1].stop - window[0][1].start) < h * w
        )
        summed, weight = _warp_whole_source(depth[..., None], depth > -1, matrix, (48, 64))
        want = np.where(weight >= 0.5, summed[..., 0] / np.maximum(weight, 1e-9), -1.0)
        np.testing.assert_allclose(T.warp_depth(depth, matrix, (48, 64)), want, rtol=1e-5, atol=1e-5)
        summed, weight = _warp_whole_source(normal, person, matrix, (48, 64))
        r = T.rotation_matrix_2d(rot)
        summed[..., :2] = summed[..., :2] @ r.T
        length = np.linalg.norm(summed, axis=-1, keepdims=True)
        keep = (weight[..., None] >= 0.5) & (length > 1e-6 * weight[..., None])
        want = np.where(keep, summed / np.maximum(length, 1e-12), 0.0)
        got = T.warp_normals(normal, matrix, (48, 64), rot)
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert got.dtype == np.float32 and (np.abs(np.linalg.norm(got, axis=-1) - 1) < 1e-5)[keep[..., 0]].all()
    assert windows >= 2  # most crops read a part of the frame; the last one none of it


def test_mask_warp_is_nearest_and_keeps_dtype():
    rng = np.random.default_rng(5)
    mask = rng.integers(0, 4, (60, 50), dtype=np.uint8)
    matrix = T.get_udp_warp_matrix(np.array([25.0, 30.0]), np.array([30.0, 40.0]), 33.0, (24, 32))
    out = T.warp_mask(mask, matrix, (24, 32))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2, 3}
    bool_out = T.warp_mask(mask > 1, matrix, (24, 32))
    assert bool_out.dtype == np.bool_
    np.testing.assert_array_equal(bool_out, out > 1)


# ---------------------------------------------------------------------------------------------
# Keypoints through the warp
# ---------------------------------------------------------------------------------------------


def test_keypoints_outside_the_crop_get_zero_visibility():
    center, scale = np.array([100.0, 100.0]), np.array([75.0, 100.0])
    kpts = np.array([[100.0, 100.0], [62.5, 50.0], [137.5, 150.0], [10.0, 100.0], [100, 151.0]])
    out = T.warp_sample(
        center, scale, 0.0, output_wh=(192, 256), keypoints=kpts, keypoints_visible=np.array([1, 1, 1, 1, 1])
    )
    np.testing.assert_allclose(out["keypoints"][:3], [[95.5, 127.5], [0, 0], [191, 255]], atol=1e-4)
    np.testing.assert_array_equal(out["keypoints_visible"], [1, 1, 1, 0, 0])


def _blob_image(kpts, shape=(480, 640)):
    """Black image with a disk of colour (10 + 14 k, 255, 0) around keypoint k."""
    image = np.zeros(shape + (3,), np.uint8)
    for k, (x, y) in enumerate(kpts):
        cv2.circle(image, (int(round(x)), int(round(y))), 7, (10 + 14 * k, 255, 0), -1)
    return image


@pytest.mark.parametrize("flip_prob", [0.0, 1.0])
def test_random_crop_moves_image_and_keypoints_together(flip_prob):
    rng = np.random.default_rng(6)
    params = T.GeometryAugParams(flip_prob=flip_prob, half_body_prob=0.5)
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(4)), -1).reshape(-1, 2)[:17]
    checked = 0
    for _ in range(8):
        origin = rng.uniform([40, 40], [400, 280])
        kpts = origin + grid * 40.0 + rng.uniform(-5, 5, (17, 2))  # blobs never overlap
        image = _blob_image(kpts)
        mask = image[..., 1] > 0
        depth = np.where(mask, 0.5, -1.0).astype(np.float32)
        normal = np.where(mask[..., None], np.float32([0.6, 0.0, -0.8]), 0).astype(np.float32)
        bbox = [*(kpts.min(0) - 10), *(kpts.max(0) - kpts.min(0) + 20)]
        out = T.random_topdown_crop(
            bbox,
            rng,
            params,
            input_wh=(192, 256),
            image=image,
            keypoints=kpts,
            keypoints_visible=np.ones(17),
            mask=mask,
            depth=depth,
            normal=normal,
        )
        assert out["image"].shape == (256, 192, 3) and out["flipped"] == (flip_prob == 1.0)
        assert out["mask"].shape == out["depth"].shape == (256, 192)
        assert out["normal"].shape == (256, 192, 3)
        source_id = flip_permutation() if out["flipped"] else np.arange(17)
        nx = -0.6 if out["flipped"] else 0.6
        angle = math.radians(out["rotation"])
        expected_normal = [nx * math.cos(angle), nx * math.sin(angle), -0.8]
        for k in np.nonzero(out["keypoints_visible"])[0]:
            x, y = np.rint(out["keypoints"][k]).astype(int)
            r, g, _ = out["image"][y, x].astype(int)
            assert g == 255 and abs(r - (10 + 14 * source_id[k])) <= 1, (k, r, g)
            assert out["mask"][y, x] and out["depth"][y, x] == pytest.approx(0.5)
            np.testing.assert_allclose(out["normal"][y, x], expected_normal, atol=1e-5)
            checked += 1
    assert checked > 50


def test_topdown_crop_is_deterministic_center_crop():
    image = np.zeros((100, 100, 3), np.uint8)
    out = T.topdown_crop([20, 10, 60, 80], input_wh=(48, 64), image=image, keypoints=np.array([[50.0, 50.0]]))
    np.testing.assert_allclose(out["center"], [50, 50])
    np.testing.assert_allclose(out["scale"], [75, 100])
    np.testing.assert_allclose(out["keypoints"], [[23.5, 31.5]], atol=1e-4)
    assert out["rotation"] == 0.0 and out["image"].shape == (64, 48, 3)


# ---------------------------------------------------------------------------------------------
# Random box augmentation
# ---------------------------------------------------------------------------------------------


def test_random_half_body_boxes_the_chosen_half():
    rng = np.random.default_rng(7)
    kpts = np.stack([rng.uniform(0, 100, 17), np.r_[rng.uniform(0, 50, 11), rng.uniform(60, 120, 6)]], -1)
    vis = np.ones(17)
    params = T.GeometryAugParams(half_body_prob=1.0)
    center0, scale0 = np.array([50.0, 60.0]), np.array([100.0, 120.0])
    chosen = set()
    for _ in range(30):
        center, scale = T.random_half_body(kpts, vis, center0, scale0, rng, params)
        half = kpts[:11] if center[1] < 55 else kpts[11:]
        chosen.add(center[1] < 55)
        np.testing.assert_allclose(center, half.mean(0))
        np.testing.assert_allclose(scale, (half.max(0) - half.min(0)) * 1.5)
    assert chosen == {True, False}
    # Too few visible points: unchanged. Lower body hidden: always the upper body.
    few = np.zeros(17)
    few[:5] = 1
    assert T.random_half_body(kpts, few, center0, scale0, rng, params)[0] is center0
    upper_only = np.r_[np.ones(11), np.zeros(6)]
    for _ in range(5):
        center, _ = T.random_half_body(kpts, upper_only, center0, scale0, rng, params)
        np.testing.assert_allclose(center, kpts[:11].mean(0))


def test_random_bbox_transform_ranges_and_probabilities():
    rng = np.random.default_rng(8)
    center0, scale0 = np.array([100.0, 100.0]), np.array([60.0, 80.0])
    draws = [T.random_bbox_transform(center0, scale0, rng) for _ in range(400)]
    shifts = np.array([(c - center0) / scale0 for c, _, _ in draws])
    factors = np.array([s[0] / scale0[0] for _, s, _ in draws])
    rots = np.array([r for _, _, r in draws])
    assert np.abs(shifts).max() <= 0.16 + 1e-9 and 0.2 < np.mean(np.any(shifts != 0, -1)) < 0.4
    assert factors.min() >= 0.5 and factors.max() <= 1.5 and factors.std() > 0.15
    assert np.abs(rots).max() <= 80 and 0.5 < np.mean(rots != 0) < 0.7
    off = T.GeometryAugParams(shift_prob=0, scale_prob=0, rotate_prob=0)
    c, s, r = T.random_bbox_transform(center0, scale0, rng, off)
    np.testing.assert_array_equal(c, center0)
    np.testing.assert_array_equal(s, scale0)
    assert r == 0


# ---------------------------------------------------------------------------------------------
# Texture and normalisation
# ---------------------------------------------------------------------------------------------


def _natural_image(rng, shape=(64, 48)):
    base = cv2.resize(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8), shape[::-1])
    return np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def test_photometric_distortion_keeps_dtype_shape_and_changes_pixels():
    rng = np.random.default_rng(9)
    image = _natural_image(rng)
    before = image.copy()
    changed = 0
    for seed in range(20):
        out = T.photometric_distortion(image, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == image.shape
        changed += not np.array_equal(out, image)
    assert changed >= 15  # all four sub-steps skip together only with probability 1/64
    np.testing.assert_array_equal(image, before)
    a = T.photometric_distortion(image, np.random.default_rng(3))
    np.testing.assert_array_equal(a, T.photometric_distortion(image, np.random.default_rng(3)))


def _photometric_per_pixel(image, rng, brightness_delta=32.0, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5)):
    """The mmcv PhotometricDistortion as float32 arithmetic on every pixel (the reference the
    table-driven ``photometric_distortion`` must equal byte for byte), the same draws in order."""
    convert = lambda x, alpha=1.0, beta=0.0: np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
    contrast_last = rng.integers(2) == 1
    do_brightness, do_contrast, do_swap = rng.integers(2, size=3) == 1
    hsv_mode = int(rng.integers(4))
    beta, alpha = rng.uniform(-brightness_delta, brightness_delta), rng.uniform(*contrast_range)
    saturation, hue, order = rng.uniform(*saturation_range), int(rng.integers(-18, 18)), rng.permutation(3)
    out = convert(image, beta=beta) if do_brightness else image
    out = convert(out, alpha=alpha) if do_contrast and not contrast_last else out
    if hsv_mode:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        if hsv_mode in (1, 3):
            hsv[..., 1] = convert(hsv[..., 1], alpha=saturation)
        if hsv_mode in (2, 3):
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + hue) % 180
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    out = convert(out, alpha=alpha) if do_contrast and contrast_last else out
    return out[..., order] if do_swap else out


def test_photometric_distortion_equals_the_per_pixel_arithmetic():
    image = _natural_image(np.random.default_rng(5), (96, 72))
    for seed in range(64):  # every combination of the sub-steps, many times over
        np.testing.assert_array_equal(
            T.photometric_distortion(image, np.random.default_rng(seed)),
            _photometric_per_pixel(image, np.random.default_rng(seed)),
            err_msg=f"seed {seed}",
        )


@pytest.mark.parametrize(
    "op",
    [
        lambda im, rng: T.blur(im, 5, "box"),
        lambda im, rng: T.blur(im, 5, "gaussian"),
        lambda im, rng: T.median_blur(im, 5),
        lambda im, rng: T.gaussian_noise(im, rng, 10.0),
        lambda im, rng: T.jpeg_reencode(im, 20),
        lambda im, rng: T.coarse_dropout(im, rng),
    ],
)
def test_texture_ops_keep_dtype_shape_and_change_pixels(op):
    rng = np.random.default_rng(10)
    image = _natural_image(rng)
    before = image.copy()
    out = op(image, rng)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(image, before)  # never in place


def test_jpeg_keeps_colour_order():
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 220  # pure red
    out = T.jpeg_reencode(image, 90)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 30


def test_coarse_dropout_hole_size():
    rng = np.random.default_rng(11)
    image = np.full((100, 80, 3), 200, np.uint8)
    for _ in range(20):
        holes = np.all(T.coarse_dropout(image, rng) == 0, axis=-1)
        rows, cols = np.nonzero(holes.any(1))[0], np.nonzero(holes.any(0))[0]
        assert 20 <= len(rows) <= 40 and 16 <= len(cols) <= 32
        assert holes.sum() == len(rows) * len(cols)  # one rectangle


def test_random_texture_chain_only_touches_the_image():
    rng = np.random.default_rng(12)
    image = _natural_image(rng)
    before = image.copy()
    params = T.TextureAugParams(blur_prob=1.0, median_blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0)
    out = T.random_texture(image, rng, params)
    assert out.dtype == np.uint8 and out.shape == image.shape and not np.array_equal(out, image)
    np.testing.assert_array_equal(image, before)
    off = T.TextureAugParams(photometric_prob=0, blur_prob=0, median_blur_prob=0, dropout_prob=0)
    np.testing.assert_array_equal(T.random_texture(image, rng, off), image)


def test_normalisation_round_trip():
    rng = np.random.default_rng(13)
    image = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    normed = T.normalize_image(image)
    assert normed.dtype == np.float32
    np.testing.assert_array_equal(T.denormalize_image(normed), image)
    mean_pixel = np.array([[[123.675, 116.28, 103.53]]])
    np.testing.assert_allclose(T.normalize_image(mean_pixel), 0, atol=1e-6)
    np.testing.assert_allclose(
        T.normalize_image(np.zeros((1, 1, 3)))[0, 0],
        -np.array([123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375],
        rtol=1e-6,
    )
