"""The multi-stage job (``config.job = 'demo'``): prior -> stage 1 -> stage 2 -> stage 3 -> table.

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo

Each part runs in ``WORKDIR/<part>`` with its own config (``config.prior``, ``config.stage1`` ...);
a stage whose ``init_from`` is empty starts from the previous stage's workdir, and ``prior_ckpt``
defaults to ``WORKDIR/prior``. Restarting the command resumes whatever part was interrupted
(finished parts are skipped by their own resume logic). At the end the last evaluation of every
stage, plus a mean-pose baseline, goes to ``results.md`` / ``results.json`` and the console.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from hyper_sapiens_jax.data import builders
from hyper_sapiens_jax.data.codec import encode_udp_heatmaps
from hyper_sapiens_jax.data.pipeline import eval_batches
from hyper_sapiens_jax.evaluation.evaluate import evaluate
from hyper_sapiens_jax.prior import train as prior_train
from hyper_sapiens_jax.training import loop

log = logging.getLogger(__name__)
COLUMNS = ("pck@0.05", "pck@0.2", "ap", "ap50", "g_error")


def stage_list(config: ml_collections.ConfigDict) -> list[int]:
    return [int(s) for s in str(config.stages).split(",") if s.strip()]


def stage_configs(config: ml_collections.ConfigDict, workdir: Path) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name, config) per stage with init_from / prior_ckpt chained through the workdir."""
    out, previous = [], ""
    for stage in stage_list(config):
        name = f"stage{stage}"
        if name not in config:
            raise ValueError(f"config.stages names stage {stage} but config.{name} does not exist")
        sc = ml_collections.ConfigDict(config[name].to_dict())
        sc.init_from = sc.init_from or previous
        sc.prior_ckpt = sc.prior_ckpt or (str(workdir / "prior") if sc.loss.sds > 0 else "")
        out.append((name, sc))
        previous = str(workdir / name)
    return out


def mean_pose_baseline(stage_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Metrics of predicting one fixed pose per crop: the mean ground-truth crop pose of the
    validation split (an optimistic baseline: it uses the split's own statistics)."""
    paths = builders.resolved_paths(stage_config.data)
    val = builders.build_source("val", paths)
    cfg = builders.sample_config(stage_config)
    batches = list(eval_batches(val, cfg, stage_config.eval_batch_size))
    kp = np.concatenate([b["keypoints"][b["valid"] > 0] for b in batches])
    vis = np.concatenate([b["keypoints_visible"][b["valid"] > 0] for b in batches])
    mean = (kp * vis[..., None]).sum(0) / np.maximum(vis.sum(0), 1)[:, None]
    heatmaps, _ = encode_udp_heatmaps(mean, np.ones(len(mean), np.float32), input_wh=cfg.input_wh,
                                      heatmap_wh=cfg.heatmap_wh, sigma=cfg.heatmap_sigma)
    fixed = jnp.asarray(heatmaps)[None]
    return evaluate(lambda b: jnp.broadcast_to(fixed, (b["image"].shape[0],) + fixed.shape[1:]), batches,
                    lambda b: {"image": jnp.asarray(b["image"])}, input_wh=cfg.input_wh,
                    gt_file=paths.get("val_ann"), pck_threshold=stage_config.eval.pck_threshold,
                    pck_norm=stage_config.eval.pck_norm)


def last_eval(workdir: Path) -> dict[str, Any] | None:
    path = workdir / loop.METRICS_FILE
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[-1] if rows else None


def ground_truth_note(g_error_gt: float) -> str:
    """The line under a results table that puts G-Error in scale."""
    return f"\n\nG-Error of the ground truth itself: {g_error_gt:.4f} (a constant prediction scores 0)."


def results_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one line per stage (PCK@0.05, PCK@0.2, AP, AP50, G-Error, step)."""
    lines = ["| run | PCK@0.05 | PCK@0.2 | AP | AP50 | G-Error | step |", "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        cells = [f"{r.get(k, float('nan')):.3f}" if k != "g_error" else f"{r.get(k, float('nan')):.4f}"
                 for k in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('step', '-')} |")
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    stages = stage_configs(config, workdir)
    timings: dict[str, float] = {}
    if mode == "train" and any(sc.loss.sds > 0 and sc.prior_ckpt == str(workdir / "prior") for _, sc in stages):
        t0 = time.perf_counter()
        log.info("=== prior -> %s", workdir / "prior")
        prior_train.run(config.prior, workdir / "prior", mode)
        timings["prior"] = time.perf_counter() - t0
    for name, sc in stages:
        t0 = time.perf_counter()
        log.info("=== %s -> %s (init_from %s)", name, workdir / name, sc.init_from or "random")
        loop.run(sc, workdir / name, mode)
        timings[name] = time.perf_counter() - t0
    rows = [("mean pose (val)", {**mean_pose_baseline(stages[0][1]), "step": "-"})]
    rows += [(name, last_eval(workdir / name) or {}) for name, _ in stages]
    table = results_table(rows)
    gt_g = rows[-1][1].get("g_error_gt")
    if gt_g is not None:
        table += ground_truth_note(gt_g)
    (workdir / "results.md").write_text(table + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": dict(rows), "seconds": timings}, indent=1))
    print("\n" + table + "\n")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0
