r"""The measured effect of the prior: SDS gradient descent pulls corrupted poses back to the manifold.

Held-out poses are corrupted (a stretched limb bone, swapped left/right limbs, or joint jitter),
mapped back to pixels, and moved by gradient descent on ``sds_loss`` alone. We report, before and
after, for the corrupted and for the untouched clean poses, how far they are from the training
poses (bone-ratio error, nearest-neighbour distance; see ``measure_effect``) and how far they moved.

  python -m hyper_sapiens_jax.prior.effect --workdir W [--num 512 --steps 400]
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.keypoints import COCO17_NAMES
from hyper_sapiens_jax.prior import metrics
from hyper_sapiens_jax.prior.model import DiffusionPrior
from hyper_sapiens_jax.prior.sds import sds_loss

CORRUPTIONS = ("stretch", "swap", "jitter")
_I = {n: i for i, n in enumerate(COCO17_NAMES)}
# (parent, child, the joints that move with the child) for every limb bone that can be stretched.
_LIMB_BONES = tuple(
    (_I[f"{s}_{a}"], _I[f"{s}_{b}"], tuple(_I[f"{s}_{j}"] for j in moved))
    for s in ("left", "right")
    for a, b, moved in (
        ("shoulder", "elbow", ("elbow", "wrist")),
        ("elbow", "wrist", ("wrist",)),
        ("hip", "knee", ("knee", "ankle")),
        ("knee", "ankle", ("ankle",)),
    )
)
# Left <-> right position swaps of a whole limb (elbow + wrist, or knee + ankle).
_SWAPS = tuple(
    (tuple(_I[f"left_{j}"] for j in js), tuple(_I[f"right_{j}"] for j in js))
    for js in (("elbow", "wrist"), ("knee", "ankle"))
)


def corrupt(
    rng: np.random.Generator, z: np.ndarray, kinds: np.ndarray, stretch=(1.8, 2.4), jitter: float = 0.3
) -> np.ndarray:
    """Corrupt normalised poses z (N, K, 2); ``kinds`` (N,) indexes CORRUPTIONS per pose.

    stretch: one limb bone scaled by U(stretch) (the joints below it move along);
    swap: the left and right arm (or leg) trade positions; jitter: N(0, jitter²) on every joint.
    """
    out = np.array(z, np.float32, copy=True)
    for i, kind in enumerate(CORRUPTIONS[k] for k in kinds):
        if kind == "stretch":
            parent, child, moved = _LIMB_BONES[rng.integers(len(_LIMB_BONES))]
            out[i, list(moved)] += (rng.uniform(*stretch) - 1.0) * (out[i, child] - out[i, parent])
        elif kind == "swap":
            left, right = _SWAPS[rng.integers(len(_SWAPS))]
            out[i, list(left) + list(right)] = out[i, list(right) + list(left)]
        else:
            out[i] += rng.normal(0.0, jitter, out[i].shape)
    return out


@functools.partial(jax.jit, static_argnames=("steps", "lr", "t_range", "num_noise", "weighting"))
def sds_descent(
    prior: DiffusionPrior,
    xy: jax.Array,
    visible: jax.Array,
    rng: jax.Array,
    *,
    steps: int,
    lr: float,
    t_range: tuple[float, float],
    num_noise: int,
    weighting: str,
) -> jax.Array:
    """``steps`` of gradient descent on ``sds_loss`` in pixel space -> xy (N, K, 2).

    The step is lr·s² per pose (s: the pose's starting frame scale) so that it is lr in normalised
    units whatever the image size: ∂loss/∂xy ≈ g / s.
    """
    _, frame = prior.normalize(xy, visible, return_frame=True)
    step_size = lr * frame.scale[:, None, None] ** 2
    grad = jax.grad(
        lambda p, key: sds_loss(prior, p, visible, key, t_range=t_range, num_noise=num_noise, weighting=weighting)
    )

    def body(i, p):
        return p - step_size * grad(p, jax.random.fold_in(rng, i))

    return jax.lax.fori_loop(0, steps, body, jnp.asarray(xy, jnp.float32))


# Per-pose measures, each (N,) and lower = more plausible (or closer to the original).
MEASURES = ("bone_ratio_error", "nn_distance", "ratio_nn_distance", "restoration_error")


class _Reference:
    """What poses are measured against: the training poses and the clean poses' own bone ratios."""

    def __init__(self, train_z, train_v, clean_ratios):
        ratios, ok = metrics.bone_length_shares(train_z, train_v)
        self.train_z, self.train_v, self.train_ratios = train_z, train_v, ratios[ok]
        self.bounds = metrics.ratio_range(self.train_ratios)
        self.clean_ratios = clean_ratios

    def measure(self, z: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        ratios, ok = metrics.bone_length_shares(z, visible)
        nan = lambda a: np.where(ok, a, np.nan)  # bone measures need every body bone
        return {
            "bone_ratio_error": nan(metrics.ratio_excess(ratios, self.bounds)),
            "nn_distance": metrics.nn_distance(z, visible, self.train_z, self.train_v),
            "ratio_nn_distance": nan(metrics.ratio_nn_distance(ratios, self.train_ratios)),
            "restoration_error": nan(np.abs(ratios - self.clean_ratios).mean(-1)),
        }


def _summary(before: dict, after: dict, mask: np.ndarray) -> dict[str, float]:
    out = {}
    for m in MEASURES:
        b, a = float(np.nanmean(before[m][mask])), float(np.nanmean(after[m][mask]))
        out[m] = [b, a]
        out[f"{m}_drop"] = 1.0 - a / b if b > 0 else 0.0
    return out


SPLIT_FILE = "prior_split.npz"  # in a prior workdir: the run's exact train / held-out poses


def load_split_file(workdir: Path) -> dict[str, np.ndarray]:
    """The train / held-out poses a prior run saved (``report.save_split_file``)."""
    with np.load(workdir / SPLIT_FILE) as f:
        return {k: f[k] for k in f.files}


def measure_effect(
    prior: DiffusionPrior,
    xy: np.ndarray,
    visible: np.ndarray,
    train_z: np.ndarray,
    train_v: np.ndarray,
    seed: int = 0,
    steps: int = 400,
    lr: float = 0.1,
    t_range: tuple[float, float] = (0.01, 0.05),
    num_noise: int = 4,
    weighting: str = "one_minus_alpha_bar",
    stretch: tuple[float, float] = (1.8, 2.4),
    jitter: float = 0.3,
) -> dict:
    """Corrupt held-out poses xy (N, K, 2) (pixels), descend on SDS, and compare before / after.

    Measures (per pose, averaged; ``[before, after]`` and the relative drop):
      bone_ratio_error   how far the 12 body-bone ratios fall outside the central 95% of the
                         training poses' ratios, relative to the median ratio (0: all typical)
      nn_distance        RMS joint distance (normalised units) to the nearest training pose
      ratio_nn_distance  mean |Δ ratio| to the nearest training bone-ratio vector
      restoration_error  mean |bone ratio − the clean original's| (SDS does not know the original:
                         reported for honesty, not a manifold measure)
      displacement       RMS joint motion caused by the descent (normalised units of the start),
                         next to ``corruption_size``, the RMS joint motion the corruption caused
    """
    visible = (np.asarray(visible) > 0).astype(np.float32)
    z, frame = prior.normalize(xy, visible, return_frame=True)
    ref = _Reference(train_z, train_v, metrics.bone_length_shares(np.asarray(z), visible)[0])
    kinds = np.arange(len(xy)) % len(CORRUPTIONS)
    z_bad = corrupt(np.random.default_rng(seed), np.asarray(z), kinds, stretch, jitter)
    xy_bad = np.asarray(prior.denormalize(z_bad, frame)) * visible[..., None]
    descend = functools.partial(
        sds_descent,
        prior,
        visible=jnp.asarray(visible),
        steps=steps,
        lr=lr,
        t_range=tuple(t_range),
        num_noise=num_noise,
        weighting=weighting,
    )
    # How far the corruption moved the joints (RMS, normalised units): the scale "little" refers to.
    size = np.sqrt((np.sum((z_bad - np.asarray(z)) ** 2, -1) * visible).sum(-1) / np.maximum(visible.sum(-1), 1))
    out = {
        "num_poses": len(xy),
        "steps": steps,
        "lr": lr,
        "t_range": list(t_range),
        "num_noise": num_noise,
        "weighting": weighting,
        "corruption_size": float(size.mean()),
    }
    for name, start in (("clean", np.asarray(xy, np.float32)), ("corrupted", xy_bad)):
        moved = np.asarray(descend(xy=jnp.asarray(start), rng=jax.random.key(seed)))
        before = ref.measure(np.asarray(prior.normalize(start, visible)), visible)
        after = ref.measure(np.asarray(prior.normalize(moved, visible)), visible)
        # Displacement in the starting pose's normalised units (the frame moves with the pose).
        disp = (moved - start) / np.asarray(frame.scale)[:, None, None]
        disp = np.sqrt((np.sum(disp**2, -1) * visible).sum(-1) / np.maximum(visible.sum(-1), 1))
        row = _summary(before, after, np.ones(len(xy), bool)) | {"displacement": float(disp.mean())}
        if name == "corrupted":
            row["by_kind"] = {
                kind: _summary(before, after, kinds == k) | {"displacement": float(disp[kinds == k].mean())}
                for k, kind in enumerate(CORRUPTIONS)
            }
        out[name] = row
    return out


def _round(x):
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a prior training run")
    parser.add_argument("--num", type=int, default=512, help="held-out poses to corrupt")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--t-range", type=float, nargs=2, default=(0.01, 0.05))
    parser.add_argument("--num-noise", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prior = DiffusionPrior.load(args.workdir)
    data = load_split_file(Path(args.workdir))
    train_z = np.asarray(prior.normalize(data["train_xy"], data["train_vis"]))
    result = measure_effect(
        prior,
        data["heldout_xy"][: args.num],
        data["heldout_vis"][: args.num],
        train_z,
        data["train_vis"],
        args.seed,
        args.steps,
        args.lr,
        tuple(args.t_range),
        args.num_noise,
    )
    print(json.dumps(_round(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
