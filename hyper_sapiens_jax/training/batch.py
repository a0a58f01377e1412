"""The lean batch: what the host sends the device each step, and how the device completes it.

A training sample leaves the host with its crop as RGB uint8 (1 byte per value instead of 4) and
without heatmaps. The step normalises the image on the device and renders the UDP heatmaps there
from the crop keypoints and target weights (``render_udp_heatmaps``, equal to the host codec
``data.codec.encode_udp_heatmaps`` to 2e-6: float32 against its float64). Only ``STEP_KEYS``
travel to the device; the rest of a sample (boxes, ids, augmentation records) stays on the host.
``benchmarks/data_pipeline.py --batch-bytes`` measures the bytes per sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.codec import udp_scale_factor
from hyper_sapiens_jax.data.transforms import SAPIENS_MEAN, SAPIENS_STD
from hyper_sapiens_jax.precision import widen

Array = jax.Array

# The keys the train step reads (objective and normalisers); nothing else goes to the device.
STEP_KEYS = (
    "image",
    "keypoints",
    "target_weight",
    "depth",
    "normal",
    "has_pose",
    "has_depth",
    "has_normal",
    "is_real",
    "valid",
    "intrinsics",
)


def step_inputs(batch: dict[str, np.ndarray], extra_keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The part of a host batch the step reads (``STEP_KEYS`` and ``extra_keys`` that are present)."""
    return {k: batch[k] for k in (*STEP_KEYS, *extra_keys) if k in batch}


def normalize_images(images: Array) -> Array:
    """RGB uint8 images (B, H, W, 3) -> float32 ``(x - mean) / std`` (Sapiens constants); float
    input is taken as already normalised and returned unchanged."""
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images
    return (images.astype(jnp.float32) - jnp.asarray(SAPIENS_MEAN)) / jnp.asarray(SAPIENS_STD)


def render_udp_heatmaps(
    keypoints: Array, weights: Array, input_wh: tuple[int, int], heatmap_wh: tuple[int, int], sigma: float
) -> Array:
    """UDP Gaussian heatmaps on the device: keypoints (B, K, 2) in input pixels, weights (B, K) ->
    heatmaps (B, h, w, K) float32.

    The host codec's mmpose rule, in float32: the unnormalised Gaussian (peak 1 at the sub-pixel
    position) in the 3-sigma square around the rounded centre, an empty channel where the weight is
    0 (the codec gives weight 0 exactly to the points it leaves undrawn: unlabelled, or whose square
    misses the map; a sample without pose has weight 0 everywhere).
    """
    w, h = heatmap_wh
    scale = jnp.asarray(udp_scale_factor(input_wh, heatmap_wh), jnp.float32)  # (x, y) input px per heatmap px
    mu = widen(keypoints) / scale  # (B, K, 2) heatmap pixels
    radius = 3.0 * sigma
    rounded = jnp.trunc(mu + 0.5)  # mmpose's int64(mu + 0.5)
    lo, hi = jnp.trunc(rounded - radius), jnp.trunc(rounded + radius + 1)

    def gaussian_1d(size: int, axis: int) -> Array:  # (B, K, size), zero outside [lo, hi)
        i = jnp.arange(size, dtype=jnp.float32)
        m, a, b = mu[..., axis, None], lo[..., axis, None], hi[..., axis, None]
        return jnp.where((i >= a) & (i < b), jnp.exp(-jnp.square(i - m) / (2.0 * sigma**2)), 0.0)

    gx, gy = gaussian_1d(w, 0), gaussian_1d(h, 1)
    draw = (weights > 0).astype(jnp.float32)  # (B, K)
    return jnp.einsum("bky,bkx,bk->byxk", gy, gx, draw)


def complete_batch(batch: dict[str, Array], heatmap_sigma: float) -> dict[str, Array]:
    """The step's batch from the lean one: the image normalised (if uint8) and, when the host sent
    none, the heatmaps rendered at a quarter of the input size."""
    out = dict(batch)
    out["image"] = normalize_images(batch["image"])
    if "heatmaps" not in batch:
        _, in_h, in_w, _ = batch["image"].shape
        out["heatmaps"] = render_udp_heatmaps(
            batch["keypoints"], batch["target_weight"], (in_w, in_h), (in_w // 4, in_h // 4), heatmap_sigma
        )
    return out
