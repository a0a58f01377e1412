"""Sapiens dense heads in Flax NNX: pose heatmaps, relative depth, surface normals (docs/design.md §3).

Every head is a stack of stride-2 deconvolutions (k=4, p=1, no bias) and 1x1 convolutions (with bias),
each followed by InstanceNorm (affine-free, eps 1e-5, statistics in float32) and SiLU, then a linear
1x1 output conv. Inputs and outputs are channels-last: (B, h, w, C).

The deconvolutions run as four phase convolutions (``Deconv4x2``): XLA's CPU backward of
``lax.conv_transpose`` is 7-29x slower than PyTorch's and dominated the training step of small
models; four 2x2 stride-1 convs (one per output phase) plus an interleave compute the same sums
and differentiate fast. The 1x1 convolutions run as matmuls (``Conv1x1``), which XLA's CPU backend
also differentiates faster than its convolution path.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes, initializers

from hyper_sapiens_jax.precision import widen

Array = jax.Array

# torch ConvTranspose2d(k=4, s=2, p=1, output_padding=0) == lax conv_transpose with padding k-1-p = 2.
# (Deconv4x2 below computes exactly this; the constant documents the reference it must equal.)
_DECONV_PADDING = ((2, 2), (2, 2))

# Taps of ConvTranspose2d(k=4, s=2, p=1) along one axis: output row 2m + r reads two input rows through
# torch kernel taps _PHASE_TAPS[r] (window offset d = 0, 1), the window padded per _PHASE_PADDING[r]:
#   out[2m]     = x[m-1] w[3] + x[m]   w[1]    (r = 0: window (m-1, m), pad 1 before: taps (3, 1))
#   out[2m + 1] = x[m]   w[2] + x[m+1] w[0]    (r = 1: window (m, m+1), pad 1 after:  taps (2, 0))
_PHASE_TAPS = ((3, 1), (2, 0))
_PHASE_PADDING = ((1, 0), (0, 1))
# The same taps in one 3x3 window over rows (m-1, m, m+1), d = 0, 1, 2 (the 'subpixel3x3' method):
# _SUBPIXEL_TAPS[d][r]; index 4 ("-") selects an appended zero tap.
_SUBPIXEL_TAPS = ((3, 4), (1, 2), (4, 0))
# nnx.ConvTranspose's default kernel initializer (so Deconv4x2 draws the very same initial kernel).
_DECONV_KERNEL_INIT = initializers.lecun_normal()


def phase_kernels(kernel: Array) -> Array:
    """Stored deconv kernel (4, 4, Cout, Cin) -> the four 2x2 phase kernels (2, 2, 2, 2, Cout, Cin).

    Indexed (ry, rx, dy, dx, o, i): phase (ry, rx)'s kernel in "HWOI" layout. ``kernel`` is laid out
    as ``nnx.ConvTranspose(..., transpose_kernel=True)`` stores it: ``kernel[a, b, o, i] ==
    torch_weight[i, o, a, b]`` (no spatial flip). A fixed gather (each of the 16 taps used once):
    exact in every dtype, and its gradient is a scatter back onto the 16 taps.
    """
    taps = jnp.asarray(_PHASE_TAPS)  # (r, d)
    return kernel[taps[:, None, :, None], taps[None, :, None, :]]  # (ry, rx, dy, dx, O, I)


def deconv4x2_phases(x: Array, kernel: Array, precision=None) -> Array:
    """ConvTranspose2d(k=4, s=2, p=1) of x (B, h, w, Cin) as four 2x2 convs -> (B, 2h, 2w, Cout)."""
    k = phase_kernels(kernel)
    rows = []
    for ry in range(2):
        row = [
            jax.lax.conv_general_dilated(
                x,
                k[ry, rx],
                (1, 1),
                (_PHASE_PADDING[ry], _PHASE_PADDING[rx]),
                dimension_numbers=("NHWC", "HWOI", "NHWC"),
                precision=precision,
            )
            for rx in range(2)
        ]
        rows.append(jnp.stack(row, axis=3))  # (B, h, w, rx, C)
    y = jnp.stack(rows, axis=2)  # (B, h, ry, w, rx, C)
    b, h, _, w, _, c = y.shape
    return y.reshape(b, 2 * h, 2 * w, c)


def subpixel_kernel(kernel: Array) -> Array:
    """Stored deconv kernel (4, 4, Cout, Cin) -> 3x3 conv kernel (3, 3, Cin, 4 * Cout) (HWIO).

    Output channel ``(ry * 2 + rx) * Cout + o`` is phase (ry, rx) of output channel o. A pure
    gather (plus zeros): exact in every dtype, and its gradient is a scatter-add onto the 16 taps.
    """
    taps = jnp.asarray(_SUBPIXEL_TAPS)  # (d, r)
    k = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # zero tap at index 4
    k = k[taps[:, None, :, None], taps[None, :, None, :]]  # (dy, dx, ry, rx, Cout, Cin)
    c_out, c_in = kernel.shape[2], kernel.shape[3]
    return k.transpose(0, 1, 5, 2, 3, 4).reshape(3, 3, c_in, 4 * c_out)


def deconv4x2_subpixel3x3(x: Array, kernel: Array, precision=None) -> Array:
    """The same deconv as one 3x3 conv with 4 * Cout channels + depth-to-space (9/4 of the MACs)."""
    y = jax.lax.conv_general_dilated(
        x,
        subpixel_kernel(kernel),
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=precision,
    )
    b, h, w, c4 = y.shape
    y = y.reshape(b, h, w, 2, 2, c4 // 4).transpose(0, 1, 3, 2, 4, 5)  # depth-to-space
    return y.reshape(b, 2 * h, 2 * w, c4 // 4)


_DECONV_METHODS = {"phases": deconv4x2_phases, "subpixel3x3": deconv4x2_subpixel3x3}


class Deconv4x2(nnx.Module):
    """torch ``ConvTranspose2d(Cin, Cout, 4, stride=2, padding=1, bias=False)`` as phase convolutions.

    Drop-in for ``nnx.ConvTranspose(Cin, Cout, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
    use_bias=False, transpose_kernel=True, dtype=dtype)``: the same ``kernel`` param (shape
    (4, 4, Cout, Cin), same layout, same lecun-normal initializer and rng draw), so checkpoints and
    the torch converter are unaffected.

    Why: on CPU, XLA's backward pass of ``lax.conv_transpose`` (a stride-2 transposed conv) is
    7-29x slower than PyTorch's and dominated the training step of small models. Each output phase
    (ry, rx) (rows 2m + ry, columns 2n + rx) only sees a 2x2 subset of the 16 taps over a 2x2 input
    window, so ``method='phases'`` (default) runs four 2x2 stride-1 convs, each with its own
    asymmetric 1-pixel padding (see ``_PHASE_TAPS``), and interleaves them with a stack + reshape:
    exactly the necessary multiply-adds. ``method='subpixel3x3'`` instead runs one 3x3 conv with
    4 * Cout output channels plus depth-to-space: 9/4 of the MACs (zero taps), 1.6-2.2x slower
    forward + backward on CPU; kept for comparison (benchmarks/heads.py). Either way the products
    and their sums are exactly those of the transposed conv; only the float summation order may
    differ (float32 results agree to ~1e-7 relative).

    Compute dtype as in ``nnx.ConvTranspose``: params stay ``param_dtype`` (float32), input and
    kernel are promoted to ``dtype`` (or their common type when ``dtype`` is None) before the conv.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        kernel_init=_DECONV_KERNEL_INIT,
        method: str = "phases",
        rngs: nnx.Rngs,
    ):
        if method not in _DECONV_METHODS:
            raise ValueError(f"method must be one of {sorted(_DECONV_METHODS)}, got {method!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.method = method
        self.kernel = nnx.Param(kernel_init(rngs.params(), (4, 4, out_features, in_features), param_dtype))

    def __call__(self, x: Array) -> Array:
        """x (B, h, w, Cin) -> (B, 2h, 2w, Cout)."""
        x, kernel = dtypes.promote_dtype((x, self.kernel[...]), dtype=self.dtype)
        return _DECONV_METHODS[self.method](x, kernel, self.precision)


class Conv1x1(nnx.Conv):
    """A 1x1 ``nnx.Conv`` (same ``kernel`` (1, 1, Cin, Cout) and ``bias`` params, initializers and rng
    draws) computed as a matmul over the channels.

    Why: XLA's CPU convolution path runs a 1x1 convolution's forward + backward 2.7x slower than the
    same contraction as ``jnp.dot`` (768 channels at 64x48, benchmarks/heads.py); the sums are the same.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype=None, rngs: nnx.Rngs):
        super().__init__(in_features, out_features, (1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        """x (B, H, W, Cin) -> (B, H, W, Cout)."""
        x, kernel, bias = dtypes.promote_dtype((x, self.kernel[...], self.bias[...]), dtype=self.dtype)
        return jnp.dot(x, kernel[0, 0], precision=self.precision) + bias


def instance_norm(x: Array, eps: float = 1e-5) -> Array:
    """Affine-free instance norm over (H, W) of x (B, H, W, C); statistics in float32."""
    x32 = widen(x)
    mean = x32.mean(axis=(1, 2), keepdims=True)
    var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def dropout2d(x: Array, rate: float, key: Array | None) -> Array:
    """Channel dropout (torch Dropout2d) on x (B, H, W, C); identity when ``key`` is None."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, (x.shape[0], 1, 1, x.shape[-1]))
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _hidden_layer(graphdef: nnx.GraphDef, state: nnx.State, x: Array) -> Array:
    """One hidden head layer as a pure function (so it can be remat-ed): SiLU(IN(layer(x)))."""
    return jax.nn.silu(instance_norm(nnx.merge(graphdef, state)(x)))


class DenseHead(nnx.Module):
    """Deconvs -> 1x1 convs -> (dropout) -> 1x1 output conv; each hidden layer IN + SiLU.

    Args:
      in_channels: backbone width D.
      deconv_channels: output width of each x2 deconvolution.
      conv_channels: output width of each 1x1 convolution.
      out_channels: channels of the linear output.
      output_name: attribute name of the output conv (``final_layer`` for pose, ``conv_seg`` else).
      dropout: Dropout2d rate before the output conv (applied only when a key is passed).
      remat: rematerialise each hidden layer in the backward pass (only its input is kept).
    """

    def __init__(
        self,
        in_channels: int,
        deconv_channels: tuple[int, ...],
        conv_channels: tuple[int, ...],
        out_channels: int,
        *,
        output_name: str,
        dropout: float = 0.0,
        dtype=jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.remat = remat
        self.dropout = dropout
        self.output_name = output_name
        deconvs, c = [], in_channels
        for out in deconv_channels:
            deconvs.append(Deconv4x2(c, out, dtype=dtype, rngs=rngs))
            c = out
        self.deconv_layers = nnx.List(deconvs)
        convs = []
        for out in conv_channels:
            convs.append(Conv1x1(c, out, dtype=dtype, rngs=rngs))
            c = out
        self.conv_layers = nnx.List(convs)
        setattr(self, output_name, Conv1x1(c, out_channels, dtype=dtype, rngs=rngs))

    def __call__(self, x: Array, *, dropout_key: Array | None = None) -> Array:
        """x (B, h, w, D) -> (B, h * 2^n_deconv, w * 2^n_deconv, out_channels)."""
        x = x.astype(self.dtype)
        for layer in [*self.deconv_layers, *self.conv_layers]:
            step = functools.partial(_hidden_layer, nnx.graphdef(layer))
            if self.remat:
                step = jax.checkpoint(step, policy=jax.checkpoint_policies.nothing_saveable)
            x = step(nnx.state(layer), x)
        x = dropout2d(x, self.dropout, dropout_key)
        return getattr(self, self.output_name)(x)


class PoseHead(DenseHead):
    """mmpose HeatmapHead as Sapiens uses it: 2 deconvs, 2 convs, ``final_layer`` -> K heatmaps (H/4, W/4).
    ``num_deconv``: 2 on Sapiens' patch-16 grid (``config.num_deconvs``), one fewer at patch 8."""

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        channels: int = 768,
        *,
        num_deconv: int = 2,
        dtype=jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            (channels,) * num_deconv,
            (channels,) * 2,
            num_keypoints,
            output_name="final_layer",
            dtype=dtype,
            remat=remat,
            rngs=rngs,
        )


class DepthHead(DenseHead):
    """Sapiens VitDepthHead: 4 deconvs (``num_deconv``, at patch 16), 2 convs, Dropout2d, ``conv_seg``
    -> 1 channel at full res."""

    def __init__(
        self,
        in_channels: int,
        channels: int = 384,
        dropout: float = 0.1,
        *,
        num_deconv: int = 4,
        dtype=jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            (channels,) * num_deconv,
            (channels,) * 2,
            1,
            output_name="conv_seg",
            dropout=dropout,
            dtype=dtype,
            remat=remat,
            rngs=rngs,
        )


class NormalHead(DenseHead):
    """Sapiens normal head: 3 deconvs (``num_deconv``, at patch 16), 3 convs, Dropout2d, ``conv_seg``
    -> 3 channels at H/2."""

    def __init__(
        self,
        in_channels: int,
        channels: int = 768,
        dropout: float = 0.1,
        *,
        num_deconv: int = 3,
        dtype=jnp.float32,
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_channels,
            (channels,) * num_deconv,
            (channels,) * 3,
            3,
            output_name="conv_seg",
            dropout=dropout,
            dtype=dtype,
            remat=remat,
            rngs=rngs,
        )
