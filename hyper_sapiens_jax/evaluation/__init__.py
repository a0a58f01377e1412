"""Pose evaluation: PCK (box or torso normalised, overall and by body orientation), G-Error and COCO
OKS keypoint AP (see metrics.py)."""

from hyper_sapiens_jax.evaluation.metrics import (
    bbox_normalizer,
    body_orientation,
    coco_keypoint_ap,
    g_error,
    keypoint_results,
    pck,
    pck_by_orientation,
    per_joint_table,
    torso_normalizer,
)

__all__ = [
    "bbox_normalizer",
    "body_orientation",
    "coco_keypoint_ap",
    "g_error",
    "keypoint_results",
    "pck",
    "pck_by_orientation",
    "per_joint_table",
    "torso_normalizer",
]
