"""Pose normalisation for the prior: centre on the mid-hip, scale by the torso length.

    z = R · (xy - centre) / (scale * unit)        at visible joints, 0 at invisible ones

``centre`` is the mid-hip (fallback: the centroid of the visible joints); ``scale`` is the torso
length, mid-shoulder to mid-hip (fallback: ``rms_to_torso`` x the RMS spread of the visible
joints about their centroid). Foreshortened torsos are floored at ``min_torso_frac`` x that
fallback so a pose seen along the spine does not blow up. ``unit`` is one global divisor, fitted
on the training set, that gives the normalised data unit RMS (what the DDPM noise scale assumes).
``R`` is the identity, or with ``align_torso`` the rotation that turns the mid-hip -> mid-shoulder
vector to point up (−y): then the prior need not learn every in-plane orientation (infants lie in
any), and only poses without a torso keep their image orientation.

Everything is written in jnp and is differentiable with respect to ``xy`` (the SDS gradient
reaches the pose through it). Translating or scaling ``xy`` leaves ``z`` unchanged; rotating it
rotates ``z`` by the same angle, or (aligned, torso visible) leaves ``z`` unchanged too.
Shapes: xy (N, K, 2), visible (N, K).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import COCO17_NAMES

_I = {name: i for i, name in enumerate(COCO17_NAMES)}
HIPS = (_I["left_hip"], _I["right_hip"])
SHOULDERS = (_I["left_shoulder"], _I["right_shoulder"])
_EPS = 1e-12  # inside square roots: keeps gradients finite at zero spread


@dataclasses.dataclass(frozen=True)
class NormSpec:
    """The normalisation constants (saved in prior_config.json; frozen so it can be jit-static)."""

    rms_to_torso: float = 1.0  # torso length / RMS spread, median over the training poses
    unit: float = 1.0  # global divisor: per-coordinate RMS of the normalised training poses
    min_torso_frac: float = 0.75  # torso floor, as a fraction of the RMS-based fallback scale
    align_torso: bool = True  # rotate the torso upright (poses with a visible torso)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Frame(NamedTuple):
    """Where a pose sat: ``centre`` (N, 2), ``scale`` (N,) = torso x unit, ``rotation`` (N, 2) =
    (cos, sin) of the angle that normalisation rotated it by."""

    centre: jax.Array
    scale: jax.Array
    rotation: jax.Array


def _safe_norm(v: jax.Array) -> jax.Array:
    """|v| over the last axis with a finite gradient at v = 0."""
    return jnp.sqrt(jnp.sum(v * v, axis=-1) + _EPS)


@jax.jit
def centroid_and_rms(xy: jax.Array, visible: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Centroid (N, 2) and RMS spread (N,) of the visible joints."""
    v = visible[..., None]
    count = jnp.maximum(jnp.sum(visible, -1), 1.0)
    centroid = jnp.sum(v * xy, -2) / count[:, None]
    rms = jnp.sqrt(jnp.sum(v * (xy - centroid[:, None]) ** 2, (-2, -1)) / count + _EPS)
    return centroid, rms


def _pair(xy, visible, pair):
    """Midpoint (N, 2) of two joints and whether both are visible (N,)."""
    a, b = pair
    return 0.5 * (xy[:, a] + xy[:, b]), (visible[:, a] > 0) & (visible[:, b] > 0)


