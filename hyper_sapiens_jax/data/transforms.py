"""Top-down sample transforms: box -> crop geometry, flips, UDP affine warps, texture noise.

Pure numpy/OpenCV functions over one person crop, meant to run inside a Grain map. Conventions:

- Images are RGB ``uint8`` arrays ``(H, W, 3)``. Points are ``(N, 2)`` float ``(x, y)`` pixel
  coordinates with the pixel-centre convention (pixel ``i`` covers ``[i - 0.5, i + 0.5]``), so a
  horizontal flip maps ``x -> W - 1 - x`` (mmpose ``flip_keypoints``).
- Sizes are ``(W, H)`` and carry a ``_wh`` suffix; array shapes are ``(H, W, ...)``.
- ``center`` is the crop centre ``(x, y)`` and ``scale`` the crop size ``(w, h)`` in source
  pixels (mmpose 1.x ``bbox_center`` / ``bbox_scale``, no 200-px unit).
- Rotations are in degrees and follow mmpose's UDP warp: the crop rotates image content by
  ``R(rot) = [[cos, -sin], [sin, cos]]`` in image coordinates (y pointing down).
- Randomness comes only from an explicit ``np.random.Generator``.

Geometry follows the Sapiens pose recipe (docs/design.md §4) and its mmpose code:
GetBBoxCenterScale, RandomFlip, RandomHalfBody, RandomBBoxTransform, TopdownAffine(use_udp=True);
texture follows PhotometricDistortion plus the albumentations Blur / MedianBlur / CoarseDropout
of its config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from hyper_sapiens_jax.data.keypoints import flip_permutation

# Sapiens input normalisation, RGB order (docs/design.md §2).
SAPIENS_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAPIENS_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# mmpose's COCO metainfo split used by the half-body augmentation: head + arms vs hips + legs.
COCO17_UPPER_BODY: tuple[int, ...] = tuple(range(11))
COCO17_LOWER_BODY: tuple[int, ...] = tuple(range(11, 17))

DEFAULT_INPUT_WH = (768, 1024)  # Sapiens pose/depth/normal input, W x H.

Array = np.ndarray


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GeometryAugParams:
    """Geometric augmentation parameters (defaults: the Sapiens COCO recipe, docs/design.md §4)."""

    bbox_padding: float = 1.25
    flip_prob: float = 0.5
    # RandomHalfBody as in Sapiens' mmpose fork (it only uses visible points).
    half_body_prob: float = 0.3
    half_body_min_total: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_padding: float = 1.5
    half_body_upper_prob: float = 0.7
    # RandomBBoxTransform: truncated-normal shift / scale / rotation.
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6


@dataclasses.dataclass(frozen=True)
class TextureAugParams:
    """Texture (RGB-only) augmentation parameters (defaults: the Sapiens COCO recipe)."""

    photometric_prob: float = 1.0
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18
    channel_swap: bool = True  # PhotometricDistortion's last step (random channel permutation).
    blur_prob: float = 0.1
    blur_kind: str = "box"  # albumentations Blur (Sapiens config); "gaussian" also supported.
    blur_ksize_range: tuple[int, int] = (3, 7)  # odd kernel sizes, inclusive
    median_blur_prob: float = 0.1
    median_ksize_range: tuple[int, int] = (3, 7)
    noise_prob: float = 0.0  # optional extras, off in the Sapiens recipe
    noise_std_range: tuple[float, float] = (3.0, 15.0)
    jpeg_prob: float = 0.0
    jpeg_quality_range: tuple[int, int] = (30, 95)
    dropout_prob: float = 1.0
    dropout_holes: int = 1
    dropout_size_range: tuple[float, float] = (0.2, 0.4)  # fraction of the image side
    dropout_fill: int = 0


# ----------------------------------------------------------------------------------------------
# Boxes
# ----------------------------------------------------------------------------------------------


def fix_aspect_ratio(scale: Array, aspect_ratio: float) -> Array:
    """Grow a box size ``scale (2,) = (w, h)`` to ``w / h == aspect_ratio`` (as TopdownAffine)."""
    w, h = np.asarray(scale, dtype=np.float64)
    if w > h * aspect_ratio:
        return np.array([w, w / aspect_ratio])
    return np.array([h * aspect_ratio, h])


def bbox_xywh_to_center_scale(
    bbox_xywh: Array, *, padding: float = 1.25, aspect_ratio: float | None = 0.75
) -> tuple[Array, Array]:
    """COCO box ``(4,) = (x, y, w, h)`` -> ``center (2,)``, ``scale (2,) = (w, h)`` in pixels.

    The box is padded by ``padding`` and, unless ``aspect_ratio`` (w / h) is None, grown to that
    aspect ratio. mmpose fixes the aspect ratio only at the warp (after half-body and the random
    box transform); pass ``aspect_ratio=None`` to reproduce that order exactly.
    """
    x, y, w, h = np.asarray(bbox_xywh, dtype=np.float64)
    center = np.array([x + 0.5 * w, y + 0.5 * h])
    scale = np.array([w, h]) * padding
    if aspect_ratio is not None:
        scale = fix_aspect_ratio(scale, aspect_ratio)
    return center, scale


# ----------------------------------------------------------------------------------------------
# Affine maps
# ----------------------------------------------------------------------------------------------


def rotation_matrix_2d(rot_deg: float) -> Array:
    """``(2, 2)`` image-plane rotation ``[[cos, -sin], [sin, cos]]`` used by the UDP warp."""
    r = np.deg2rad(rot_deg)
    c, s = np.cos(r), np.sin(r)
    return np.array([[c, -s], [s, c]])


def get_udp_warp_matrix(center: Array, scale: Array, rot_deg: float, output_wh: tuple[int, int]) -> Array:
    """UDP affine ``(2, 3)`` from source pixels to crop pixels (mmpose ``get_udp_warp_matrix``).

    Maps ``p -> S R (p - center) + S scale / 2`` with ``S = diag((W-1)/scale_w, (H-1)/scale_h)``:
    the box edges land exactly on the first/last pixel centres of the ``output_wh`` crop. The
    formula is mmpose's; it is evaluated in float64 (mmpose returns float32).
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    pixel_scale = (np.asarray(output_wh, dtype=np.float64) - 1.0) / scale
    linear = pixel_scale[:, None] * rotation_matrix_2d(rot_deg)
    offset = pixel_scale * 0.5 * scale - linear @ center
    return np.concatenate([linear, offset[:, None]], axis=1)


