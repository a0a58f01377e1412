"""Pose evaluation: PCK (box or torso normalised), G-Error and COCO OKS keypoint AP (see metrics.py)."""

from hyper_sapiens_jax.evaluation.metrics import (
    bbox_normalizer,
    coco_keypoint_ap,
    g_error,
    keypoint_results,
    pck,
    per_joint_table,
    torso_normalizer,
)

__all__ = [
    "bbox_normalizer",
    "coco_keypoint_ap",
    "g_error",
    "keypoint_results",
    "pck",
    "per_joint_table",
    "torso_normalizer",
]
