"""DDPM with ε-prediction: β schedules, the forward process and ancestral / DDIM samplers.

Timesteps are 0-based, t ∈ {0, …, T-1}; ``alpha_bars[t]`` = ∏_{i≤t} (1 − β_i). The samplers take
``eps_fn(x_t (N, K, 2), visible (N, K), t (N,) int32) -> ε̂ (N, K, 2)`` and run as one
``lax.scan`` (jit-friendly; no Python loop over T).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class Schedule(NamedTuple):
    """Per-timestep float32 arrays (T,)."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


def beta_schedule(kind: str, num_steps: int = 1000) -> np.ndarray:
    """β_t (T,) float64. 'linear': Ho et al. 1e-4 → 0.02 (rescaled to T); 'cosine': Nichol & Dhariwal."""
    if kind == "linear":
        scale = 1000.0 / num_steps  # keeps ᾱ_T ≈ 4e-5 for any T
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if kind == "cosine":
        s = 0.008
        f = np.cos((np.arange(num_steps + 1) / num_steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    raise ValueError(f"beta schedule {kind!r} is not 'linear' or 'cosine'")


def make_schedule(kind: str = "linear", num_steps: int = 1000) -> Schedule:
    betas = beta_schedule(kind, num_steps)
    alpha_bars = np.cumprod(1.0 - betas)  # float64 product, then float32
    return Schedule(*(jnp.asarray(a, jnp.float32) for a in (betas, 1.0 - betas, alpha_bars)))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε for x0, noise (N, K, 2) and t (N,)."""
    ab = schedule.alpha_bars[t][:, None, None]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def _full_visibility(n: int, k: int) -> jax.Array:
    return jnp.ones((n, k), jnp.float32)


def clip_prediction(x_t: jax.Array, eps: jax.Array, alpha_bar: jax.Array, radius: float) -> jax.Array:
    """ε̂ re-derived after clipping x̂0's joints to ``radius`` (0: no clipping); "clip_denoised".

    At large t, x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ amplifies the model's error by 1/√ᾱ (≈ 150 at
    t = T): an imperfect model then throws a few samples far off. Clipping the joint radius of x̂0 to the
    data's range (rotation-equivariant, unlike a box) keeps those samples on the data's scale.
    """
    if not radius:
        return eps
    x0 = (x_t - jnp.sqrt(1.0 - alpha_bar) * eps) / jnp.sqrt(alpha_bar)
    r = jnp.sqrt(jnp.sum(x0 * x0, -1, keepdims=True) + 1e-12)
    x0 = x0 * jnp.minimum(1.0, radius / r)
    return (x_t - jnp.sqrt(alpha_bar) * x0) / jnp.sqrt(1.0 - alpha_bar)


def ancestral_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: tuple[int, int, int],
    visible: jax.Array | None = None,
    x0_clip: float = 0.0,
) -> jax.Array:
    """DDPM ancestral sampling over all T steps with the posterior variance β̃_t -> x0 (N, K, 2)."""
    n, k, _ = shape
    visible = _full_visibility(n, k) if visible is None else visible
    ab = schedule.alpha_bars
    ab_prev = jnp.concatenate([jnp.ones((1,), ab.dtype), ab[:-1]])
    post_var = schedule.betas * (1.0 - ab_prev) / (1.0 - ab)
    rng, init = jax.random.split(rng)

    def step(x, inp):
        t, key = inp
        eps = clip_prediction(x, eps_fn(x, visible, jnp.full((n,), t, jnp.int32)), ab[t], x0_clip)
        mean = (x - schedule.betas[t] / jnp.sqrt(1.0 - ab[t]) * eps) / jnp.sqrt(schedule.alphas[t])
        noise = jax.random.normal(key, x.shape, x.dtype)
        return mean + jnp.where(t > 0, jnp.sqrt(post_var[t]), 0.0) * noise, None

    ts = jnp.arange(schedule.num_steps - 1, -1, -1, dtype=jnp.int32)
    x, _ = jax.lax.scan(
        step, jax.random.normal(init, shape, jnp.float32), (ts, jax.random.split(rng, schedule.num_steps))
    )
    return x * visible[..., None]


def ddim_timesteps(num_steps: int, sample_steps: int) -> np.ndarray:
    """The decreasing timesteps DDIM visits, T-1 … 0 (at most ``sample_steps``, distinct).

    Quadratic spacing (Song et al.'s choice for small data) puts the steps where ᾱ changes fast
    in log-SNR, near t = 0: with a linear β, uniform spacing visibly shrinks the sample variance.
    """
    ts = np.round(np.linspace(np.sqrt(num_steps - 1), 0.0, sample_steps) ** 2).astype(np.int32)
    return np.unique(ts)[::-1].copy()


def _ddim_update(eps_fn: EpsFn, schedule: Schedule, visible: jax.Array, x0_clip: float, eta: float):
    """One DDIM move x_t -> x_{t_prev} (t_prev = -1: the data, ᾱ = 1), as a ``lax.scan`` body."""
    ab = schedule.alpha_bars

    def step(x, inp):
        t, t_prev, key = inp
        eps = clip_prediction(x, eps_fn(x, visible, jnp.full(x.shape[:1], t, jnp.int32)), ab[t], x0_clip)
        x0 = (x - jnp.sqrt(1.0 - ab[t]) * eps) / jnp.sqrt(ab[t])
        ab_prev = jnp.where(t_prev >= 0, ab[jnp.maximum(t_prev, 0)], 1.0)
        sigma = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab[t]) * (1.0 - ab[t] / ab_prev))
        noise = jax.random.normal(key, x.shape, x.dtype)
        direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - sigma**2, 0.0)) * eps
        return jnp.sqrt(ab_prev) * x0 + direction + sigma * noise, None

    return step


def ddim_sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    rng: jax.Array,
    shape: tuple[int, int, int],
    sample_steps: int = 50,
    eta: float = 0.0,
    visible: jax.Array | None = None,
    x0_clip: float = 0.0,
) -> jax.Array:
    """DDIM (Song et al.) over ``sample_steps`` timesteps; eta=0 is deterministic given x_T."""
    n, k, _ = shape
    visible = _full_visibility(n, k) if visible is None else visible
    ts = jnp.asarray(ddim_timesteps(schedule.num_steps, sample_steps))
    sample_steps = ts.shape[0]
    prev = jnp.concatenate([ts[1:], jnp.full((1,), -1, jnp.int32)])  # -1: ᾱ = 1 (the data)
    rng, init = jax.random.split(rng)
    x, _ = jax.lax.scan(
        _ddim_update(eps_fn, schedule, visible, x0_clip, eta),
        jax.random.normal(init, shape, jnp.float32),
        (ts, prev, jax.random.split(rng, sample_steps)),
    )
    return x * visible[..., None]


def ddim_refine(
    eps_fn: EpsFn,
    schedule: Schedule,
    x0: jax.Array,
    visible: jax.Array,
    noise: jax.Array,
    t_start: int,
    steps: int,
    x0_clip: float = 0.0,
) -> jax.Array:
    """``Denoise(x0, t)``: noise poses x0 (N, K, 2) to ``t_start`` with ``noise`` (N, K, 2), then run
    ``steps`` deterministic DDIM moves back to the data (SDEdit-style). A pose the prior finds likely
    comes back nearly unchanged; an unlikely one moves toward the prior's modes, more so for larger
    ``t_start``. Invisible joints are 0 in the output."""
    t_start = int(min(max(t_start, 1), schedule.num_steps - 1))
    ts = np.unique(np.round(np.linspace(t_start, 0, max(int(steps), 1) + 1)[:-1]).astype(np.int32))[::-1]
    ts = jnp.asarray(ts.copy())
    prev = jnp.concatenate([ts[1:], jnp.full((1,), -1, jnp.int32)])
    x_t = q_sample(schedule, x0, jnp.full(x0.shape[:1], t_start, jnp.int32), noise)
    keys = jax.random.split(jax.random.key(0), ts.shape[0])  # eta = 0: never drawn from
    x, _ = jax.lax.scan(_ddim_update(eps_fn, schedule, visible, x0_clip, 0.0), x_t, (ts, prev, keys))
    return x * visible[..., None]