def apply_affine(points: Array, matrix: Array) -> Array:
    """Apply a ``(2, 3)`` affine to points ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_to_image_coords(
    points: Array, center: Array, scale: Array, rot_deg: Array | float, input_wh: tuple[int, int] = DEFAULT_INPUT_WH
) -> Array:
    """Crop-pixel points ``(..., K, 2)`` -> source-image pixels, inverting the UDP warp exactly.

    Batched: ``center``/``scale`` may be ``(..., 2)`` and ``rot_deg`` ``(...)`` with the leading
    dims of ``points``. (mmpose's inference path ignores rotation and uses ``input_size`` instead
    of ``input_size - 1``; this is the exact inverse of :func:`get_udp_warp_matrix`.)
    """
    points = np.asarray(points, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)[..., None, :]
    scale = np.asarray(scale, dtype=np.float64)[..., None, :]
    r = np.deg2rad(np.asarray(rot_deg, dtype=np.float64))[..., None]
    pixel_scale = (np.asarray(input_wh, dtype=np.float64) - 1.0) / scale
    u = points / pixel_scale - 0.5 * scale  # = R (p - center)
    c, s = np.cos(r), np.sin(r)
    # p - center = R^T u
    dx = c * u[..., 0] + s * u[..., 1]
    dy = -s * u[..., 0] + c * u[..., 1]
    return np.stack([dx, dy], axis=-1) + center


# ----------------------------------------------------------------------------------------------
# Horizontal flip (in the full source image, before the crop, as mmpose RandomFlip)
# ----------------------------------------------------------------------------------------------


def flip_image(image: Array) -> Array:
    """Mirror an ``(H, W, ...)`` array left-right (image, depth, mask)."""
    return np.ascontiguousarray(image[:, ::-1])


def flip_points(points: Array, image_width: int) -> Array:
    """Mirror points ``(..., 2)`` in an image of width ``image_width``: ``x -> W - 1 - x``."""
    points = np.array(points, dtype=np.float64)
    points[..., 0] = image_width - 1 - points[..., 0]
    return points


def flip_keypoints(
    keypoints: Array, keypoints_visible: Array, image_width: int, flip_indices: Array | None = None
) -> tuple[Array, Array]:
    """Mirror keypoints ``(K, 2)`` and swap left/right: returns ``(keypoints, visible (K,))``.

    ``flip_indices`` defaults to the COCO-17 permutation; after the flip, point ``k`` is the
    mirrored point ``flip_indices[k]`` (the person's left side appears on the other side).
    """
    if flip_indices is None:
        flip_indices = flip_permutation(len(keypoints))
    flipped = flip_points(keypoints, image_width)[flip_indices]
    return flipped, np.asarray(keypoints_visible)[flip_indices]


def flip_normals(normal: Array) -> Array:
    """Mirror a normal map ``(H, W, 3)``; x changes sign (Sapiens ``NormalRandomFlip``)."""
    flipped = flip_image(normal).astype(np.float32, copy=True)
    flipped[..., 0] *= -1.0
    return flipped


# ----------------------------------------------------------------------------------------------
# Random box augmentation
# ----------------------------------------------------------------------------------------------


def truncated_normal(
    rng: np.random.Generator, size: int | tuple[int, ...] = (), low: float = -1.0, high: float = 1.0
) -> Array:
    """Standard normal samples truncated to ``[low, high]`` (scipy ``truncnorm``) by rejection."""
    out = rng.standard_normal(size)
    bad = (out < low) | (out > high)
    while np.any(bad):
        out = np.where(bad, rng.standard_normal(size), out)
        bad = (out < low) | (out > high)
    return out


def random_half_body(
    keypoints: Array,
    keypoints_visible: Array,
    center: Array,
    scale: Array,
    rng: np.random.Generator,
    params: GeometryAugParams = GeometryAugParams(),
    upper_body: tuple[int, ...] = COCO17_UPPER_BODY,
    lower_body: tuple[int, ...] = COCO17_LOWER_BODY,
) -> tuple[Array, Array]:
    """Maybe replace the box by one around the visible upper- or lower-body points.

    Sapiens' mmpose RandomHalfBody: needs ``half_body_min_total`` visible points, fires with
    ``half_body_prob``, prefers the upper body with ``half_body_upper_prob`` unless a half has too
    few visible points. The new box is the points' mean and padded extent (aspect fixed later).
    Returns ``(center (2,), scale (2,))``, unchanged when not applied.
    """
    visible = np.asarray(keypoints_visible) > 0
    if visible.sum() < params.half_body_min_total or rng.random() > params.half_body_prob:
        return center, scale
    upper = [i for i in upper_body if visible[i]]
    lower = [i for i in lower_body if visible[i]]
    prefer_upper = rng.random() < params.half_body_upper_prob
    upper_ok = len(upper) >= params.half_body_min_upper
    lower_ok = len(lower) >= params.half_body_min_lower
    if not (upper_ok or lower_ok):
        return center, scale
    chosen = upper if (upper_ok and (prefer_upper or not lower_ok)) else lower
    selected = np.asarray(keypoints, dtype=np.float64)[chosen]
    new_scale = (selected.max(axis=0) - selected.min(axis=0)) * params.half_body_padding
    if new_scale.max() < 1.0:  # coincident points would give a degenerate (zero-size) crop
        return center, scale
    return selected.mean(axis=0), new_scale


def random_bbox_transform(
    center: Array, scale: Array, rng: np.random.Generator, params: GeometryAugParams = GeometryAugParams()
) -> tuple[Array, Array, float]:
    """Random shift / rescale / rotation of a box (Sapiens' mmpose RandomBBoxTransform).

    Each factor is a truncated normal on [-1, 1]: shift ``* shift_factor * scale`` (prob
    ``shift_prob``), scale ``* (mid + half_width * t)`` over ``scale_range`` (prob ``scale_prob``),
    rotation ``* rotate_factor`` degrees (prob ``rotate_prob``).
    Returns ``(center (2,), scale (2,), rot_deg)``.
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    offset = truncated_normal(rng, 2) * params.shift_factor
    if rng.random() >= params.shift_prob:
        offset = np.zeros(2)
    lo, hi = params.scale_range
    factor = truncated_normal(rng) * (hi - lo) * 0.5 + (hi + lo) * 0.5
    if rng.random() >= params.scale_prob:
        factor = 1.0
    rot = float(truncated_normal(rng)) * params.rotate_factor
    if rng.random() >= params.rotate_prob:
        rot = 0.0
    return center + offset * scale, scale * factor, rot


# ----------------------------------------------------------------------------------------------
# Warps
# ----------------------------------------------------------------------------------------------


def warp_image(image: Array, matrix: Array, output_wh: tuple[int, int]) -> Array:
    """Bilinear affine warp of ``(H, W, C)`` to ``(out_h, out_w, C)``; outside is 0 (mmpose)."""
    return cv2.warpAffine(
        image, matrix, tuple(output_wh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def warp_mask(mask: Array, matrix: Array, output_wh: tuple[int, int]) -> Array:
    """Nearest-neighbour warp of a label/mask ``(H, W)``; outside is 0. Keeps the dtype.

    Takes bool or any dtype OpenCV warps (uint8, uint16, int16, float32, float64).
    """
    dtype = mask.dtype
    src = mask.astype(np.uint8) if dtype == np.bool_ else mask
    out = cv2.warpAffine(
        src, matrix, tuple(output_wh), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return out.astype(dtype, copy=False)


def source_window(
    matrix: Array, output_wh: tuple[int, int], shape: tuple[int, int], pad: int = 2
) -> tuple[tuple[slice, slice], Array] | None:
    """The part of an (H, W) source that an affine warp to ``output_wh`` reads, as (rows, cols)
    slices, and the warp matrix for that window; None when the output sees none of the source.

    Bilinear sampling reads the two pixels around each mapped point: the window holds every one of
    them (``pad``), so warping the window gives the warp of the whole source. Per-pixel work before
    the warp (masks, products) then runs on the window only: a top-down crop reads a small part of
    a frame."""
    w, h = output_wh
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float64)
    src = corners @ cv2.invertAffineTransform(np.asarray(matrix, np.float64)).T  # (4, 2) x, y
    x0, y0 = np.maximum(np.floor(src.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(src.max(0)).astype(int) + pad + 1, (shape[1], shape[0]))
    if x0 >= x1 or y0 >= y1:
        return None
    shifted = np.array(matrix, np.float64)
    shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)
    return (slice(y0, y1), slice(x0, x1)), shifted


def _warp_valid_only(values: Array, valid: Array, matrix: Array, output_wh: tuple[int, int]) -> tuple[Array, Array]:
    """Bilinear warp of ``values (H, W, C)`` and ``valid (H, W)`` together, unnormalised.

    Warps ``values * valid`` and ``valid`` as one (C + 1)-channel image (only the source window the
    warp reads, ``source_window``). Dividing the first C channels by the last (the warped weight)
    is a normalised convolution: every output is a convex combination of *valid* inputs, so
    foreground never blends with background. Returns ``(warped (h, w, C), weight (h, w))``; callers
    keep the pixels whose weight is at least 0.5 (the nearest-neighbour coverage)."""
    w, h = output_wh
    c = values.shape[-1]
    window = source_window(matrix, output_wh, valid.shape)
    if window is None:
        return np.zeros((h, w, c), np.float32), np.zeros((h, w), np.float32)
    (rows, cols), matrix = window
    valid_f = valid[rows, cols].astype(np.float32)
    stacked = np.empty(valid_f.shape + (c + 1,), np.float32)
    np.multiply(values[rows, cols], valid_f[..., None], out=stacked[..., :c])
    stacked[..., c] = valid_f
    warped = cv2.warpAffine(
        stacked, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    ).reshape(h, w, c + 1)  # cv2 drops a trailing 1-channel axis
    return warped[..., :c], warped[..., c]


def warp_depth(depth: Array, matrix: Array, output_wh: tuple[int, int], *, invalid_value: float = -1.0) -> Array:
    """Warp a depth map ``(H, W)`` without mixing person and background.

    Pixels ``<= invalid_value`` (Sapiens depth targets mark background with -1) are invalid;
    valid pixels are interpolated only among themselves (:func:`_warp_valid_only`), so the
    result never holds values between the background marker and the foreground range.
    """
    warped, weight = _warp_valid_only(depth[..., None], depth > invalid_value, matrix, output_wh)
    out = np.full(weight.shape, invalid_value, np.float32)
    np.divide(warped[..., 0], weight, out=out, where=weight >= 0.5)
    return out


def rotate_normals(normal: Array, rot_deg: float, *, normal_y_down: bool = True) -> Array:
    """Rotate normal vectors ``(..., 3)`` by the in-plane crop rotation (nz unchanged).

    The UDP warp moves image content by ``R(rot)`` in image axes (x right, y down). That is a
    camera roll about the optical axis, so a normal expressed in the same axes (OpenCV camera
    frame, ``normal_y_down=True``) turns by the same ``R``: ``(nx, ny) -> R (nx, ny)``. With a
    y-up normal convention the y axis is mirrored, which turns ``R`` into ``R^T``.
    """
    r = rotation_matrix_2d(rot_deg if normal_y_down else -rot_deg).astype(np.float32)
    normal = np.asarray(normal, np.float32)
    out = normal.copy()
    out[..., 0] = r[0, 0] * normal[..., 0] + r[0, 1] * normal[..., 1]
    out[..., 1] = r[1, 0] * normal[..., 0] + r[1, 1] * normal[..., 1]
    return out


def warp_normals(
    normal: Array, matrix: Array, output_wh: tuple[int, int], rot_deg: float, *, normal_y_down: bool = True
) -> Array:
    """Warp a normal map ``(H, W, 3)``: resample, rotate the vectors, renormalise.

    Invalid normals are zero vectors and stay zero; valid ones (length > 0.5) are interpolated only
    among themselves and rotated by :func:`rotate_normals`. The weighted sum is normalised directly
    (its direction is the weighted mean's); a pixel whose sum nearly cancels (opposite normals) is
    invalid.
    """
    window = source_window(matrix, output_wh, normal.shape[:2])
    valid = np.zeros(normal.shape[:2], bool)
    if window is not None:
        n = normal[window[0]]
        valid[window[0]] = np.einsum("...i,...i->...", n, n) > 0.25
    summed, weight = _warp_valid_only(normal, valid, matrix, output_wh)
    summed = rotate_normals(summed, rot_deg, normal_y_down=normal_y_down)
    length = np.sqrt(np.einsum("...i,...i->...", summed, summed))
    keep = (weight >= 0.5) & (length > 1e-6 * weight)
    out = np.zeros_like(summed)
    np.divide(summed, length[..., None], out=out, where=keep[..., None])
    return out


def warp_keypoints(
    keypoints: Array, keypoints_visible: Array, matrix: Array, output_wh: tuple[int, int]
) -> tuple[Array, Array]:
    """Map keypoints ``(K, 2)`` into the crop; outside ``[0, W-1] x [0, H-1]`` -> visibility 0."""
    warped = apply_affine(keypoints, matrix)
    w, h = output_wh
    inside = (warped[:, 0] >= 0) & (warped[:, 0] <= w - 1) & (warped[:, 1] >= 0) & (warped[:, 1] <= h - 1)
    visible = np.where(inside, keypoints_visible, 0).astype(np.float32)
    return warped.astype(np.float32), visible


def warp_sample(
    center: Array,
    scale: Array,
    rot_deg: float,
    *,
    output_wh: tuple[int, int] = DEFAULT_INPUT_WH,
    image: Array | None = None,
    keypoints: Array | None = None,
    keypoints_visible: Array | None = None,
    depth: Array | None = None,
    normal: Array | None = None,
    mask: Array | None = None,
    depth_invalid_value: float = -1.0,
    normal_y_down: bool = True,
) -> dict[str, Array]:
    """UDP-crop every given modality with the same affine.

    Inputs (all optional): ``image (H, W, 3)`` bilinear; ``keypoints (K, 2)`` with
    ``keypoints_visible (K,)`` (ones if omitted); ``depth (H, W)`` valid-only interpolation,
    invalid stays ``depth_invalid_value``; ``normal (H, W, 3)`` resampled and rotated;
    ``mask (H, W)`` nearest. Returns a dict with the warped arrays under the same names plus
    ``warp_matrix (2, 3)``.
    """
    matrix = get_udp_warp_matrix(center, scale, rot_deg, output_wh)
    out: dict[str, Array] = {"warp_matrix": matrix}
    if image is not None:
        out["image"] = warp_image(image, matrix, output_wh)
    if keypoints is not None:
        if keypoints_visible is None:
            keypoints_visible = np.ones(len(keypoints), np.float32)
        out["keypoints"], out["keypoints_visible"] = warp_keypoints(keypoints, keypoints_visible, matrix, output_wh)
    if depth is not None:
        out["depth"] = warp_depth(depth, matrix, output_wh, invalid_value=depth_invalid_value)
    if normal is not None:
        out["normal"] = warp_normals(normal, matrix, output_wh, rot_deg, normal_y_down=normal_y_down)
    if mask is not None:
        out["mask"] = warp_mask(mask, matrix, output_wh)
    return out


# ----------------------------------------------------------------------------------------------
# Whole geometric pipelines (eval / train)
# ----------------------------------------------------------------------------------------------


def topdown_crop(
    bbox_xywh: Array, *, input_wh: tuple[int, int] = DEFAULT_INPUT_WH, padding: float = 1.25, **arrays: Any
) -> dict[str, Any]:
    """Deterministic (eval) crop: padded, aspect-fixed box, no rotation.

    ``arrays`` are the optional inputs of :func:`warp_sample`. Returns its dict plus
    ``center``, ``scale``, ``rotation`` (needed to map predictions back) and ``flipped``.
    """
    center, scale = bbox_xywh_to_center_scale(bbox_xywh, padding=padding, aspect_ratio=input_wh[0] / input_wh[1])
    out = warp_sample(center, scale, 0.0, output_wh=input_wh, **arrays)
    out.update(center=center, scale=scale, rotation=0.0, flipped=False)
    return out


def random_flip_sample(
    rng: np.random.Generator,
    prob: float,
    image_width: int,
    center: Array,
    arrays: dict[str, Any],
    flip_indices: Array | None = None,
) -> tuple[bool, Array, dict[str, Any]]:
    """With probability ``prob`` flip every source array, the keypoints and the box centre.

    ``arrays`` holds the :func:`warp_sample` inputs at source resolution (keypoints, if any,
    with their ``keypoints_visible``). Returns ``(flipped, center, arrays)``; inputs are never
    modified in place.
    """
    if rng.random() >= prob:
        return False, center, arrays
    arrays = dict(arrays)
    for name in ("image", "depth", "mask"):
        if arrays.get(name) is not None:
            arrays[name] = flip_image(arrays[name])
    if arrays.get("normal") is not None:
        arrays["normal"] = flip_normals(arrays["normal"])
    if arrays.get("keypoints") is not None:
        arrays["keypoints"], arrays["keypoints_visible"] = flip_keypoints(
            arrays["keypoints"], arrays["keypoints_visible"], image_width, flip_indices
        )
    return True, flip_points(center, image_width), arrays


def random_topdown_crop(
    bbox_xywh: Array,
    rng: np.random.Generator,
    params: GeometryAugParams = GeometryAugParams(),
    *,
    input_wh: tuple[int, int] = DEFAULT_INPUT_WH,
    image_width: int | None = None,
    flip_indices: Array | None = None,
    **arrays: Any,
) -> dict[str, Any]:
    """Training crop in the mmpose order: box -> flip -> half-body -> random box -> UDP warp.

    ``arrays`` are the :func:`warp_sample` inputs at source resolution (``image`` or
    ``image_width`` is needed for the flip). Returns the :func:`warp_sample` dict plus
    ``center``, ``scale``, ``rotation`` and ``flipped``.
    """
    if image_width is None:
        image_width = arrays["image"].shape[1]
    if arrays.get("keypoints") is not None and arrays.get("keypoints_visible") is None:
        arrays["keypoints_visible"] = np.ones(len(arrays["keypoints"]), np.float32)
    center, scale = bbox_xywh_to_center_scale(bbox_xywh, padding=params.bbox_padding, aspect_ratio=None)
    flipped, center, arrays = random_flip_sample(rng, params.flip_prob, image_width, center, arrays, flip_indices)
    if arrays.get("keypoints") is not None:
        center, scale = random_half_body(arrays["keypoints"], arrays["keypoints_visible"], center, scale, rng, params)
    center, scale, rot = random_bbox_transform(center, scale, rng, params)
    scale = fix_aspect_ratio(scale, input_wh[0] / input_wh[1])
    out = warp_sample(center, scale, rot, output_wh=input_wh, **arrays)
    out.update(center=center, scale=scale, rotation=rot, flipped=flipped)
    return out


# ----------------------------------------------------------------------------------------------
# Texture randomisation (RGB uint8 only; geometry-free, so keypoints are never involved)
# ----------------------------------------------------------------------------------------------


def _scale_shift_uint8(image: Array, alpha: float = 1.0, beta: float = 0.0) -> Array:
    """``clip(image * alpha + beta)`` to uint8 (mmcv ``_convert``: truncates, does not round)."""
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


_IDENTITY_LUT = np.arange(256, dtype=np.uint8)


def _scale_shift_lut(alpha: float = 1.0, beta: float = 0.0, lut: Array = _IDENTITY_LUT) -> Array:
    """The 256-entry table of ``_scale_shift_uint8`` applied after ``lut``: ``cv2.LUT`` with it
    gives the same bytes as the float32 arithmetic on every pixel, several times faster."""
    return _scale_shift_uint8(lut, alpha, beta)


def _permute_channels(image: Array, order: Array) -> Array:
    """``image[..., order]`` of an (H, W, 3) uint8 image, by ``cv2.mixChannels`` (numpy's fancy
    index is ~8x slower at 1024x768)."""
    out = np.empty_like(image)
    cv2.mixChannels([np.ascontiguousarray(image)], [out], [int(v) for i, c in enumerate(order) for v in (c, i)])
    return out


def photometric_distortion(
    image: Array,
    rng: np.random.Generator,
    *,
    brightness_delta: float = 32.0,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
    channel_swap: bool = True,
) -> Array:
    """mmcv/mmpose PhotometricDistortion on an RGB ``uint8 (H, W, 3)`` image.

    Brightness (p 0.5), contrast (p 0.5, before or after the HSV step at random), HSV step
    (none / saturation / hue / both, uniformly), channel permutation (p 0.5). Hue is in OpenCV
    8-bit units (0-179, 2 degrees each) and wraps around. Two deliberate differences from
    Sapiens' copy: contrast runs first *or* last (theirs runs it twice when ``contrast_mode == 1``
    and never otherwise), and hue wraps mod 180 (theirs overflows uint8).
    """
    contrast_last = rng.integers(2) == 1
    do_brightness, do_contrast, do_swap = rng.integers(2, size=3) == 1
    hsv_mode = int(rng.integers(4))  # 0 none, 1 saturation, 2 hue, 3 both
    beta = rng.uniform(-brightness_delta, brightness_delta)
    alpha = rng.uniform(*contrast_range)
    saturation = rng.uniform(*saturation_range)
    hue = int(rng.integers(-hue_delta, hue_delta)) if hue_delta > 0 else 0
    order = rng.permutation(3)

    # Each per-value step is a 256-entry table; consecutive ones compose into one cv2.LUT pass.
    out, lut = np.ascontiguousarray(image), None
    if do_brightness:
        lut = _scale_shift_lut(beta=beta)
    if do_contrast and not contrast_last:
        lut = _scale_shift_lut(alpha=alpha, lut=_IDENTITY_LUT if lut is None else lut)
    if hsv_mode:
        if lut is not None:
            out, lut = cv2.LUT(out, lut), None
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv_lut = np.repeat(_IDENTITY_LUT[:, None], 3, axis=1)  # (256, 3): per channel H, S, V
        if hsv_mode in (1, 3):
            hsv_lut[:, 1] = _scale_shift_lut(alpha=saturation)
        if hsv_mode in (2, 3):  # OpenCV hue is 0..179 and wraps
            hsv_lut[:180, 0] = (np.arange(180) + hue) % 180
        out = cv2.cvtColor(cv2.LUT(hsv, hsv_lut.reshape(256, 1, 3)), cv2.COLOR_HSV2RGB)
    if do_contrast and contrast_last:
        lut = _scale_shift_lut(alpha=alpha, lut=_IDENTITY_LUT if lut is None else lut)
    if lut is not None:
        out = cv2.LUT(out, lut)
    if channel_swap and do_swap:
        out = _permute_channels(out, order)
    return out


def blur(image: Array, ksize: int, kind: str = "box") -> Array:
    """Box (albumentations ``Blur``) or Gaussian blur with an odd ``ksize``."""
    if kind == "box":
        return cv2.blur(image, (ksize, ksize))
    if kind == "gaussian":
        return cv2.GaussianBlur(image, (ksize, ksize), 0)
    raise ValueError(f"unknown blur kind {kind!r}; expected 'box' or 'gaussian'")


def median_blur(image: Array, ksize: int) -> Array:
    """Median blur of a uint8 image with an odd ``ksize`` (albumentations ``MedianBlur``)."""
    return cv2.medianBlur(image, ksize)


def gaussian_noise(image: Array, rng: np.random.Generator, std: float) -> Array:
    """Add i.i.d. Gaussian noise of ``std`` (uint8 units), rounded and clipped to uint8."""
    noisy = image.astype(np.float32) + rng.normal(0.0, std, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg_reencode(image: Array, quality: int) -> Array:
    """Round-trip an RGB uint8 image through JPEG at ``quality`` (compression artefacts)."""
    # OpenCV's codec expects BGR: its YCrCb conversion (and chroma subsampling) is order-aware.
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def coarse_dropout(
    image: Array,
    rng: np.random.Generator,
    *,
    num_holes: int = 1,
    size_range: tuple[float, float] = (0.2, 0.4),
    fill: int = 0,
) -> Array:
    """Fill ``num_holes`` rectangles with ``fill`` (albumentations ``CoarseDropout``).

    Hole height/width are independent uniform fractions of the image height/width in
    ``size_range``; holes lie fully inside the image.
    """
    out = image.copy()
    h, w = image.shape[:2]
    for _ in range(num_holes):
        hole_h = int(h * rng.uniform(*size_range))
        hole_w = int(w * rng.uniform(*size_range))
        y0 = int(rng.integers(0, h - hole_h + 1))
        x0 = int(rng.integers(0, w - hole_w + 1))
        out[y0 : y0 + hole_h, x0 : x0 + hole_w] = fill
    return out


def _random_odd(rng: np.random.Generator, ksize_range: tuple[int, int]) -> int:
    """A uniformly drawn odd kernel size in the inclusive range."""
    lo, hi = ksize_range
    return int(rng.choice(np.arange(lo | 1, hi + 1, 2)))


def random_texture(image: Array, rng: np.random.Generator, params: TextureAugParams = TextureAugParams()) -> Array:
    """The texture chain on an RGB uint8 crop: photometric, blur, median blur, noise, JPEG, dropout.

    Each step fires with its probability from ``params``. The input array is not modified.
    """
    out = image
    if rng.random() < params.photometric_prob:
        out = photometric_distortion(
            out,
            rng,
            brightness_delta=params.brightness_delta,
            contrast_range=params.contrast_range,
            saturation_range=params.saturation_range,
            hue_delta=params.hue_delta,
            channel_swap=params.channel_swap,
        )
    if rng.random() < params.blur_prob:
        out = blur(out, _random_odd(rng, params.blur_ksize_range), params.blur_kind)
    if rng.random() < params.median_blur_prob:
        out = median_blur(out, _random_odd(rng, params.median_ksize_range))
    if rng.random() < params.noise_prob:
        out = gaussian_noise(out, rng, rng.uniform(*params.noise_std_range))
    if rng.random() < params.jpeg_prob:
        out = jpeg_reencode(out, int(rng.integers(params.jpeg_quality_range[0], params.jpeg_quality_range[1] + 1)))
    if rng.random() < params.dropout_prob:
        out = coarse_dropout(
            out, rng, num_holes=params.dropout_holes, size_range=params.dropout_size_range, fill=params.dropout_fill
        )
    return out


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


def normalize_image(image: Array) -> Array:
    """RGB uint8 ``(..., 3)`` -> float32 ``(x - mean) / std`` with the Sapiens constants."""
    return (np.asarray(image, dtype=np.float32) - SAPIENS_MEAN) / SAPIENS_STD


def denormalize_image(image: Array) -> Array:
    """Inverse of :func:`normalize_image`, rounded and clipped to RGB uint8 (for visualisation);
    uint8 input (a sample's crop) is returned as it is."""
    if np.asarray(image).dtype == np.uint8:
        return np.asarray(image)
    restored = np.asarray(image, dtype=np.float32) * SAPIENS_STD + SAPIENS_MEAN
    return np.clip(np.rint(restored), 0, 255).astype(np.uint8)
