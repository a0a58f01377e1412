"""The multi-head Sapiens model: one ViT backbone, any subset of {pose, depth, normal} heads."""

from __future__ import annotations

import jax
from flax import nnx

from hyper_sapiens_jax.models.arch import ModelConfig, num_deconvs
from hyper_sapiens_jax.models.heads import DepthHead, NormalHead, PoseHead
from hyper_sapiens_jax.models.vit import SapiensViT
from hyper_sapiens_jax.precision import widen

Array = jax.Array


class Sapiens(nnx.Module):
    """Backbone + heads. ``model(images)`` returns a dict of float32 outputs.

    Output shapes for images (B, H, W, 3): ``features`` (B, H/p, W/p, D) (p: the patch, 16 for
    Sapiens); ``pose`` (B, H/4, W/4, K);
    ``depth`` (B, H, W, 1); ``normal`` (B, H/2, W/2, 3) — only for the heads the config names.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        spec, dtype = config.spec, config.compute_dtype
        self.backbone = SapiensViT(
            spec,
            config.image_size,
            patch_padding=config.patch_padding,
            dtype=dtype,
            attention=config.attention,
            remat=config.remat,
            remat_policy=config.remat_policy,
            scan_blocks=config.scan_blocks,
            rngs=rngs,
        )
        d, p = spec.embed_dims, spec.patch_size
        common = dict(dtype=dtype, remat=config.remat_heads, rngs=rngs)
        heads = {}
        if "pose" in config.heads:
            heads["pose"] = PoseHead(
                d, config.num_keypoints, spec.pose_channels, num_deconv=num_deconvs("pose", p), **common
            )
        if "depth" in config.heads:
            heads["depth"] = DepthHead(
                d, spec.depth_channels, config.head_dropout, num_deconv=num_deconvs("depth", p), **common
            )
        if "normal" in config.heads:
            heads["normal"] = NormalHead(
                d, spec.normal_channels, config.head_dropout, num_deconv=num_deconvs("normal", p), **common
            )
        self.heads = nnx.Dict(heads)

    def __call__(self, images: Array, *, dropout_key: Array | None = None) -> dict[str, Array]:
        """images: (B, H, W, 3) Sapiens-normalised RGB. ``dropout_key`` enables head dropout (training)."""
        features = self.backbone(images)
        out = {"features": widen(features)}
        keys = dict(zip(self.heads, jax.random.split(dropout_key, len(self.heads)))) if dropout_key is not None else {}
        for name, head in self.heads.items():
            out[name] = widen(head(features, dropout_key=keys.get(name)))
        return out
