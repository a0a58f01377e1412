"""Model FLOPs and the MFU estimate printed with the training progress.

MFU = (train FLOPs per step) / (step time) / (peak FLOP/s of all devices). Train FLOPs are the
usual 3 x forward (forward + backward), counted by XLA on the lowered forward pass of one image;
the saving from frozen blocks (no weight gradients there) is not credited. The peak per device
comes from ``config.peak_tflops`` or, when that is 0, from the table below (dense bf16).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from hyper_sapiens_jax.models.arch import ModelConfig, num_deconvs
from hyper_sapiens_jax.models.weights import abstract_model

# Dense bf16 peak TFLOP/s per device, matched as substrings of ``device.device_kind``.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "TPU v6": 918.0,
    "TPU v5p": 459.0,
    "TPU v5": 197.0,
    "TPU v4": 275.0,
}


@functools.lru_cache(maxsize=16)
def forward_flops(config: ModelConfig) -> float:
    """FLOPs of one image's forward pass (all configured heads), from XLA's cost analysis."""
    config = config.replace(remat=False, scan_blocks=False)
    graphdef, state = nnx.split(abstract_model(config))
    fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    cost = fn.lower(state, jax.ShapeDtypeStruct((1, *config.image_size, 3), jnp.float32)).cost_analysis()
    return float(cost["flops"]) if cost and "flops" in cost else float("nan")


def train_flops_per_image(config: ModelConfig) -> float:
    """3 x XLA's forward count: the FLOPs of one image's training step, as MFU counts them."""
    return 3.0 * forward_flops(config)


def train_flops_per_image_analytic(config: ModelConfig) -> float:
    """3 x ``analytic_forward_flops``: the same figure without compiling anything."""
    return 3.0 * analytic_forward_flops(config)


def peak_flops_per_device(configured_tflops: float = 0.0, device: jax.Device | None = None) -> float | None:
    """Peak FLOP/s of one device: the configured value, else the table's entry, else None (CPU)."""
    if configured_tflops:
        return configured_tflops * 1e12
    kind = (device or jax.devices()[0]).device_kind
    for name, tflops in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return tflops * 1e12
    return None


def mfu(flops_per_step: float, step_seconds: float, peak_per_device: float | None, num_devices: int) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None when the peak is unknown."""
    if not peak_per_device or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / (peak_per_device * num_devices)


def analytic_forward_flops(config: ModelConfig) -> float:
    """FLOPs (2 per multiply-add) of one image's forward pass, counted from the architecture alone.

    Counts the matmuls and convolutions, which are all but a sliver of the work: the patch
    embedding, per block qkv (T x D x 3D), attention scores and values (2 x T^2 x D), output
    projection (T x D^2) and MLP (2 x T x D x 4D), then each head's stride-2 deconvolutions (each
    output pixel reads a 2x2 input window per phase: 4 x Cin x Cout), 1x1 convolutions and output
    conv. Norms, activations and softmax are left out (XLA's count includes them; the test bounds
    the difference).
    """
    spec = config.spec
    h, w = config.grid
    tokens, d = h * w, spec.embed_dims
    p = spec.patch_size
    macs = tokens * p * p * 3 * d  # patch embedding
    per_block = tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d + 2 * tokens * d * spec.mlp_dims
    macs += spec.num_layers * per_block
    for head in config.heads:
        n_conv, width, out = {
            "pose": (2, spec.pose_channels, config.num_keypoints),
            "depth": (2, spec.depth_channels, 1),
            "normal": (3, spec.normal_channels, 3),
        }[head]
        n_deconv = num_deconvs(head, p)
        hh, ww, c_in = h, w, d
        for _ in range(n_deconv):
            hh, ww = 2 * hh, 2 * ww
            macs += hh * ww * 4 * c_in * width
            c_in = width
        macs += hh * ww * width * (n_conv * width + out)
    return 2.0 * macs
