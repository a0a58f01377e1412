"""Kinematic plausibility of 2D poses: the score (KPS) that gates teacher A, and its reference.

A pose passes three groups of checks against statistics of the labelled set:

  ratios     each body bone's 2D length over the pose's mean bone length lies within
             ``ratio_mean ± ratio_z · ratio_std`` (per bone; the mean is estimated from the visible
             bones against the reference ratios, so a partly visible pose keeps its scale);
  symmetry   each left/right limb pair's asymmetry |l − r| / (l + r) is at most the labelled set's
             ``symmetry_quantile`` (per pair);
  angles     each joint angle (elbows, knees, shoulders, hips; the angle between the two bones that
             meet there, in [0, π]) lies within the labelled set's [q, 1 − q] quantiles.

A check counts only where all its joints are visible. ``KPS = mean over groups (with at least one
valid check) of the fraction of that group's checks passed``: 1 for a pose every check accepts,
0 when nothing can be checked. The checks are ratios and angles, so the score does not change
when a pose is translated, scaled, rotated or mirrored (mirroring swaps left and right, which the
reference treats alike through the flip-invariant statistics).

The same reference holds the mean normalised limb lengths of the labelled set with depth, which
the limb-rigidity loss compares against (``losses.limb_lengths``).
Shapes: xy (B, K, 2), visible (B, K).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import COCO17_NAMES
from hyper_sapiens_jax.losses.geometry import RATIO_BONES, SYMMETRIC_PAIRS

_I = {name: i for i, name in enumerate(COCO17_NAMES)}
# (a, joint, c): the angle at ``joint`` between the bones joint->a and joint->c.
ANGLES = tuple(
    (_I[a], _I[j], _I[c])
    for a, j, c in (
        ("left_shoulder", "left_elbow", "left_wrist"),
        ("right_shoulder", "right_elbow", "right_wrist"),
        ("left_hip", "left_knee", "left_ankle"),
        ("right_hip", "right_knee", "right_ankle"),
        ("left_elbow", "left_shoulder", "left_hip"),
        ("right_elbow", "right_shoulder", "right_hip"),
        ("left_knee", "left_hip", "left_shoulder"),
        ("right_knee", "right_hip", "right_shoulder"),
    )
)
REFERENCE_FILE = "kinematic_reference.json"


@dataclasses.dataclass(frozen=True)
class KinematicReference:
    """Statistics of the labelled poses (lists of floats, one per bone / pair / angle)."""

    ratio_mean: tuple[float, ...]  # (nB,) bone length / mean bone length, 2D
    ratio_std: tuple[float, ...]
    symmetry_max: tuple[float, ...]  # (nP,) asymmetry quantile per left/right pair
    angle_lo: tuple[float, ...]  # (nA,) radians
    angle_hi: tuple[float, ...]
    limb_mean: tuple[float, ...]  # (nB,) normalised 2D+depth limb lengths (limb rigidity's target)
    num_poses: int
    ratio_z: float = 2.5

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """JSON of the statistics (plus ``extra`` keys, e.g. what they were computed from)."""
        Path(path).write_text(json.dumps({**dataclasses.asdict(self), **(extra or {})}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> KinematicReference:
        try:
            d = json.loads(Path(path).read_text())
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a kinematic reference ({e})") from None


def _bone_vectors(xy, bones=RATIO_BONES):
    a = np.array([i for i, _ in bones])
    b = np.array([j for _, j in bones])
    return xy[..., b, :] - xy[..., a, :]


def _angles(xy, xnp=jnp):
    """Joint angles (..., nA) in [0, π] for ``ANGLES``."""
    a, j, c = (np.array(v) for v in zip(*ANGLES))
    u, v = xy[..., a, :] - xy[..., j, :], xy[..., c, :] - xy[..., j, :]
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = xnp.sum(u * v, -1)
    return xnp.abs(xnp.arctan2(cross, dot))


def _ends(visible, index_sets, xnp=jnp):
    """(..., n) 1 where every joint of each index set is visible."""
    idx = np.array(index_sets)
    return xnp.prod(visible[..., idx] > 0, axis=-1).astype(np.float32)


def limb_lengths(xy, depth=None, depth_scale: float = 0.0, weight=None, reference=None, xnp=jnp):
    """Normalised limb lengths (..., nB): ``ℓ_b = sqrt(|p_i − p_j|² + a (D_i − D_j)²)`` per body bone,
    over the pose's scale. xy (..., K, 2) in any unit; depth (..., K) relative depth at the keypoints
    (``a = depth_scale``, in units of xy² per depth²); ``xnp`` is jnp or np.

    The scale is the mean limb length: over all bones (``weight`` None), or estimated from the bones
    with ``weight`` (..., nB) > 0 as ``Σ ℓ_b / Σ reference_b`` over them (``reference`` (nB,): the
    reference's normalised lengths, whose mean is 1), so that a partly visible pose is put on the
    scale a whole one would have."""
    d = _bone_vectors(xy)
    sq = xnp.sum(d * d, -1)
    if depth is not None and depth_scale:
        a_idx = np.array([i for i, _ in RATIO_BONES])
        b_idx = np.array([j for _, j in RATIO_BONES])
        sq = sq + depth_scale * xnp.square(depth[..., b_idx] - depth[..., a_idx])
    length = xnp.sqrt(sq + 1e-12)
    if weight is None:
        return length / xnp.maximum(xnp.mean(length, -1, keepdims=True), 1e-9)
    on = (weight > 0).astype(length.dtype)
    ref = xnp.ones(length.shape[-1], length.dtype) if reference is None else reference
    scale = xnp.sum(length * on, -1, keepdims=True) / xnp.maximum(xnp.sum(ref * on, -1, keepdims=True), 1e-9)
    return length / xnp.maximum(scale, 1e-9)


def compute_reference(
    xy: np.ndarray,
    visible: np.ndarray,
    depth: np.ndarray | None = None,
    *,
    depth_scale: float = 0.0,
    symmetry_quantile: float = 0.95,
    angle_quantile: float = 0.01,
    ratio_z: float = 2.5,
) -> KinematicReference:
    """Reference statistics from labelled poses xy (N, K, 2) with visibility (N, K) (and depth (N, K)
    at the keypoints, for the rigidity target). Ratio and limb statistics use the complete skeletons,
    symmetry and angles every pose where the joints of that check are visible."""
    xy, visible = np.asarray(xy, np.float64), np.asarray(visible, np.float64)
    body = np.unique(np.asarray(RATIO_BONES).ravel())
    complete = (visible[:, body] > 0).all(-1)
    if complete.sum() < 2:
        raise ValueError(f"the labelled poses hold {int(complete.sum())} complete skeletons; need at least 2")
    lengths = np.linalg.norm(_bone_vectors(xy[complete]), axis=-1)
    ratios = lengths / np.maximum(lengths.mean(-1, keepdims=True), 1e-9)
    limbs = limb_lengths(
        xy[complete], None if depth is None else np.asarray(depth, np.float64)[complete], depth_scale, xnp=np
    )
    all_lengths = np.linalg.norm(_bone_vectors(xy), axis=-1)
    pairs_ok = _ends(visible, [RATIO_BONES[p] + RATIO_BONES[q] for p, q in SYMMETRIC_PAIRS], xnp=np)
    left, right = (np.array(v) for v in zip(*SYMMETRIC_PAIRS))
    asym = np.abs(all_lengths[:, left] - all_lengths[:, right]) / (all_lengths[:, left] + all_lengths[:, right] + 1e-9)
    angles = _angles(xy, xnp=np)
    angles_ok = _ends(visible, ANGLES, xnp=np)

    def quantile(values, ok, q):
        return tuple(
            float(np.quantile(values[ok[:, i] > 0, i], q)) if (ok[:, i] > 0).any() else (np.pi if q > 0.5 else 0.0)
            for i in range(values.shape[1])
        )

    return KinematicReference(
        ratio_mean=tuple(map(float, ratios.mean(0))),
        ratio_std=tuple(map(float, np.maximum(ratios.std(0), 1e-3))),
        symmetry_max=quantile(asym, pairs_ok, symmetry_quantile),
        angle_lo=quantile(angles, angles_ok, angle_quantile),
        angle_hi=quantile(angles, angles_ok, 1.0 - angle_quantile),
        limb_mean=tuple(map(float, limbs.mean(0))),
        num_poses=int(len(xy)),
        ratio_z=ratio_z,
    )


def kinematic_checks(xy: jax.Array, visible: jax.Array, ref: KinematicReference) -> dict[str, tuple]:
    """Per group: (passed (B, n), valid (B, n)) float32 for 'ratios', 'symmetry', 'angles'."""
    xy, visible = xy.astype(jnp.float32), visible.astype(jnp.float32)
    lengths = jnp.sqrt(jnp.sum(jnp.square(_bone_vectors(xy)), -1) + 1e-12)  # (B, nB)
    bones_ok = _ends(visible, RATIO_BONES)
    # The pose's scale from its visible bones against the reference ratios (whose mean is 1), so a
    # partly visible pose is measured on the scale its whole skeleton would have.
    mean = jnp.asarray(ref.ratio_mean, jnp.float32)
    scale = jnp.sum(lengths * bones_ok, -1, keepdims=True) / jnp.maximum(
        jnp.sum(mean * bones_ok, -1, keepdims=True), 1e-9
    )
    ratios = lengths / jnp.maximum(scale, 1e-9)
    z = jnp.abs(ratios - jnp.asarray(ref.ratio_mean)) / jnp.asarray(ref.ratio_std)
    left, right = (np.array(v) for v in zip(*SYMMETRIC_PAIRS))
    asym = jnp.abs(lengths[:, left] - lengths[:, right]) / (lengths[:, left] + lengths[:, right] + 1e-9)
    pairs_ok = _ends(visible, [RATIO_BONES[p] + RATIO_BONES[q] for p, q in SYMMETRIC_PAIRS])
    angles = _angles(xy)
    return {
        "ratios": ((z <= ref.ratio_z).astype(jnp.float32), bones_ok),
        "symmetry": ((asym <= jnp.asarray(ref.symmetry_max)).astype(jnp.float32), pairs_ok),
        "angles": (
            ((angles >= jnp.asarray(ref.angle_lo)) & (angles <= jnp.asarray(ref.angle_hi))).astype(jnp.float32),
            _ends(visible, ANGLES),
        ),
    }


def kinematic_score(xy: jax.Array, visible: jax.Array, ref: KinematicReference) -> jax.Array:
    """KPS (B,) in [0, 1]: the mean over check groups of the fraction of valid checks passed (see the
    module docstring); 0 for a pose with no valid check."""
    fractions, groups = [], []
    for passed, valid in kinematic_checks(xy, visible, ref).values():
        n = valid.sum(-1)
        fractions.append(jnp.sum(passed * valid, -1) / jnp.maximum(n, 1.0))
        groups.append((n > 0).astype(jnp.float32))
    fractions, groups = jnp.stack(fractions, -1), jnp.stack(groups, -1)
    return jnp.sum(fractions * groups, -1) / jnp.maximum(groups.sum(-1), 1.0)
