"""Sapiens dense heads in Flax NNX: pose heatmaps, relative depth, surface normals (DESIGN.md section 3).

Every head is a stack of stride-2 deconvolutions (k=4, p=1, no bias) and 1x1 convolutions (with bias),
each followed by InstanceNorm (affine-free, eps 1e-5, statistics in float32) and SiLU, then a linear
1x1 output conv. Inputs and outputs are channels-last: (B, h, w, C).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

# torch ConvTranspose2d(k=4, s=2, p=1, output_padding=0) == lax conv_transpose with padding k-1-p = 2.
_DECONV_PADDING = ((2, 2), (2, 2))


def instance_norm(x: Array, eps: float = 1e-5) -> Array:
    """Affine-free instance norm over (H, W) of x (B, H, W, C); statistics in float32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def dropout2d(x: Array, rate: float, key: Array | None) -> Array:
    """Channel dropout (torch Dropout2d) on x (B, H, W, C); identity when ``key`` is None."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0], 1, 1, x.shape[-1]))
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class DenseHead(nnx.Module):
    """Deconvs -> 1x1 convs -> (dropout) -> 1x1 output conv; each hidden layer IN + SiLU.

    Args:
      in_channels: backbone width D.
      deconv_channels: output width of each x2 deconvolution.
      conv_channels: output width of each 1x1 convolution.
      out_channels: channels of the linear output.
      output_name: attribute name of the output conv (``final_layer`` for pose, ``conv_seg`` else).
      dropout: Dropout2d rate before the output conv (applied only when a key is passed).
    """

    def __init__(self, in_channels: int, deconv_channels: tuple[int, ...],
                 conv_channels: tuple[int, ...], out_channels: int, *, output_name: str,
                 dropout: float = 0.0, dtype=jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.dropout = dropout
        self.output_name = output_name
        deconvs, c = [], in_channels
        for out in deconv_channels:
            deconvs.append(nnx.ConvTranspose(c, out, (4, 4), strides=(2, 2), padding=_DECONV_PADDING,
                                             use_bias=False, transpose_kernel=True, dtype=dtype,
                                             rngs=rngs))
            c = out
        self.deconv_layers = nnx.List(deconvs)
        convs = []
        for out in conv_channels:
            convs.append(nnx.Conv(c, out, (1, 1), dtype=dtype, rngs=rngs))
            c = out
        self.conv_layers = nnx.List(convs)
        setattr(self, output_name, nnx.Conv(c, out_channels, (1, 1), dtype=dtype, rngs=rngs))

    def __call__(self, x: Array, *, dropout_key: Array | None = None) -> Array:
        """x (B, h, w, D) -> (B, h * 2^n_deconv, w * 2^n_deconv, out_channels)."""
        x = x.astype(self.dtype)
        for layer in [*self.deconv_layers, *self.conv_layers]:
            x = jax.nn.silu(instance_norm(layer(x)))
        x = dropout2d(x, self.dropout, dropout_key)
        return getattr(self, self.output_name)(x)


class PoseHead(DenseHead):
    """mmpose HeatmapHead as Sapiens uses it: 2 deconvs, 2 convs, ``final_layer`` -> K heatmaps (H/4, W/4)."""

    def __init__(self, in_channels: int, num_keypoints: int, channels: int = 768, *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(in_channels, (channels,) * 2, (channels,) * 2, num_keypoints,
                         output_name="final_layer", dtype=dtype, rngs=rngs)


class DepthHead(DenseHead):
    """Sapiens VitDepthHead: 4 deconvs, 2 convs, Dropout2d, ``conv_seg`` -> 1 channel at full res."""

    def __init__(self, in_channels: int, channels: int = 384, dropout: float = 0.1, *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(in_channels, (channels,) * 4, (channels,) * 2, 1, output_name="conv_seg",
                         dropout=dropout, dtype=dtype, rngs=rngs)


class NormalHead(DenseHead):
    """Sapiens normal head: 3 deconvs, 3 convs, Dropout2d, ``conv_seg`` -> 3 channels at H/2."""

    def __init__(self, in_channels: int, channels: int = 768, dropout: float = 0.1, *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(in_channels, (channels,) * 3, (channels,) * 3, 3, output_name="conv_seg",
                         dropout=dropout, dtype=dtype, rngs=rngs)