@jax.jit
def torso_length(xy: jax.Array, visible: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mid-shoulder to mid-hip length (N,) and whether all four joints are visible (N,)."""
    mid_hip, hip_ok = _pair(xy, visible, HIPS)
    mid_shoulder, shoulder_ok = _pair(xy, visible, SHOULDERS)
    return _safe_norm(mid_shoulder - mid_hip), hip_ok & shoulder_ok


# Jitted (spec static): called eagerly on data, op-by-op dispatch would compile dozens of kernels.
@functools.partial(jax.jit, static_argnames="spec")
def pose_frame(xy: jax.Array, visible: jax.Array, spec: NormSpec) -> Frame:
    """The centre, scale and rotation of each pose; xy (N, K, 2), visible (N, K)."""
    xy, visible = jnp.asarray(xy, jnp.float32), jnp.asarray(visible, jnp.float32)
    centroid, rms = centroid_and_rms(xy, visible)
    mid_hip, hip_ok = _pair(xy, visible, HIPS)
    torso, torso_ok = torso_length(xy, visible)
    fallback = spec.rms_to_torso * rms
    scale = jnp.where(torso_ok, jnp.maximum(torso, spec.min_torso_frac * fallback), fallback)
    # A single visible joint has zero spread: any positive scale gives z = 0 there.
    scale = jnp.maximum(scale, 1e-6)
    centre = jnp.where(hip_ok[:, None], mid_hip, centroid)
    identity = jnp.broadcast_to(jnp.array([1.0, 0.0], jnp.float32), centre.shape)
    if spec.align_torso:
        # The rotation taking the torso vector v to (0, −|v|): cos = −v_y/|v|, sin = −v_x/|v|.
        mid_shoulder, _ = _pair(xy, visible, SHOULDERS)
        v = mid_shoulder - mid_hip
        upright = jnp.stack([-v[:, 1], -v[:, 0]], -1) / _safe_norm(v)[:, None]
        # A torso of (near) zero length has no direction: keep the image orientation then.
        defined = torso_ok & (torso > 1e-4 * fallback)
        rotation = jnp.where(defined[:, None], upright, identity)
    else:
        rotation = identity
    return Frame(centre, scale * spec.unit, rotation)


def _rotate_cs(z: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    c, s = cos[:, None], sin[:, None]
    x, y = z[..., 0], z[..., 1]
    return jnp.stack([c * x - s * y, s * x + c * y], -1)


def normalize_in_frame(xy: jax.Array, visible: jax.Array, frame: Frame) -> jax.Array:
    """(N, K, 2) normalised coordinates in a given frame; invisible joints are 0."""
    z = (jnp.asarray(xy, jnp.float32) - frame.centre[:, None]) / frame.scale[:, None, None]
    z = _rotate_cs(z, frame.rotation[:, 0], frame.rotation[:, 1])
    return z * jnp.asarray(visible, jnp.float32)[..., None]


@functools.partial(jax.jit, static_argnames="spec")
def normalize(xy: jax.Array, visible: jax.Array, spec: NormSpec) -> tuple[jax.Array, Frame]:
    """xy (N, K, 2), visible (N, K) -> normalised z (N, K, 2) and the frame to undo it."""
    frame = pose_frame(xy, visible, spec)
    return normalize_in_frame(xy, visible, frame), frame


@jax.jit
def denormalize(z: jax.Array, frame: Frame) -> jax.Array:
    """The inverse of ``normalize``: z (N, K, 2) -> xy (N, K, 2) (invisible joints land on the centre)."""
    z = _rotate_cs(jnp.asarray(z, jnp.float32), frame.rotation[:, 0], -frame.rotation[:, 1])
    return z * frame.scale[:, None, None] + frame.centre[:, None]


def fit_spec(xy: np.ndarray, visible: np.ndarray, min_torso_frac: float = 0.75, align_torso: bool = True) -> NormSpec:
    """Fit ``rms_to_torso`` and ``unit`` on training poses (numpy in, plain floats out)."""
    xy, visible = jnp.asarray(xy, jnp.float32), jnp.asarray(visible, jnp.float32)
    _, rms = centroid_and_rms(xy, visible)
    torso, ok = torso_length(xy, visible)
    ok = np.asarray(ok & (rms > 1e-6))
    ratio = float(np.median(np.asarray(torso / rms)[ok])) if ok.any() else 1.0
    spec = NormSpec(rms_to_torso=ratio, unit=1.0, min_torso_frac=min_torso_frac, align_torso=align_torso)
    z, _ = normalize(xy, visible, spec)
    # Per-coordinate RMS over visible joints -> 1 (invisible joints are 0 and not counted).
    count = 2.0 * max(float(np.asarray(visible).sum()), 1.0)
    unit = float(np.sqrt(float(jnp.sum(z * z)) / count))
    return dataclasses.replace(spec, unit=unit if unit > 0 else 1.0)


# ---------------------------------------------------------------------------------------------
# Augmentation in normalised space (infants lie in any orientation; mirror images are poses too)
# ---------------------------------------------------------------------------------------------
def rotate(z: jax.Array, angle: jax.Array) -> jax.Array:
    """Rotate each pose z (N, K, 2) about the origin by angle (N,) radians."""
    return _rotate_cs(z, jnp.cos(angle), jnp.sin(angle))


def flip(z: jax.Array, visible: jax.Array, perm: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Mirror x and swap left/right joints: z (N, K, 2), visible (N, K) -> the mirrored pose."""
    return z[:, perm] * jnp.array([-1.0, 1.0], z.dtype), visible[:, perm]
