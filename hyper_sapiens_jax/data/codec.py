"""UDP Gaussian heatmap codec (mmpose ``UDPHeatmap``), channels-last.

Encode keypoints in input-crop pixels into ``(h, w, K)`` heatmaps, on the host
(``encode_udp_heatmaps``, numpy, the reference) or on the device (``encode_udp_heatmaps_device``,
batched jax, what the train step draws its targets with; the two agree to 2e-6); decode ``(h, w, K)``
or ``(B, h, w, K)`` heatmaps back with argmax + DARK-UDP refinement; flip-test averaging.

UDP (Huang et al. 2020) puts input pixel ``0`` and ``W_in - 1`` on heatmap pixels ``0`` and
``W_hm - 1``, so the heatmap -> input factor is ``(W_in - 1) / (W_hm - 1)`` both ways. (mmpose's
``UDPHeatmap.decode`` multiplies by ``W_in / (W_hm - 1)`` instead, a sub-pixel inconsistency with
its own encoder; we use the exact inverse.) Sizes are ``(W, H)`` with a ``_wh`` suffix.
"""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import flip_permutation
from hyper_sapiens_jax.precision import widen

Array = np.ndarray


def udp_scale_factor(input_wh: tuple[int, int], heatmap_wh: tuple[int, int]) -> Array:
    """Input pixels per heatmap pixel ``(2,) = (in - 1) / (hm - 1)`` per axis (x, y)."""
    return (np.asarray(input_wh, np.float64) - 1.0) / (np.asarray(heatmap_wh, np.float64) - 1.0)


# ----------------------------------------------------------------------------------------------
# Encode
# ----------------------------------------------------------------------------------------------


def _udp_windows(keypoints, keypoints_visible, input_wh, heatmap_wh, sigma):
    """(mu (K, 2) heatmap pixels, window lo, hi (K, 2), draw (K,) bool, weights (K,)) of the codec."""
    keypoints = np.asarray(keypoints, np.float64)
    if keypoints_visible is None:
        keypoints_visible = np.ones(len(keypoints), np.float32)
    visible = np.asarray(keypoints_visible, np.float32)
    w, h = heatmap_wh
    mu = keypoints / udp_scale_factor(input_wh, heatmap_wh)  # (K, 2) heatmap pixels
    radius = 3.0 * sigma
    # mmpose rounds with int64(mu + 0.5) (truncation toward zero) and tests the window bounds.
    rounded = (mu + 0.5).astype(np.int64)
    lo = (rounded - radius).astype(np.int64)  # first pixel of the window, (x, y)
    hi = (rounded + radius + 1).astype(np.int64)  # one past the last
    overlaps = (lo[:, 0] < w) & (lo[:, 1] < h) & (hi[:, 0] >= 0) & (hi[:, 1] >= 0)
    draw = (visible >= 0.5) & overlaps
    weights = np.where(draw, np.clip(visible, 0.0, 1.0), 0.0).astype(np.float32)
    return mu, lo, hi, draw, weights


def encode_udp_heatmaps(
    keypoints: Array,
    keypoints_visible: Array | None = None,
    *,
    input_wh: tuple[int, int] = (768, 1024),
    heatmap_wh: tuple[int, int] = (192, 256),
    sigma: float = 6.0,
) -> tuple[Array, Array]:
    """Keypoints ``(K, 2)`` in input pixels -> ``heatmaps (h, w, K)`` float32, ``weights (K,)``.

    mmpose ``generate_udp_gaussian_heatmaps``: an unnormalised Gaussian (peak 1 at the exact
    sub-pixel position) drawn in the 3-sigma square around the rounded centre. A point gets
    weight 0 (and an empty channel) when it is unlabelled (visibility < 0.5) or when that square
    misses the heatmap entirely; otherwise its weight is its visibility clipped to [0, 1] — a
    point just outside the heatmap still gets its partial Gaussian, as in mmpose.
    """
    mu, lo, hi, draw, weights = _udp_windows(keypoints, keypoints_visible, input_wh, heatmap_wh, sigma)
    w, h = heatmap_wh
    # Separable: exp(-(dx^2 + dy^2) / 2s^2) = gx * gy, each masked to its window.
    gx = _windowed_gaussian_1d(w, mu[:, 0], lo[:, 0], hi[:, 0], sigma)  # (K, w)
    gy = _windowed_gaussian_1d(h, mu[:, 1], lo[:, 1], hi[:, 1], sigma)  # (K, h)
    heatmaps = gy.T[:, None, :] * gx.T[None, :, :] * draw  # (h, w, K)
    return heatmaps.astype(np.float32), weights


