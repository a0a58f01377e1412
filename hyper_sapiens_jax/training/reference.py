"""Bone-ratio reference statistics from the synthetic set, saved with the run (``bone_ratios.json``).

The bone-ratio loss compares the proportions of back-projected predicted skeletons with those of
the synthetic infants. The reference comes from MINI-RGBD's joint files (2D + depth, lifted to 3D
with the intrinsics) when the run's sources include it, else from the 2D SyRIP-synthetic keypoints
(image-plane ratios; weaker, logged as such).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hyper_sapiens_jax.data import geometry
from hyper_sapiens_jax.data.keypoints import smil25_to_coco17
from hyper_sapiens_jax.data.sources import CocoKeypointSource, MiniRgbdSource, read_joints_2ddep
from hyper_sapiens_jax.losses.geometry import RATIO_BONES, bone_ratio_stats

log = logging.getLogger(__name__)
REFERENCE_FILE = "bone_ratios.json"


def lift_joints(joints: np.ndarray, intrinsics=geometry.MINI_RGBD_INTRINSICS) -> tuple[np.ndarray, np.ndarray]:
    """MINI-RGBD joints (N, 25, 3) [x, y, depth_mm] -> COCO-17 camera points (N, 17, 3) in metres, visible (N, 17)."""
    fx, fy, cx, cy = intrinsics
    z = joints[..., 2] / 1000.0
    pts = np.stack([(joints[..., 0] - cx) / fx * z, (joints[..., 1] - cy) / fy * z, z], -1)
    coco, visible = smil25_to_coco17(pts)
    return coco, visible * (np.take(z, [0], -1) > 0)


def _complete(points: np.ndarray, visible: np.ndarray, bones) -> np.ndarray:
    ends = np.unique(np.asarray(bones).ravel())
    return points[(visible[:, ends] > 0).all(-1)]


def compute_reference(sources: dict[str, Any], max_samples: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Reference ratio mean/std from the synthetic sources ('mini_rgbd' preferred, else 'syrip_syn')."""
    rng = np.random.default_rng(seed)
    mini = sources.get("mini_rgbd")
    if isinstance(mini, MiniRgbdSource):
        recs = mini.records
        pick = rng.choice(len(recs), min(max_samples, len(recs)), replace=False)
        joints = np.stack([read_joints_2ddep(recs[i]["joints"]) for i in sorted(pick)])
        points, visible = lift_joints(joints, mini.intrinsics)
        origin = f"{len(pick)} MINI-RGBD frames (3D, from 2D + depth)"
    else:
        syn = sources.get("syrip_syn")
        if not isinstance(syn, CocoKeypointSource):
            raise ValueError("bone-ratio reference needs a 'mini_rgbd' or 'syrip_syn' source in the data mix")
        kpts = np.stack([r["keypoints"] for r in syn.records])
        points = np.concatenate([kpts[..., :2], np.zeros_like(kpts[..., :1])], -1)
        visible = kpts[..., 2]
        origin = f"{len(kpts)} SyRIP synthetic annotations (2D image-plane ratios)"
    complete = _complete(points, visible, RATIO_BONES)
    if len(complete) < 2:
        raise ValueError(f"bone-ratio reference: fewer than 2 complete skeletons in {origin}")
    stats = bone_ratio_stats(complete)
    stats["origin"] = f"{origin}; {len(complete)} complete skeletons"
    return stats


def load_or_compute(workdir: Path, sources: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The run's reference: read from ``workdir/bone_ratios.json`` or computed and written there."""
    path = workdir / REFERENCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    stats = compute_reference(sources, seed=seed)
    path.write_text(json.dumps(stats, indent=1))
    log.info("bone-ratio reference from %s -> %s", stats["origin"], path)
    return stats
