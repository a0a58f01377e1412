"""The end-of-training report: sample-vs-held-out statistics (``prior_report.json``) and a PNG.

Compared with the held-out poses, each of: the prior's samples, training poses (the floor a
perfect model would reach) and a Gaussian fitted to the training poses (the baseline a useful
prior must beat):
  - per-bone length-ratio medians and interquartile spreads (12 body bones),
  - Fréchet distance between Gaussians fitted to the bone-ratio vectors, mean per-bone W1,
  - mean nearest-neighbour distance to training poses (samples far from all data are implausible).
Plus, optionally, the measured SDS effect (``effect.measure_effect``) on held-out poses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import jax
import ml_collections
import numpy as np

from hyper_sapiens_jax.data.visualize import draw_skeleton, grid
from hyper_sapiens_jax.prior import metrics
from hyper_sapiens_jax.prior.effect import SPLIT_FILE, measure_effect
from hyper_sapiens_jax.prior.model import DiffusionPrior

REPORT_FILE = "prior_report.json"
SAMPLES_PNG = "prior_samples.png"


def save_split_file(workdir: Path, data: dict[str, np.ndarray]) -> None:
    """The exact train / held-out poses of the run, for the report and the effect CLI
    (``effect.load_split_file`` reads them back)."""
    np.savez_compressed(workdir / SPLIT_FILE, **{k: v for k, v in data.items() if isinstance(v, np.ndarray)})


def set_stats(z: np.ndarray, visible: np.ndarray, ref: dict[str, Any], train_z, train_v) -> dict[str, Any]:
    """Bone-ratio statistics of poses z (N, K, 2) and their distances to the reference (held-out) set."""
    ratios, ok = metrics.bone_length_shares(z, visible)
    ratios = ratios[ok]
    if len(ratios) < 2:
        return {"num_poses": len(z), "num_with_all_body_bones": len(ratios)}
    return {
        "num_poses": len(z),
        "num_with_all_body_bones": len(ratios),
        "bone_ratio": metrics.ratio_stats(ratios),
        "frechet_bone_ratio": round(metrics.frechet_distance(ratios, ref["ratios"]), 6),
        "w1_bone_ratio_mean": round(float(metrics.wasserstein1(ratios, ref["ratios"]).mean()), 6),
        "nn_distance_to_train_mean": round(float(metrics.nn_distance(z, visible, train_z, train_v).mean()), 4),
    }


def gaussian_baseline(rng: np.random.Generator, z: np.ndarray, n: int) -> np.ndarray:
    """n poses (n, K, 2) from a full-covariance Gaussian fitted to normalised poses z (N, K, 2)."""
    flat = z.reshape(len(z), -1).astype(np.float64)
    return rng.multivariate_normal(flat.mean(0), np.cov(flat, rowvar=False), n).reshape(n, *z.shape[1:])


def samples_png(
    path: Path,
    samples: np.ndarray,
    heldout: np.ndarray,
    heldout_vis: np.ndarray,
    columns: int = 8,
    rows: int = 3,
    cell: int = 112,
) -> None:
    """Rows of sampled skeletons above rows of held-out ones (normalised coordinates, mid-hip centred)."""

    def panel(z, v, label):
        canvas = np.full((cell, cell, 3), 255, np.uint8)
        # ±3.5 normalised units fill the cell (unit RMS per coordinate); larger poses are shrunk to fit.
        z = np.asarray(z)
        extent = max(3.5, float(np.abs(z[np.asarray(v) > 0]).max(initial=0.0)) * 1.05)
        out = draw_skeleton(canvas, z * cell / (2 * extent) + cell / 2.0, np.asarray(v))
        cv2.putText(out, label, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (90, 90, 90), 1, cv2.LINE_AA)
        return out

    n = columns * rows
    panels = [panel(z, np.ones(len(z)), "sample") for z in samples[:n]]
    panels += [panel(z, v, "held-out") for z, v in zip(heldout[:columns], heldout_vis[:columns])]
    image = grid(panels, columns=columns)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_report(
    prior: DiffusionPrior, data: dict[str, np.ndarray], workdir: Path, cfg: ml_collections.ConfigDict, seed: int = 0
) -> dict[str, Any]:
    """Sample, compare, draw; writes REPORT_FILE and SAMPLES_PNG in ``workdir``; returns a summary."""
    t0 = time.perf_counter()
    save_split_file(workdir, data)
    rng = np.random.default_rng(seed)
    held_z = np.asarray(prior.normalize(data["heldout_xy"], data["heldout_vis"]))
    held_v = data["heldout_vis"]
    n_train = min(cfg.num_train_reference, len(data["train_xy"]))
    pick = rng.choice(len(data["train_xy"]), n_train, replace=False)
    train_z = np.asarray(prior.normalize(data["train_xy"][pick], data["train_vis"][pick]))
    train_v = data["train_vis"][pick]
    ratios, ok = metrics.bone_length_shares(held_z, held_v)
    ref = {"ratios": ratios[ok]}

    key = jax.random.key(seed)
    samples = np.asarray(prior.sample(key, cfg.num_samples, method="ddim", steps=cfg.ddim_steps))
    full = np.ones(samples.shape[:2], np.float32)
    sets = {"samples_ddim": (samples, full)}
    if cfg.num_ancestral:
        anc = np.asarray(prior.sample(key, cfg.num_ancestral, method="ancestral"))
        sets["samples_ancestral"] = (anc, np.ones(anc.shape[:2], np.float32))
    # Reference points: other training poses (the floor) and a Gaussian fit (a weak baseline).
    m = min(cfg.num_samples, len(data["train_xy"]) - n_train) if len(data["train_xy"]) > n_train else 0
    rest = np.setdiff1d(np.arange(len(data["train_xy"])), pick)[:m]
    if m >= 2:
        sets["train_poses"] = (
            np.asarray(prior.normalize(data["train_xy"][rest], data["train_vis"][rest])),
            data["train_vis"][rest],
        )
    sets["gaussian_baseline"] = (gaussian_baseline(rng, train_z, cfg.num_samples), full)

    report = {
        "bone_names": list(metrics.BONE_NAMES),
        "heldout": {
            "num_poses": len(held_z),
            "num_with_all_body_bones": int(ok.sum()),
            "bone_ratio": metrics.ratio_stats(ref["ratios"]) if ok.sum() >= 2 else None,
            "nn_distance_to_train_mean": round(float(metrics.nn_distance(held_z, held_v, train_z, train_v).mean()), 4),
        },
        "num_train_reference": int(n_train),
        "ddim_steps": cfg.ddim_steps,
    }
    if ok.sum() >= 2:
        for name, (z, v) in sets.items():
            report[name] = set_stats(z, v, ref, train_z, train_v)
    if cfg.effect_poses:
        n = min(cfg.effect_poses, len(held_z))
        report["sds_effect"] = measure_effect(
            prior, data["heldout_xy"][:n], held_v[:n], train_z, train_v, seed, cfg.effect_steps
        )
    report["report_seconds"] = round(time.perf_counter() - t0, 2)
    (workdir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    samples_png(workdir / SAMPLES_PNG, samples, held_z, held_v)
    return summary(report)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a report (what the job logs)."""
    keys = ("frechet_bone_ratio", "w1_bone_ratio_mean", "nn_distance_to_train_mean")
    out = {
        name: {k: report[name][k] for k in keys if k in report[name]}
        for name in ("samples_ddim", "samples_ancestral", "train_poses", "gaussian_baseline")
        if name in report
    }
    out["heldout_nn_distance_to_train_mean"] = report["heldout"]["nn_distance_to_train_mean"]
    if "sds_effect" in report:
        e = report["sds_effect"]
        out["sds_effect"] = {k: round(e["corrupted"][k], 3) for k in ("bone_ratio_error_drop", "nn_distance_drop")}
        out["sds_effect"]["clean_displacement"] = round(e["clean"]["displacement"], 4)
        out["sds_effect"]["corrupted_displacement"] = round(e["corrupted"]["displacement"], 4)
    return out
