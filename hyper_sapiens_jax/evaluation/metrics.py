"""Pose-evaluation metrics, pure numpy (plus pycocotools for OKS AP).

Shapes: N samples (one person each), K keypoints, coordinates in pixels. ``visible`` is (N, K); a
keypoint counts only where ``visible > 0``.

  PCK        percentage of correct keypoints: a visible joint is correct when its prediction lies
             within ``threshold * normalizer`` of the ground truth. The default protocol is PCK@0.05
             normalised by the ground-truth box's longer side (``bbox_normalizer``); the torso option
             (``torso_normalizer``) uses the left-shoulder to right-hip distance. A sample whose
             normaliser is NaN, infinite or <= 0 is ignored.
  PCK by body orientation
             the same PCK over the samples whose trunk points within a range of angles of the
             image's up direction (``body_orientation``: 0 head up, 180 head down). Infants lie at
             every angle, while a foundation trained on people who mostly stand sees few upside down.
  G-Error    variance of normalised bone lengths across samples (each sample's body-bone lengths
             divided by their mean), averaged over bones: how consistent the predicted body
             proportions are. Scale and translation invariant; lower is more consistent.
  OKS AP     COCO keypoint AP/AR (pycocotools, ``iouType='keypoints'``) on ground-truth boxes, the
             SyRIP/FiDIP protocol: ``keypoint_results`` builds the result entries (mmpose rescoring),
             ``coco_keypoint_ap`` scores them against a COCO ground-truth file or dict.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hyper_sapiens_jax.data.keypoints import (
    COCO17_BODY_BONES,
    COCO17_NAMES,
    COCO17_SIGMAS,
)

LEFT_SHOULDER = COCO17_NAMES.index("left_shoulder")
RIGHT_HIP = COCO17_NAMES.index("right_hip")
SHOULDERS = (LEFT_SHOULDER, COCO17_NAMES.index("right_shoulder"))
HIPS = (COCO17_NAMES.index("left_hip"), RIGHT_HIP)
# Bin edges (degrees from head-up) of ``pck_by_orientation``.
ORIENTATION_BINS: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0, 180.0)

COCO_STAT_NAMES: tuple[str, ...] = ("ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l")


def _check_points(name: str, a: np.ndarray, n: int | None = None, k: int | None = None) -> None:
    if a.ndim != 3 or a.shape[-1] != 2 or (n is not None and a.shape[0] != n) or (k is not None and a.shape[1] != k):
        want = f"({n if n is not None else 'N'}, {k if k is not None else 'K'}, 2)"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")


def _check_shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def bbox_normalizer(bbox_xywh: np.ndarray) -> np.ndarray:
    """The longer side ``max(w, h)`` (N,) of boxes ``bbox_xywh`` (N, 4) given as (x, y, w, h)."""
    bbox_xywh = np.asarray(bbox_xywh, dtype=np.float64)
    if bbox_xywh.ndim != 2 or bbox_xywh.shape[1] != 4:
        raise ValueError(f"bbox_xywh must have shape (N, 4), got {bbox_xywh.shape}")
    return np.maximum(bbox_xywh[:, 2], bbox_xywh[:, 3])


def torso_normalizer(keypoints_gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """COCO-17 torso diameter (N,): left-shoulder to right-hip distance of ``keypoints_gt`` (N, K, 2).

    NaN where either point is not visible (``visible`` (N, K) <= 0), so PCK ignores that sample.
    """
    keypoints_gt = np.asarray(keypoints_gt, dtype=np.float64)
    visible = np.asarray(visible)
    _check_points("keypoints_gt", keypoints_gt)
    _check_shape("visible", visible, keypoints_gt.shape[:2])
    if keypoints_gt.shape[1] <= max(LEFT_SHOULDER, RIGHT_HIP):
        raise ValueError(f"torso_normalizer needs COCO-17 keypoints, got K={keypoints_gt.shape[1]}")
    dist = np.linalg.norm(keypoints_gt[:, LEFT_SHOULDER] - keypoints_gt[:, RIGHT_HIP], axis=-1)
    ok = (visible[:, LEFT_SHOULDER] > 0) & (visible[:, RIGHT_HIP] > 0)
    return np.where(ok, dist, np.nan)


def pck(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, normalizer: np.ndarray, threshold: float = 0.05
) -> dict[str, Any]:
    """PCK@threshold of ``pred`` (N, K, 2) against ``gt`` (N, K, 2).

    A joint counts where ``visible`` (N, K) > 0 and the sample's ``normalizer`` (N,) is finite and
    > 0; it is correct when ``||pred - gt|| <= threshold * normalizer``.

    Returns ``{"pck": float, "per_joint": (K,) float, "count": (K,) int}``: ``pck`` is the micro
    average over all counted joints (NaN if none), ``per_joint`` is NaN for joints never counted.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    visible = np.asarray(visible)
    normalizer = np.asarray(normalizer, dtype=np.float64)
    _check_points("gt", gt)
    n, k = gt.shape[:2]
    _check_points("pred", pred, n, k)
    _check_shape("visible", visible, (n, k))
    _check_shape("normalizer", normalizer, (n,))

    valid_norm = np.isfinite(normalizer) & (normalizer > 0)
    counted = (visible > 0) & valid_norm[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1)
    correct = counted & (dist <= threshold * np.where(valid_norm, normalizer, 0.0)[:, None])
    count = counted.sum(axis=0).astype(np.int64)
    hits = correct.sum(axis=0)
    per_joint = np.full(k, np.nan)
    np.divide(hits, count, out=per_joint, where=count > 0)
    total = int(count.sum())
    return {"pck": float(hits.sum() / total) if total else float("nan"), "per_joint": per_joint, "count": count}


