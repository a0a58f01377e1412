"""The ε-prediction network: a residual MLP over a flattened, masked pose and a timestep embedding.

Input per pose: the noisy normalised keypoints x_t (K, 2) with invisible joints zeroed, the
visibility mask (K,) as an extra channel (so "missing" is not confused with "at the centre"), and
the integer timestep t. Output: ε̂ (K, 2). Everything runs in float32 (the prior is small; its
gradient is what the pose model learns from, so we keep it exact).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class DenoiserSpec:
    """Model dimensions (saved in prior_config.json)."""

    num_keypoints: int = 17
    width: int = 256
    depth: int = 4
    hidden_mult: int = 2
    time_dim: int = 64

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding (N, dim) of timesteps t (N,) (the Transformer / DDPM formula)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], -1)


class ResBlock(nnx.Module):
    """h + fc2(silu(fc1(LN(h)) + time(temb))); fc2 starts at zero so each block starts as identity."""

    def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.time = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, h: jax.Array, temb: jax.Array) -> jax.Array:
        return h + self.fc2(nnx.silu(self.fc1(self.norm(h)) + self.time(temb)))


class Denoiser(nnx.Module):
    """ε̂ = Denoiser(x_t (N, K, 2), visible (N, K), t (N,)) -> (N, K, 2)."""

    def __init__(self, spec: DenoiserSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        k, w = spec.num_keypoints, spec.width
        self.embed = nnx.Linear(3 * k, w, rngs=rngs)
        self.time1 = nnx.Linear(spec.time_dim, w, rngs=rngs)
        self.time2 = nnx.Linear(w, w, rngs=rngs)
        self.blocks = nnx.List([ResBlock(w, spec.hidden_mult * w, rngs=rngs) for _ in range(spec.depth)])
        self.out_norm = nnx.LayerNorm(w, rngs=rngs)
        self.out = nnx.Linear(w, 2 * k, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x_t: jax.Array, visible: jax.Array, t: jax.Array) -> jax.Array:
        n, k, _ = x_t.shape
        v = jnp.asarray(visible, jnp.float32)
        x = jnp.concatenate([(x_t * v[..., None]).reshape(n, 2 * k), v], -1)
        temb = self.time2(nnx.silu(self.time1(timestep_embedding(t, self.spec.time_dim))))
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(nnx.silu(self.out_norm(h))).reshape(n, k, 2)
