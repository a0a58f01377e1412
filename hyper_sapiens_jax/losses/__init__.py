"""Training losses, all computed in float32 and masked per sample by the batch's task flags.

  dense.py     pose heatmap MSE, keypoint coordinate L1, depth scale-invariant log loss, normal L1 + (1 - cos)
  geometry.py  soft-argmax, depth -> normals, depth-normal consistency, bone ratios, limb rigidity
The SDS prior loss lives with the prior (``hyper_sapiens_jax.prior``).
"""

from hyper_sapiens_jax.losses.dense import depth_silog_loss, keypoint_coordinate_loss, normal_loss, pose_heatmap_loss
from hyper_sapiens_jax.losses.geometry import (
    bone_lengths,
    bone_ratio_loss,
    bone_ratio_stats,
    bone_ratios,
    depth_normal_consistency,
    limb_rigidity_loss,
    normals_from_depth,
    soft_argmax,
)

__all__ = [
    "bone_lengths",
    "bone_ratio_loss",
    "bone_ratio_stats",
    "bone_ratios",
    "depth_normal_consistency",
    "depth_silog_loss",
    "keypoint_coordinate_loss",
    "limb_rigidity_loss",
    "normal_loss",
    "normals_from_depth",
    "pose_heatmap_loss",
    "soft_argmax",
]