def body_orientation(keypoints_gt: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The trunk's angle (N,) in degrees, in [0, 180], from the image's up direction.

    The trunk runs from the mean of the visible hips to the mean of the visible shoulders of the
    COCO-17 ``keypoints_gt`` (N, K, 2) (image y points down): 0 is a person upright, 90 one lying
    sideways, 180 one upside down. NaN where no shoulder or no hip is visible (``visible`` (N, K)).
    """
    keypoints_gt = np.asarray(keypoints_gt, dtype=np.float64)
    visible = np.asarray(visible)
    _check_points("keypoints_gt", keypoints_gt)
    _check_shape("visible", visible, keypoints_gt.shape[:2])
    if keypoints_gt.shape[1] <= max(SHOULDERS + HIPS):
        raise ValueError(f"body_orientation needs COCO-17 keypoints, got K={keypoints_gt.shape[1]}")

    def mean_visible(idx: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        w = (visible[:, idx] > 0).astype(np.float64)  # (N, 2)
        n = w.sum(axis=1)
        return (keypoints_gt[:, idx] * w[..., None]).sum(axis=1) / np.maximum(n, 1)[:, None], n > 0

    shoulders, has_s = mean_visible(SHOULDERS)
    hips, has_h = mean_visible(HIPS)
    up = shoulders - hips  # (N, 2)
    angle = np.degrees(np.arctan2(np.abs(up[:, 0]), -up[:, 1]))
    return np.where(has_s & has_h & (np.linalg.norm(up, axis=1) > 0), angle, np.nan)


def pck_by_orientation(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    normalizer: np.ndarray,
    thresholds: Sequence[float] = (0.05, 0.2),
    bins: Sequence[float] = ORIENTATION_BINS,
) -> dict[str, Any]:
    """PCK of ``pred`` (N, K, 2) against ``gt`` (N, K, 2) per range of ``body_orientation(gt)``.

    ``bins`` are increasing edges in degrees; a sample falls in ``[lo, hi)`` (the last range
    includes ``hi``); samples with no orientation are left out. Returns ``{"bins": ["0-45", ...],
    "samples": [n per range], "pck@T": [PCK per range (NaN where empty)] for T in thresholds}``.
    """
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing edges, got {bins}")
    angle = body_orientation(gt, visible)
    visible = np.asarray(visible)
    ranges = list(itertools.pairwise(edges))
    # NaN compares False, so samples without an orientation fall in no range; the last one is closed.
    last = len(ranges) - 1
    masks = [(angle >= lo) & ((angle <= hi) if i == last else (angle < hi)) for i, (lo, hi) in enumerate(ranges)]
    out: dict[str, Any] = {"bins": [f"{lo:g}-{hi:g}" for lo, hi in ranges], "samples": [int(m.sum()) for m in masks]}
    for t in thresholds:
        per_range = [pck(pred, gt, np.where(m[:, None], visible, 0), normalizer, t)["pck"] for m in masks]
        out[f"pck@{t:g}"] = [float(v) for v in per_range]
    return out


def g_error(keypoints: np.ndarray, visible: np.ndarray, bones: Sequence[tuple[int, int]] = COCO17_BODY_BONES) -> float:
    """G-Error: the variance of normalised bone lengths of ``keypoints`` (N, K, 2).

    Per sample, the lengths of the bones whose both ends are visible (``visible`` (N, K) > 0) are
    divided by that sample's mean length over those bones; samples with fewer than 2 such bones (or
    zero mean length) are ignored. The result is the mean over bones of the population variance
    (ddof=0) across samples of the normalised length, bones seen in fewer than 2 samples ignored.
    NaN if nothing qualifies. Lower means more consistent body proportions.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    visible = np.asarray(visible)
    _check_points("keypoints", keypoints)
    _check_shape("visible", visible, keypoints.shape[:2])
    idx = np.asarray(bones, dtype=np.int64).reshape(-1, 2)
    if idx.size == 0 or idx.min() < 0 or idx.max() >= keypoints.shape[1]:
        raise ValueError(f"bones must index the K={keypoints.shape[1]} keypoints, got {bones}")

    lengths = np.linalg.norm(keypoints[:, idx[:, 0]] - keypoints[:, idx[:, 1]], axis=-1)  # (N, B)
    present = (visible[:, idx[:, 0]] > 0) & (visible[:, idx[:, 1]] > 0) & np.isfinite(lengths)
    n_present = present.sum(axis=1)
    mean_len = np.where(present, lengths, 0.0).sum(axis=1) / np.maximum(n_present, 1)
    ok_sample = (n_present >= 2) & (mean_len > 0)
    present &= ok_sample[:, None]
    norm = np.where(present, lengths / np.where(ok_sample, mean_len, 1.0)[:, None], 0.0)

    per_bone = present.sum(axis=0)  # (B,)
    ok_bone = per_bone >= 2
    if not ok_bone.any():
        return float("nan")
    cnt = np.maximum(per_bone, 1)
    mean = norm.sum(axis=0) / cnt
    var = np.where(present, (norm - mean) ** 2, 0.0).sum(axis=0) / cnt
    return float(var[ok_bone].mean())