def encode_udp_heatmaps_device(
    keypoints: jax.Array, weights: jax.Array, input_wh: tuple[int, int], heatmap_wh: tuple[int, int], sigma: float
) -> jax.Array:
    """``encode_udp_heatmaps`` on the device, batched and traceable: keypoints (B, K, 2) in input
    pixels, weights (B, K) (``udp_target_weights``) -> heatmaps (B, h, w, K) float32.

    The host encoder's mmpose rule, in float32 (equal to it to 2e-6, tests/unit/test_codec.py): the
    unnormalised Gaussian (peak 1 at the sub-pixel position) in the 3-sigma square around the rounded
    centre, an empty channel where the weight is 0 (the codec gives weight 0 exactly to the points it
    leaves undrawn: unlabelled, or whose square misses the map; a sample without pose has weight 0
    everywhere).
    """
    w, h = heatmap_wh
    scale = jnp.asarray(udp_scale_factor(input_wh, heatmap_wh), jnp.float32)  # (x, y) input px per heatmap px
    mu = widen(keypoints) / scale  # (B, K, 2) heatmap pixels
    radius = 3.0 * sigma
    rounded = jnp.trunc(mu + 0.5)  # mmpose's int64(mu + 0.5)
    lo, hi = jnp.trunc(rounded - radius), jnp.trunc(rounded + radius + 1)

    def gaussian_1d(size: int, axis: int) -> jax.Array:  # (B, K, size), zero outside [lo, hi)
        i = jnp.arange(size, dtype=jnp.float32)
        m, a, b = mu[..., axis, None], lo[..., axis, None], hi[..., axis, None]
        return jnp.where((i >= a) & (i < b), jnp.exp(-jnp.square(i - m) / (2.0 * sigma**2)), 0.0)

    gx, gy = gaussian_1d(w, 0), gaussian_1d(h, 1)
    draw = (weights > 0).astype(jnp.float32)  # (B, K)
    return jnp.einsum("bky,bkx,bk->byxk", gy, gx, draw)


def udp_target_weights(
    keypoints: Array,
    keypoints_visible: Array | None = None,
    *,
    input_wh: tuple[int, int] = (768, 1024),
    heatmap_wh: tuple[int, int] = (192, 256),
    sigma: float = 6.0,
) -> Array:
    """The ``weights (K,)`` of ``encode_udp_heatmaps`` alone, without drawing the heatmaps (the
    train step draws them on the device: ``encode_udp_heatmaps_device``)."""
    return _udp_windows(keypoints, keypoints_visible, input_wh, heatmap_wh, sigma)[-1]


def _windowed_gaussian_1d(size: int, mu: Array, lo: Array, hi: Array, sigma: float) -> Array:
    """``(K, size)`` values ``exp(-(i - mu)^2 / 2 sigma^2)`` for ``lo <= i < hi``, else 0."""
    i = np.arange(size, dtype=np.float64)[None, :]
    g = np.exp(-((i - mu[:, None]) ** 2) / (2.0 * sigma**2))
    return np.where((i >= lo[:, None]) & (i < hi[:, None]), g, 0.0)


# ----------------------------------------------------------------------------------------------
# Decode
# ----------------------------------------------------------------------------------------------


def get_heatmap_maximum(heatmaps: Array) -> tuple[Array, Array]:
    """Argmax of ``(..., h, w, K)`` heatmaps -> ``locs (..., K, 2)`` (x, y) and ``vals (..., K)``.

    As mmpose, locations whose maximum is ``<= 0`` are set to -1.
    """
    heatmaps = np.asarray(heatmaps)
    *lead, h, w, k = heatmaps.shape
    flat = heatmaps.reshape(*lead, h * w, k)
    index = flat.argmax(axis=-2)  # (..., K)
    vals = np.take_along_axis(flat, index[..., None, :], axis=-2)[..., 0, :]
    y, x = np.divmod(index, w)
    locs = np.stack([x, y], axis=-1).astype(np.float32)
    locs[vals <= 0] = -1
    return locs, vals.astype(np.float32)


# mmpose's and Sapiens' DARK blur kernel (11 at sigma 2 on 64x48, and at sigma 6 on 256x192).
MAX_BLUR_KERNEL = 11


