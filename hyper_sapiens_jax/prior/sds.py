"""Score-distillation (SDS) loss of a frozen ``DiffusionPrior`` on predicted poses.

For poses z = normalize(xy) (N, K, 2), t ~ U{t_lo … t_hi}, ε ~ N(0, I), x_t = √ᾱ_t z + √(1−ᾱ_t) ε:

    g = w(t) · (ε̂(x_t, t) − ε) · visible          (stop-gradient: the prior is frozen)
    loss = Σ_batch Σ_joints g · z                   so   ∂loss/∂z = g

and ∂loss/∂xy is g pulled back through the (differentiable) normalisation. Descending it moves z
toward higher prior density (ε̂ − ε ≈ −σ_t ∇ log p_t). The returned *value* is replaced by
0.5 Σ g² (a stop-gradient correction), which is what is worth logging; the gradient is unchanged.

Everything is float32, per-sample and on device: usable inside a jitted, sharded train step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from hyper_sapiens_jax.prior.ddpm import q_sample
from hyper_sapiens_jax.prior.model import DiffusionPrior

WEIGHTINGS = ("one_minus_alpha_bar", "sqrt_one_minus_alpha_bar", "uniform")


def sds_weight(alpha_bar: jax.Array, weighting: str) -> jax.Array:
    """w(t) from ᾱ_t (N,). 'one_minus_alpha_bar' (DreamFusion) damps the low-noise steps."""
    if weighting == "one_minus_alpha_bar":
        return 1.0 - alpha_bar
    if weighting == "sqrt_one_minus_alpha_bar":
        return jnp.sqrt(1.0 - alpha_bar)
    if weighting == "uniform":
        return jnp.ones_like(alpha_bar)
    raise ValueError(f"SDS weighting {weighting!r} is not one of {WEIGHTINGS}")


def sample_timesteps(rng: jax.Array, n: int, num_steps: int, t_range: tuple[float, float]) -> jax.Array:
    """t (n,) int32 uniform on the integers in [t_range[0]·T, t_range[1]·T] (clipped to 0 … T-1)."""
    lo = min(max(round(t_range[0] * num_steps), 0), num_steps - 1)
    hi = min(max(round(t_range[1] * num_steps), lo), num_steps - 1)
    return jax.random.randint(rng, (n,), lo, hi + 1, jnp.int32)


def sds_grad(
    prior: DiffusionPrior,
    z: jax.Array,
    visible: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    weighting: str = "one_minus_alpha_bar",
    params: nnx.State | None = None,
) -> jax.Array:
    """g = w(t)(ε̂ − ε)·visible (N, K, 2) at normalised poses z; no gradient flows through it."""
    z, visible = jax.lax.stop_gradient(z), jnp.asarray(visible, jnp.float32)
    params = jax.lax.stop_gradient(prior.params if params is None else params)
    schedule = prior.schedule
    x_t = q_sample(schedule, z, t, noise)
    eps_hat = prior.eps(x_t, visible, t, params=params)
    w = sds_weight(schedule.alpha_bars[t], weighting)
    return jax.lax.stop_gradient(w[:, None, None] * (eps_hat - noise) * visible[..., None])


def sds_loss(
    prior: DiffusionPrior,
    xy: jax.Array,
    visible: jax.Array,
    rng: jax.Array,
    *,
    t_range: tuple[float, float] = (0.01, 0.05),
    weighting: str = "one_minus_alpha_bar",
    normalize: bool = True,
    num_noise: int = 1,
    t: jax.Array | None = None,
    noise: jax.Array | None = None,
    params: nnx.State | None = None,
) -> jax.Array:
    """Scalar SDS loss of poses xy (N, K, 2) with visibility (N, K) under a frozen prior.

    Args:
      xy: poses in pixels (``normalize=True``) or already in the prior's normalised coordinates.
      visible: 1 for joints the prior should judge; 0-joints get exactly zero gradient.
      rng: key for t and ε (ignored for whatever ``t`` / ``noise`` fix).
      t_range: fractions of T between which t is drawn uniformly. The default (t = 10 … 50 of
        1000, noise σ ≈ 0.04 … 0.17 normalised units) is the setting of the measured effect:
        local corrections; higher t pulls harder toward the typical pose (mode seeking).
      weighting: w(t), one of WEIGHTINGS.
      num_noise: independent (t, ε) draws per pose, averaged (a lower-variance gradient).
      t, noise: fix t (N,) and ε (N, K, 2) (tests); only with ``num_noise=1``.
      params: prior parameters to use instead of ``prior.params`` (e.g. a replicated jit input).
    Returns:
      0.5·Σ g² as the value; gradient with respect to xy = g pulled back through the normalisation.
    """
    xy, visible = jnp.asarray(xy, jnp.float32), jnp.asarray(visible, jnp.float32)
    z = prior.normalize(xy, visible) if normalize else xy * visible[..., None]
    n = z.shape[0]
    t_key, noise_key = jax.random.split(rng)
    if (t is not None or noise is not None) and num_noise != 1:
        raise ValueError("fixed t / noise need num_noise=1")
    reps = num_noise
    if t is None:
        t = sample_timesteps(t_key, n * reps, prior.spec.num_steps, t_range)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (n * reps,))
    if noise is None:
        noise = jax.random.normal(noise_key, (n * reps,) + z.shape[1:], jnp.float32)
    tile = lambda a: jnp.tile(a, (reps,) + (1,) * (a.ndim - 1))  # (R·N, ...), draw-major
    g = sds_grad(prior, tile(z), tile(visible), t, noise, weighting, params)
    g = jnp.mean(g.reshape((reps,) + z.shape), 0)
    surrogate = jnp.sum(g * z)
    return surrogate + jax.lax.stop_gradient(0.5 * jnp.sum(g * g) - surrogate)


def sds_term(
    prior: DiffusionPrior, *, t_range: tuple[float, float], weighting: str
) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]:
    """The SDS term of a training objective: ``term(xy (B, K, 2), visible (B, K), weight (B,), key)``,
    ``sds_loss`` over the samples whose ``weight`` is non-zero (visibility times weight), divided by
    the weight's sum (at least 1)."""

    def term(xy: jax.Array, visible: jax.Array, weight: jax.Array, key: jax.Array) -> jax.Array:
        value = sds_loss(prior, xy, visible * weight[:, None], key, t_range=t_range, weighting=weighting)
        return value / jnp.maximum(jnp.sum(weight), 1.0)

    return term