def keypoint_results(
    image_ids: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    box_scores: np.ndarray | None = None,
    category_id: int = 1,
    score_threshold: float = 0.2,
) -> list[dict[str, Any]]:
    """COCO keypoint-result entries, one per sample.

    ``image_ids`` (N,), ``keypoints`` (N, K, 2), per-keypoint ``scores`` (N, K), ``box_scores`` (N,)
    (1 when None). Each entry is ``{"image_id", "category_id", "keypoints": [x, y, s] * K, "score"}``
    with mmpose's rescoring: ``score = box_score * mean(scores[scores > score_threshold])`` (0 when
    no keypoint score exceeds the threshold).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    _check_points("keypoints", keypoints)
    n, k = keypoints.shape[:2]
    image_ids = np.asarray(image_ids)
    scores = np.asarray(scores, dtype=np.float64)
    _check_shape("image_ids", image_ids, (n,))
    _check_shape("scores", scores, (n, k))
    box = np.ones(n) if box_scores is None else np.asarray(box_scores, dtype=np.float64)
    _check_shape("box_scores", box, (n,))

    above = scores > score_threshold
    n_above = above.sum(axis=1)
    mean_above = np.where(above, scores, 0.0).sum(axis=1) / np.maximum(n_above, 1)
    rescored = np.where(n_above > 0, box * mean_above, 0.0)
    flat = np.concatenate([keypoints, scores[..., None]], axis=-1).reshape(n, 3 * k)
    return [
        {
            "image_id": int(image_ids[i]),
            "category_id": int(category_id),
            "keypoints": [float(v) for v in flat[i]],
            "score": float(rescored[i]),
        }
        for i in range(n)
    ]


def check_coco_ground_truth(gt: str | Path) -> None:
    """Raise the error ``coco_keypoint_ap`` would raise at the first evaluation (unreadable file, no
    'categories', ...) now, so a run stops at start-up instead of after ``eval.every`` steps."""
    _load_gt(gt)


def _load_gt(gt: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(gt, (str, Path)):
        try:
            with open(gt) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read COCO ground truth {str(gt)!r}: {e}") from e
        name = repr(str(gt))
    else:
        data, name = copy.deepcopy(gt), "dict"
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        raise ValueError(f"COCO ground truth {name} needs 'images', 'annotations' and 'categories'")
    for i, ann in enumerate(data["annotations"]):
        ann["id"] = i + 1  # fresh 1-based ids: pycocotools treats a gt id of 0 as unmatched.
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if "num_keypoints" not in ann:
            ann["num_keypoints"] = int((np.asarray(ann["keypoints"])[2::3] > 0).sum())
    return data


def coco_keypoint_ap(
    gt: str | Path | dict[str, Any], results: list[dict[str, Any]], sigmas: np.ndarray | None = None
) -> dict[str, float]:
    """COCO OKS keypoint AP/AR of ``results`` (see ``keypoint_results``) on ground-truth boxes.

    ``gt`` is a COCO annotation file or dataset dict ('images', 'annotations', 'categories');
    annotations without 'iscrowd'/'area' get ``iscrowd=0`` and ``area = w * h`` of their bbox (on a
    copy). ``sigmas`` (K,) are the OKS per-keypoint sigmas (default: COCO-17). Every ground-truth
    image is evaluated, so an image without a result counts its people as misses.

    Returns the 10 pycocotools stats as floats: ``ap, ap50, ap75, ap_m, ap_l, ar, ar50, ar75, ar_m,
    ar_l`` (-1 where an area range has no ground truth; all 0.0 for empty ``results``).
    """
    data = _load_gt(gt)
    if not results:
        return dict.fromkeys(COCO_STAT_NAMES, 0.0)
    sigmas = np.asarray(COCO17_SIGMAS if sigmas is None else sigmas, dtype=np.float64)
    gt_ids = {img["id"] for img in data["images"]}
    missing = {r["image_id"] for r in results} - gt_ids
    if missing:
        raise ValueError(f"results reference image ids not in the ground truth: {sorted(missing)[:10]}")

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = data
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        ev.params.kpt_oks_sigmas = sigmas
        ev.params.imgIds = sorted(gt_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats, strict=True)}


def per_joint_table(rows: dict[str, np.ndarray], names: Sequence[str] = COCO17_NAMES, fmt: str = "{:.3f}") -> str:
    """A markdown table: one column per entry of ``rows`` (each (K,)), one line per joint of ``names``
    (K,), and a final "mean" line (nanmean over joints)."""
    cols = {}
    for key, values in rows.items():
        values = np.asarray(values, dtype=np.float64)
        _check_shape(f"rows[{key!r}]", values, (len(names),))
        cols[key] = values
    lines = ["| joint | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for j, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(fmt.format(v[j]) for v in cols.values()) + " |")
    means = [np.nanmean(v) if (~np.isnan(v)).any() else np.nan for v in cols.values()]  # no all-NaN warning
    lines.append("| mean | " + " | ".join(fmt.format(m) for m in means) + " |")
    return "\n".join(lines)
