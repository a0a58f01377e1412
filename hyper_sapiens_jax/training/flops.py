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

from hyper_sapiens_jax.models.config import ModelConfig
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
    return 3.0 * forward_flops(config)


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
