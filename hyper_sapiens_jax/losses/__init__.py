"""Training losses, all computed in float32 and masked per sample by the batch's task flags.

  dense.py     pose heatmap MSE, keypoint coordinate L1, depth scale-invariant log loss, normal L1 + (1 - cos)
  geometry.py  soft-argmax, depth -> normals, depth-normal consistency, bone ratios, limb rigidity
The SDS prior loss lives with the prior (``hyper_sapiens_jax.prior``).
"""

from hyper_sapiens_jax.losses.dense import depth_silog_loss, keypoint_coordinate_loss, normal_loss, pose_heatmap_loss
from hyper_sapiens_jax.losses.geometry import (bone_lengths, bone_ratio_loss, bone_ratio_stats, bone_ratios,
                                               depth_normal_consistency, limb_rigidity_loss,
                                               normals_from_depth, soft_argmax)

__all__ = ["pose_heatmap_loss", "keypoint_coordinate_loss", "depth_silog_loss", "normal_loss", "soft_argmax", "normals_from_depth",
           "depth_normal_consistency", "bone_lengths", "bone_ratios", "bone_ratio_stats", "bone_ratio_loss",
           "limb_rigidity_loss"]