def blur_sigma(kernel: int) -> float:
    """The Gaussian sigma cv2.GaussianBlur uses for an odd ``kernel`` size with ``sigma=0``."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def dark_blur_kernel(heatmap_wh: tuple[int, int], sigma: float | None = None) -> int:
    """The DARK blur kernel for heatmaps of ``heatmap_wh`` (w, h) trained with Gaussian ``sigma``.

    The largest odd size <= 11 (mmpose's and Sapiens') that spans at most 1/8 of the heatmap's
    shorter side, and whose own blur sigma (``blur_sigma``) does not exceed the target's ``sigma``
    (when given); 1 means no blur. A kernel sized for a 48-px-wide map swamps a 24-px one: the
    constant-0 border then pulls points near the edges inward (on the ``cpu`` preset's 32x24 maps,
    sigma 2, kernel 3 scores humans-val PCK@0.05 0.395 where 11 scores 0.362: docs/testbed.md).
    Sapiens' 256x192 maps at sigma 6 keep 11.
    """
    k = min(MAX_BLUR_KERNEL, int(min(heatmap_wh)) // 8)
    k -= 1 - k % 2  # odd, rounding down
    while k > 1 and sigma is not None and blur_sigma(k) > sigma:
        k -= 2
    return max(k, 1)


def _modulate(heatmaps: Array, kernel: int) -> Array:
    """DARK's Gaussian modulation of one ``(h, w, K)`` stack, per-channel maxima preserved.

    mmpose pads with zeros before ``cv2.GaussianBlur``, i.e. a constant-0 border.
    """
    blurred = cv2.GaussianBlur(heatmaps, (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT)
    blurred = blurred.reshape(heatmaps.shape)  # cv2 drops a trailing single channel
    old_max = heatmaps.max(axis=(0, 1))
    new_max = blurred.max(axis=(0, 1))
    ratio = np.where(new_max > 0, old_max / np.where(new_max > 0, new_max, 1.0), 1.0)
    return blurred * ratio


def refine_keypoints_dark_udp(keypoints: Array, heatmaps: Array, blur_kernel_size: int = 11) -> Array:
    """DARK-UDP sub-pixel refinement (mmpose ``refine_keypoints_dark_udp``), batched.

    ``keypoints (B, K, 2)`` integer argmax locations in heatmap pixels, ``heatmaps (B, h, w, K)``.
    Blurs (kernel 1: no blur), takes ``log(clip(., 1e-3, 50))``, and moves each point by one Newton step
    ``-H^-1 g`` with finite differences on the edge-padded log-heatmap. Returns a new array.
    """
    if blur_kernel_size % 2 != 1:
        raise ValueError(f"blur_kernel_size must be odd, got {blur_kernel_size}")
    b, h, w, k = heatmaps.shape
    if blur_kernel_size > 1:
        logs = np.stack([_modulate(hm, blur_kernel_size) for hm in heatmaps])  # cv2: <=512 channels
    else:
        logs = heatmaps
    logs = np.log(np.clip(logs, 1e-3, 50.0))
    padded = np.pad(logs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")

    # +1 for the padding; clip so that invalid (-1) locations index something harmless.
    x = np.clip(keypoints[..., 0].astype(np.int64), 0, w - 1) + 1
    y = np.clip(keypoints[..., 1].astype(np.int64), 0, h - 1) + 1
    bi, ki = np.arange(b)[:, None], np.arange(k)[None, :]

    def at(dx: int, dy: int) -> Array:
        return padded[bi, y + dy, x + dx, ki].astype(np.float64)  # (B, K)

    i0, ix1, ix1_, iy1, iy1_ = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    gradient = np.stack([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], axis=-1)
    dxx = ix1 - 2 * i0 + ix1_
    dyy = iy1 - 2 * i0 + iy1_
    dxy = 0.5 * (at(1, 1) - ix1 - iy1 + 2 * i0 - ix1_ - iy1_ + at(-1, -1))  # mmpose's stencil
    hessian = np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)
    hessian += np.finfo(np.float32).eps * np.eye(2)
    step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
    return (keypoints - step).astype(np.float32)


def decode_udp_heatmaps(
    heatmaps: Array,
    *,
    input_wh: tuple[int, int] = (768, 1024),
    blur_kernel_size: int | None = None,
    sigma: float | None = None,
) -> tuple[Array, Array]:
    """Heatmaps ``(h, w, K)`` / ``(B, h, w, K)`` -> input-pixel keypoints ``(..., K, 2)``, scores.

    Argmax, DARK-UDP refinement (blur ``blur_kernel_size``; None: ``dark_blur_kernel`` of the
    heatmap size and the training ``sigma``), then heatmap -> input with the UDP
    factor ``(in - 1) / (hm - 1)``. Scores are the raw heatmap maxima; a score ``<= 0`` means no
    peak and its coordinates are meaningless.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    single = heatmaps.ndim == 3
    if single:
        heatmaps = heatmaps[None]
    if heatmaps.ndim != 4:
        raise ValueError(f"expected (h, w, K) or (B, h, w, K) heatmaps, got {heatmaps.shape}")
    if blur_kernel_size is None:
        blur_kernel_size = dark_blur_kernel((heatmaps.shape[2], heatmaps.shape[1]), sigma)
    locs, scores = get_heatmap_maximum(heatmaps)
    refined = refine_keypoints_dark_udp(locs, heatmaps, blur_kernel_size)
    refined = np.where((scores > 0)[..., None], refined, locs)
    h, w = heatmaps.shape[1:3]
    keypoints = (refined * udp_scale_factor(input_wh, (w, h))).astype(np.float32)
    return (keypoints[0], scores[0]) if single else (keypoints, scores)


# ----------------------------------------------------------------------------------------------
# Flip test
# ----------------------------------------------------------------------------------------------


def flip_heatmaps(heatmaps: Array, flip_indices: Array | None = None) -> Array:
    """Mirror ``(..., h, w, K)`` heatmaps left-right and swap left/right channels.

    With UDP the mirror is exact (pixel ``x`` <-> ``w - 1 - x``, as in the image), so no shift is
    needed (Sapiens test_cfg ``shift_heatmap=False``). ``flip_indices`` defaults to COCO-17.
    """
    heatmaps = np.asarray(heatmaps)
    if flip_indices is None:
        flip_indices = flip_permutation(heatmaps.shape[-1])
    return np.ascontiguousarray(heatmaps[..., ::-1, :][..., flip_indices])
