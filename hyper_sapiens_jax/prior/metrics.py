"""How plausible a set of poses is: bone-length ratios, distribution distances, nearest neighbours.

Bone ratios use the 12 body bones of the COCO skeleton (limbs, hips, shoulders, torso sides) each
divided by their sum: scale- and rotation-free, and defined for MINI-RGBD's 13 points too (the
face bones are left out — eyes and ears are missing there and tiny anyway). Poses (N, K, 2),
visibility (N, K); numpy in, numpy out unless stated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import COCO17_BODY_BONES as BODY_BONES
from hyper_sapiens_jax.data.keypoints import COCO17_NAMES

BONE_NAMES: tuple[str, ...] = tuple(f"{COCO17_NAMES[a]}-{COCO17_NAMES[b]}" for a, b in BODY_BONES)


def bone_length_shares(z: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each body bone's share of the skeleton's total bone length (N, B; rows sum to 1), and whether
    every body bone is visible (N,). The prior's report measures poses by these (its "bone_ratio"
    fields); the training loss's ``losses.geometry.bone_ratios`` divide by the mean length instead."""
    z, visible = np.asarray(z, np.float64), np.asarray(visible) > 0
    a, b = np.array(BODY_BONES).T
    lengths = np.linalg.norm(z[:, a] - z[:, b], axis=-1)
    ok = (visible[:, a] & visible[:, b]).all(-1)
    return lengths / np.maximum(lengths.sum(-1, keepdims=True), 1e-12), ok


def ratio_stats(ratios: np.ndarray) -> dict[str, list[float]]:
    """Per-bone median and spread (interquartile range) of bone ratios (N, B)."""
    q25, q50, q75 = np.percentile(ratios, [25, 50, 75], axis=0)
    return {"median": q50.round(5).tolist(), "iqr": (q75 - q25).round(5).tolist()}


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to x (N, D) and y (M, D) (as in FID)."""
    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr sqrt(cx cy) = tr sqrt(cx^½ cy cx^½): symmetric, so eigh instead of a general sqrtm.
    w, v = np.linalg.eigh(cx)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cy @ root), 0, None)).sum()
    return float(np.sum((mx - my) ** 2) + np.trace(cx) + np.trace(cy) - 2.0 * cross)


def wasserstein1(x: np.ndarray, y: np.ndarray, quantiles: int = 200) -> np.ndarray:
    """Per-column 1-D Wasserstein-1 distance between x (N, D) and y (M, D), via quantiles -> (D,)."""
    q = (np.arange(quantiles) + 0.5) / quantiles
    return np.abs(np.quantile(x, q, axis=0) - np.quantile(y, q, axis=0)).mean(0)


@jax.jit
def _nn_chunk(za, va, zb, vb):
    """RMS joint distance to the nearest pose of b, over joints visible in both (chunk of a)."""
    fa, fb = za.reshape(za.shape[0], -1), zb.reshape(zb.shape[0], -1)
    sq_a = jnp.sum(za * za, -1)  # (A, K); z is 0 at invisible joints
    sq_b = jnp.sum(zb * zb, -1)
    # Σ_k va vb |a_k - b_k|² expanded, so it is three matrix products instead of an (A, B, K) array.
    d2 = sq_a @ vb.T + va @ sq_b.T - 2.0 * fa @ fb.T
    count = jnp.maximum(va @ vb.T, 1.0)
    return jnp.sqrt(jnp.maximum(jnp.min(d2 / count, axis=1), 0.0))


def nn_distance(
    z: np.ndarray, visible: np.ndarray, ref_z: np.ndarray, ref_visible: np.ndarray, chunk: int = 256
) -> np.ndarray:
    """For each pose (N,), the RMS joint distance to its nearest neighbour among ``ref`` poses."""
    z = np.asarray(z, np.float32) * (np.asarray(visible) > 0)[..., None]
    ref = jnp.asarray(np.asarray(ref_z, np.float32) * (np.asarray(ref_visible) > 0)[..., None])
    ref_v = jnp.asarray(np.asarray(ref_visible) > 0, jnp.float32)
    v = (np.asarray(visible) > 0).astype(np.float32)
    parts = []
    for s in range(0, len(z), chunk):
        za, va = z[s : s + chunk], v[s : s + chunk]
        pad = chunk - len(za)  # one compiled shape for every chunk
        za, va = np.pad(za, ((0, pad), (0, 0), (0, 0))), np.pad(va, ((0, pad), (0, 0)))
        parts.append(np.asarray(_nn_chunk(jnp.asarray(za), jnp.asarray(va), ref, ref_v))[: chunk - pad])
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def ratio_range(train_ratios: np.ndarray, coverage: float = 95.0) -> np.ndarray:
    """(3, B): the per-bone central ``coverage``% interval (low, high) and median of training ratios."""
    lo, hi = (100.0 - coverage) / 2.0, 100.0 - (100.0 - coverage) / 2.0
    return np.percentile(train_ratios, [lo, hi, 50.0], axis=0)


def ratio_excess(ratios: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How far each pose's bone ratios (N, B) fall outside the training range, relative to the
    median bone ratio, averaged over bones (N,): 0 for a pose whose every bone is typical."""
    lo, hi, med = bounds
    return (np.maximum(0.0, np.maximum(ratios - hi, lo - ratios)) / med).mean(-1)


def ratio_nn_distance(ratios: np.ndarray, train_ratios: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Mean absolute difference (N,) to the nearest training bone-ratio vector (joint structure)."""
    out = []
    for s in range(0, len(ratios), chunk):
        d = np.abs(ratios[s : s + chunk, None, :] - train_ratios[None]).mean(-1)
        out.append(d.min(1))
    return np.concatenate(out) if out else np.zeros((0,))
