"""Bone-ratio reference statistics from the synthetic set, saved with the run (``bone_ratios.json``).

The bone-ratio loss compares the proportions of back-projected predicted skeletons with those of
the synthetic infants. ``config.loss.bone_reference`` says where the reference comes from:

  'crops'   (default) the synthetic training crops themselves, through the loss's own geometry: the
            ground-truth keypoints back-projected with the ground-truth relative depth, the crop
            intrinsics and the loss's nominal near / extent, over augmented samples of the run's
            own mix. The truth then scores what the loss expects of it. Measured on the testbed
            (benchmarks/loss_gradients.py), the 'joints' reference gives the ground truth itself a
            loss of 1.5 (mean log(1 + z^2), z ~ 1.9): its 3D joint centres, metric depth and
            camera are not what the loss sees (surface depth at the keypoint pixel, min-max
            normalised per person, a nominal 0.25 m extent at 0.7 m).
  'joints'  MINI-RGBD's joint files (2D + depth, lifted to 3D with the intrinsics) when the run's
            sources include it, else the 2D SyRIP-synthetic keypoints (image-plane ratios).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data import geometry
from hyper_sapiens_jax.data.catalog import SOURCE_DOMAINS
from hyper_sapiens_jax.data.keypoints import smil25_to_coco17
from hyper_sapiens_jax.data.pipeline import train_dataset
from hyper_sapiens_jax.data.sources import CocoKeypointSource, MiniRgbdSource, read_joints_2ddep
from hyper_sapiens_jax.losses.geometry import RATIO_BONES, backproject_keypoints, bone_ratio_stats

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


def reference_from_crops(
    mix, sample_cfg, near: float, extent: float, seed: int = 0, max_samples: int = 256
) -> dict[str, Any]:
    """Reference ratio mean/std of the synthetic training crops (with depth) of ``mix``, back-projected
    exactly as the loss back-projects predictions (``backproject_keypoints``); only the synthetic
    sources are decoded (``max_samples`` crops take a few seconds)."""
    mix = [e for e in mix if SOURCE_DOMAINS.get(e.name) == "synthetic"]
    if not mix:
        raise ValueError("bone-ratio reference ('crops'): the mix has no synthetic source")
    per_batch = sum(e.count for e in mix)
    ds = train_dataset(mix, sample_cfg, seed=seed + 7919, num_batches=max(1, -(-2 * max_samples // per_batch)))
    ends = np.unique(np.asarray(RATIO_BONES).ravel())
    points = []
    for batch in ds:
        keep = (batch["has_depth"] > 0) & (batch["is_real"] == 0) & (batch["keypoints_visible"][:, ends] > 0).all(-1)
        if keep.any():
            pts = backproject_keypoints(
                jnp.asarray(batch["keypoints"][keep]),
                jnp.asarray(batch["depth"][keep]),
                jnp.asarray(batch["intrinsics"][keep]),
                near=near,
                extent=extent,
            )
            points.append(np.asarray(pts))
        if sum(len(p) for p in points) >= max_samples:
            break
    if not points or sum(len(p) for p in points) < 2:
        raise ValueError(
            "bone-ratio reference ('crops'): fewer than 2 synthetic crops with depth and every "
            "bone end visible in the mix; use config.loss.bone_reference='joints'"
        )
    points = np.concatenate(points)[:max_samples]
    stats = bone_ratio_stats(points)
    stats["origin"] = f"{len(points)} synthetic training crops (ground-truth keypoints and depth, back-projected)"
    return stats


def load_or_compute(workdir: Path, config, mix, sample_cfg) -> dict[str, Any]:
    """The run's reference (``config.loss.bone_reference``: 'crops' or 'joints'): read from
    ``workdir/bone_ratios.json`` or computed and written there."""
    path = workdir / REFERENCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    stats = compute(config, mix, sample_cfg)
    path.write_text(json.dumps(stats, indent=1))
    log.info("bone-ratio reference from %s -> %s", stats["origin"], path)
    return stats


def compute(config, mix, sample_cfg) -> dict[str, Any]:
    """The reference ``config.loss.bone_reference`` names, from the run's mix."""
    kind = config.loss.get("bone_reference", "crops")
    if kind == "crops":
        return reference_from_crops(mix, sample_cfg, config.loss.near, config.loss.extent, seed=config.seed)
    if kind == "joints":
        return compute_reference({e.name: e.source for e in mix}, seed=config.seed)
    raise ValueError(f"config.loss.bone_reference must be 'crops' or 'joints', got {kind!r}")
