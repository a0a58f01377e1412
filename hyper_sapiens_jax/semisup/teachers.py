"""The hybrid teacher of NK-Sapiens: where each unlabelled sample's pseudo-label comes from.

  teacher A   the EMA of the student, predicting on the weak view; its decoded keypoints are mapped
              into the strong view through the known affine between the views (``align_keypoints``);
  teacher B   the student's own strong-view keypoints corrected by the frozen diffusion prior:
              normalised, noised to t and denoised back with k DDIM moves (``refine_with_prior``);
  the gate    per sample, A where it is confident (mean joint peak above ``conf_threshold``) and
              plausible (KPS above ``kps_threshold``), B otherwise (``select_targets``).

Everything is float32 and stop-gradient: no teacher ever receives gradients. Shapes: xy (B, K, 2)
in input pixels of a view, visible / confidence (B, K), affine (B, 2, 3).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hyper_sapiens_jax.data.keypoints import flip_permutation
from hyper_sapiens_jax.prior.ddpm import ddim_refine

Array = jax.Array
sg = jax.lax.stop_gradient


def align_keypoints(xy_weak: Array, values: Array, affine: Array, flipped: Array) -> tuple[Array, Array]:
    """Weak-view keypoints (B, K, 2) and per-joint values (B, K) -> the strong view's.

    ``affine`` (B, 2, 3) maps weak-crop pixels to strong-crop pixels; where ``flipped`` (B,) is 1 the
    strong view is mirrored, so joint k of the strong view is the weak view's ``flip_permutation[k]``
    (left and right swap names)."""
    xy = jnp.einsum("bij,bkj->bki", affine[..., :2], xy_weak) + affine[:, None, :, 2]
    perm = jnp.asarray(flip_permutation(xy.shape[1]))
    f = flipped.astype(bool)
    xy = jnp.where(f[:, None, None], xy[:, perm], xy)
    values = jnp.where(f[:, None], values[:, perm], values)
    return xy, values


def inside(xy: Array, image_wh: tuple[int, int]) -> Array:
    """(B, K) 1 where a point lies within the [0, W-1] x [0, H-1] crop."""
    w, h = image_wh
    return ((xy[..., 0] >= 0) & (xy[..., 0] <= w - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= h - 1)).astype(jnp.float32)


class Refined(NamedTuple):
    """Teacher B's output: the pose in the prior's frame before (z) and after (z_hat) the refinement,
    and the refined pose back in pixels (xy_hat); all (B, K, 2), z_hat and xy_hat stop-gradient."""

    z: Array
    z_hat: Array
    xy_hat: Array


def refine_with_prior(prior, xy: Array, visible: Array, key: Array, t_frac: float, steps: int) -> Refined:
    """``Denoise(ŷ, t)``: poses xy (B, K, 2) (pixels) through the frozen ``prior`` (a DiffusionPrior),
    noised to t = ``t_frac`` · T and brought back in ``steps`` DDIM moves; ``z`` stays differentiable
    in ``xy`` (the deviation loss pulls through it), the rest is stop-gradient."""
    visible = visible.astype(jnp.float32)
    params = sg(prior.params)
    z, frame = prior.normalize(xy.astype(jnp.float32), visible, return_frame=True)
    noise = jax.random.normal(key, z.shape, jnp.float32)
    t_start = round(t_frac * prior.spec.num_steps)
    eps_fn = lambda x, v, t: prior.eps(x, v, t, params=params)
    z_hat = sg(ddim_refine(eps_fn, prior.schedule, sg(z), visible, noise, t_start, steps, x0_clip=prior.spec.x0_clip))
    xy_hat = sg(prior.denormalize(z_hat, jax.tree.map(sg, frame)))
    return Refined(z, z_hat, xy_hat)


class Targets(NamedTuple):
    """Pseudo-labels in the strong view: keypoints (B, K, 2), per-joint weights (B, K), and which
    samples took teacher A (B,) (the others took teacher B)."""

    xy: Array
    weight: Array
    from_a: Array


def select_targets(
    xy_a: Array,
    conf_a: Array,
    kps_a: Array,
    xy_b: Array,
    visible_b: Array,
    *,
    conf_threshold: float,
    kps_threshold: float,
    keypoint_conf: float,
    gate: bool = True,
) -> Targets:
    """The hybrid teacher's choice per sample (all inputs already in the strong view).

    With ``gate``: a sample takes A when ``mean_k conf_a > conf_threshold`` and ``kps_a >
    kps_threshold``; its joints weigh 1 where ``conf_a > keypoint_conf``. Otherwise it takes B, whose
    joints weigh ``visible_b``. Without ``gate`` (the plain mean teacher) every sample takes A with
    every joint at weight 1."""
    conf_a, visible_b = conf_a.astype(jnp.float32), visible_b.astype(jnp.float32)
    if not gate:
        ones = jnp.ones(conf_a.shape[:1], jnp.float32)
        return Targets(sg(xy_a), jnp.ones_like(conf_a), ones)
    from_a = ((jnp.mean(conf_a, -1) > conf_threshold) & (kps_a > kps_threshold)).astype(jnp.float32)
    weight_a = (conf_a > keypoint_conf).astype(jnp.float32)
    xy = jnp.where(from_a[:, None, None] > 0, xy_a, xy_b)
    weight = jnp.where(from_a[:, None] > 0, weight_a, visible_b)
    return Targets(sg(xy), sg(weight), sg(from_a))
