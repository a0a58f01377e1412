"""The validation pass: flip-tested heatmaps -> DARK-UDP keypoints in image pixels -> metrics.

``predict_keypoints`` turns heatmaps of a batch of top-down crops into source-image keypoints;
``evaluate`` runs a (sharded, jitted) heatmap function over every validation sample once (padding
masked by ``valid``), gathers the predictions of all processes and scores them: PCK@threshold
(box's longer side or torso), COCO OKS AP on the ground-truth boxes, G-Error and per-joint PCK.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from hyper_sapiens_jax.data.codec import decode_udp_heatmaps
from hyper_sapiens_jax.data.keypoints import flip_permutation
from hyper_sapiens_jax.data.transforms import crop_to_image_coords
from hyper_sapiens_jax.evaluation import metrics as M
from hyper_sapiens_jax.logs import progress

log = logging.getLogger(__name__)
Batch = dict[str, np.ndarray]


def flip_test(forward: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """Heatmaps (B, h, w, K) averaged with those of the mirrored images, flipped back with the
    left/right channels swapped (UDP: exact mirror, no shift). Traceable (use inside jit)."""
    hm = forward(images)
    hm_flipped = forward(images[:, :, ::-1, :])
    perm = jnp.asarray(flip_permutation(hm.shape[-1]))
    return 0.5 * (hm + jnp.take(hm_flipped[:, :, ::-1, :], perm, axis=-1))


def predict_keypoints(
    heatmaps: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    rotation: np.ndarray,
    input_wh: tuple[int, int],
    blur_kernel_size: int | None = None,
    sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, h, w, K) of crops -> keypoints (N, K, 2) in source-image pixels, scores (N, K).

    ``blur_kernel_size`` None: the DARK kernel rule of the heatmap size and the training ``sigma``
    (``codec.dark_blur_kernel``)."""
    locs, scores = decode_udp_heatmaps(heatmaps, input_wh=input_wh, blur_kernel_size=blur_kernel_size, sigma=sigma)
    # decode returns input (crop) pixels; map them back through the exact inverse of the UDP crop.
    points = crop_to_image_coords(locs, center, scale, rotation, input_wh)
    return points.astype(np.float32), scores.astype(np.float32)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded global array, in the order it fed them."""
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    seen, rows = set(), []
    for s in shards:
        start = s.index[0].start or 0
        if start not in seen:  # replicas (if any) hold the same rows
            seen.add(start)
            rows.append(np.asarray(s.data))
    return np.concatenate(rows)


def gather(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate per-process arrays (same shapes on every process) in process order."""
    if jax.process_count() == 1:
        return tree
    return {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in tree.items()}


def evaluate(
    heatmap_fn: Callable[[dict[str, jax.Array]], jax.Array],
    batches: Iterable[Batch],
    to_global: Callable[[Batch], dict[str, jax.Array]],
    *,
    input_wh: tuple[int, int],
    gt_file: str | Path | None,
    pck_threshold: float = 0.05,
    pck_norm: str = "bbox",
    blur_kernel_size: int | None = None,
    sigma: float | None = None,
) -> dict[str, Any]:
    """Score every validation sample once.

    Args:
      heatmap_fn: global batch -> heatmaps (B, h, w, K) (flip-tested, jitted, sharded).
      batches: this process's eval batches (``pipeline.eval_batches``), padded with ``valid = 0``.
      to_global: local numpy batch -> global arrays on the mesh.
      gt_file: the COCO keypoint file of the split (OKS AP); None skips AP.
      pck_norm: 'bbox' (the box's longer side) or 'torso'.
      blur_kernel_size, sigma: the DARK decode (``predict_keypoints``).
    Returns:
      {'pck@T', 'pck@0.1', 'pck@0.2', 'ap', 'ap50', ..., 'g_error', 'g_error_gt', 'num_samples',
      'per_joint_pck' (list, at T), 'pck_by_orientation' (``metrics.pck_by_orientation``, at T
      and 0.2)}.
    """
    keep = ("image_id", "ann_id", "bbox", "center", "scale", "rotation", "keypoints", "keypoints_visible", "valid")
    rows: dict[str, list[np.ndarray]] = {}
    for local in progress(batches, "eval", unit="batch"):
        hm = heatmap_fn(to_global({k: v for k, v in local.items() if k != "source_id"}))
        hm_local = local_rows(hm)
        pred, scores = predict_keypoints(
            hm_local, local["center"], local["scale"], local["rotation"], input_wh, blur_kernel_size, sigma
        )
        out = {"pred": pred, "scores": scores, **{k: local[k] for k in keep}}
        for k, v in out.items():
            rows.setdefault(k, []).append(np.asarray(v))
    if not rows:
        raise ValueError("evaluation got no batches (empty validation split?)")
    every = gather({k: np.concatenate(v) for k, v in rows.items()})
    ok = every["valid"] > 0
    every = {k: v[ok] for k, v in every.items()}
    gt = crop_to_image_coords(every["keypoints"], every["center"], every["scale"], every["rotation"], input_wh)
    visible = every["keypoints_visible"]
    if pck_norm == "bbox":
        norm = M.bbox_normalizer(every["bbox"])
    elif pck_norm == "torso":
        norm = M.torso_normalizer(gt, visible)
    else:
        raise ValueError(f"pck_norm must be 'bbox' or 'torso', got {pck_norm!r}")
    pck = M.pck(every["pred"], gt, visible, norm, pck_threshold)
    coarse = {
        f"pck@{t:g}": float(M.pck(every["pred"], gt, visible, norm, t)["pck"]) for t in (0.1, 0.2) if t != pck_threshold
    }
    result: dict[str, Any] = {
        f"pck@{pck_threshold:g}": float(pck["pck"]),
        **coarse,
        "per_joint_pck": [float(v) for v in pck["per_joint"]],
        "pck_by_orientation": M.pck_by_orientation(every["pred"], gt, visible, norm, sorted({pck_threshold, 0.2})),
        "g_error": float(M.g_error(every["pred"], visible)),
        "g_error_gt": float(M.g_error(gt, visible)),
        "num_samples": int(ok.sum()),
    }
    if gt_file:
        res = M.keypoint_results(every["image_id"], every["pred"], every["scores"])
        result.update(M.coco_keypoint_ap(gt_file, res))
    return result
