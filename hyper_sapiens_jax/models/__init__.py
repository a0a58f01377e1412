"""Sapiens models in Flax NNX: the ViT backbone, the pose/depth/normal heads and the multi-head model."""

from hyper_sapiens_jax.models.arch import ARCHS, HEADS, ArchSpec, ModelConfig
from hyper_sapiens_jax.models.heads import DepthHead, NormalHead, PoseHead
from hyper_sapiens_jax.models.sapiens import Sapiens
from hyper_sapiens_jax.models.vit import SapiensViT

__all__ = [
    "ARCHS",
    "HEADS",
    "ArchSpec",
    "DepthHead",
    "ModelConfig",
    "NormalHead",
    "PoseHead",
    "Sapiens",
    "SapiensViT",
]
