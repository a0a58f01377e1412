"""The multi-stage job (``config.job = 'demo'``): prior -> stage 1 -> stage 2 -> stage 3 -> table.

  python -m hyper_sapiens_jax.main --config configs/demo.py --workdir /tmp/demo

Each part runs in ``WORKDIR/<part>`` with its own config (``config.prior``, ``config.stage1`` ...).
``config.data`` is shared: every field of it (except each stage's own ``mix``) is copied into every
stage and the prior, so ``--config.data.source=files --config.data.syrip_real_ann=...`` runs the
whole curriculum on your files. ``config.foundation`` names Sapiens-layout checkpoint files (the
testbed foundation that ships with the package, by default): they are converted with
``convert_weights.torch_to_flax`` into ``WORKDIR/foundation``, scored as the zero-shot row, and
stage 1 starts from them. A stage whose ``init_from`` is empty starts from the previous part, and
``prior_ckpt`` defaults to ``WORKDIR/prior``. Restarting the command resumes whatever part was
interrupted (finished parts are skipped by their own resume logic). At the end the zero-shot row,
a mean-pose baseline and the last evaluation of every stage go to ``results.md`` /
``results.json`` and the console.
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

from convert_weights.torch_to_flax import convert
from hyper_sapiens_jax.data.codec import encode_udp_heatmaps
from hyper_sapiens_jax.data.pipeline import eval_batches
from hyper_sapiens_jax.evaluation.evaluate import evaluate
from hyper_sapiens_jax.inference import load_predictor
from hyper_sapiens_jax.jobs import finetune, inputs
from hyper_sapiens_jax.jobs import prior as prior_job
from hyper_sapiens_jax.models.weights import save_weights
from hyper_sapiens_jax.training.trainer import METRICS_FILE

log = logging.getLogger(__name__)
COLUMNS = ("pck@0.05", "pck@0.2", "ap", "ap50", "g_error")


def stage_list(config: ml_collections.ConfigDict) -> list[int]:
    """The stage numbers ``config.stages`` names (a tuple, e.g. (1, 2, 3)), in order."""
    if isinstance(config.stages, str) or not all(isinstance(s, int) for s in config.stages):
        raise ValueError(f"config.stages={config.stages!r} must be a tuple of stage numbers, e.g. (1, 2, 3)")
    return list(config.stages)


def shared_data(part: ml_collections.ConfigDict, data: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
    """A copy of ``part`` whose ``data`` fields take the demo-level ``data`` values (``mix`` stays
    the part's own, fields the part does not have are not added)."""
    out = ml_collections.ConfigDict(part.to_dict())
    if data is None:
        return out
    for key, value in data.items():
        if key != "mix" and key in out.data:
            out.data[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return out


def stage_configs(
    config: ml_collections.ConfigDict, workdir: Path, first_init: str = ""
) -> list[tuple[str, ml_collections.ConfigDict]]:
    """(name, config) per stage with ``config.data`` shared and init_from / prior_ckpt chained through
    the workdir; the first stage starts from ``first_init`` (the foundation) unless it sets its own."""
    out, previous = [], first_init
    for stage in stage_list(config):
        name = f"stage{stage}"
        if name not in config:
            raise ValueError(f"config.stages names stage {stage} but config.{name} does not exist")
        sc = shared_data(config[name], config.get("data"))
        sc.init_from = sc.init_from or previous
        sc.prior_ckpt = sc.prior_ckpt or (str(workdir / "prior") if sc.loss.sds > 0 else "")
        out.append((name, sc))
        previous = str(workdir / name)
    return out


def _validation(stage_config: ml_collections.ConfigDict):
    """(resolved paths, sample settings, the validation batches, streamed) of a stage config."""
    paths = inputs.resolved_paths(stage_config.data)
    cfg = inputs.sample_config(stage_config)
    return paths, cfg, eval_batches(inputs.build_source("val", paths), cfg, stage_config.eval_batch_size)


def _score(heatmap_fn, to_global, stage_config: ml_collections.ConfigDict, paths, cfg, batches) -> dict[str, Any]:
    """``evaluation.evaluate`` with a stage config's evaluation settings (PCK, DARK kernel, sigma)."""
    return evaluate(
        heatmap_fn,
        batches,
        to_global,
        input_wh=cfg.input_wh,
        gt_file=paths.get("val_ann"),
        pck_threshold=stage_config.eval.pck_threshold,
        pck_norm=stage_config.eval.pck_norm,
        blur_kernel_size=stage_config.eval.get("blur_kernel") or None,
        sigma=cfg.heatmap_sigma,
    )


def mean_pose_baseline(stage_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Metrics of predicting one fixed pose per crop: the mean ground-truth crop pose of the
    validation split (an optimistic baseline: it uses the split's own statistics)."""
    paths, cfg, batches = _validation(stage_config)
    batches = list(batches)  # read twice: the mean pose, then its score
    kp = np.concatenate([b["keypoints"][b["valid"] > 0] for b in batches])
    vis = np.concatenate([b["keypoints_visible"][b["valid"] > 0] for b in batches])
    mean = (kp * vis[..., None]).sum(0) / np.maximum(vis.sum(0), 1)[:, None]
    heatmaps, _ = encode_udp_heatmaps(
        mean, np.ones(len(mean), np.float32), input_wh=cfg.input_wh, heatmap_wh=cfg.heatmap_wh, sigma=cfg.heatmap_sigma
    )
    fixed = jnp.asarray(heatmaps)[None]
    return _score(
        lambda b: jnp.broadcast_to(fixed, (b["image"].shape[0],) + fixed.shape[1:]),
        lambda b: {"image": jnp.asarray(b["image"])},
        stage_config,
        paths,
        cfg,
        batches,
    )


FOUNDATION_ROLES = ("pose", "depth", "normal")


def prepare_foundation(config: ml_collections.ConfigDict, workdir: Path, image_size) -> str:
    """Convert ``config.foundation``'s Sapiens-layout files (as a user converts real Sapiens files)
    into ``WORKDIR/foundation`` at ``image_size``; returns that directory ('' when none is set)."""
    f = config.get("foundation")
    if f is None or not f.get("dir"):
        return ""
    out = workdir / "foundation"
    files = {role: Path(f.dir) / f[role] for role in FOUNDATION_ROLES if f.get(role)}
    try:  # converted before from the same files at the same size: reuse
        done = json.loads((out / "conversion.json").read_text())
        same = done.get("files") == {r: str(p) for r, p in files.items()} and done.get("image_size") == list(image_size)
        if same and (out / "model_config.json").is_file():
            return str(out)
    except (OSError, json.JSONDecodeError):
        pass
    mcfg, params, info = convert(files, tuple(image_size), order=list(files))
    save_weights(out, mcfg, params, {**info, "image_size": list(image_size)}, overwrite=True)
    log.info("foundation: %s -> %s", ", ".join(str(p) for p in files.values()), out)
    return str(out)


def evaluate_weights(weights_dir: str | Path, stage_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Score a weights directory (or workdir) on ``stage_config``'s validation split, as a stage's
    evaluation does (flip test, DARK-UDP, PCK / OKS AP / G-Error)."""
    predictor = load_predictor(weights_dir, flip_test=stage_config.eval.flip_test)
    paths, cfg, batches = _validation(stage_config)
    return _score(
        lambda b: jnp.asarray(predictor.forward(np.asarray(b["image"]))["pose"]),
        lambda b: {"image": b["image"]},
        stage_config,
        paths,
        cfg,
        batches,
    )


def last_eval(workdir: Path) -> dict[str, Any] | None:
    path = workdir / METRICS_FILE
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
        cells = [
            f"{r.get(k, float('nan')):.3f}" if k != "g_error" else f"{r.get(k, float('nan')):.4f}" for k in COLUMNS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r.get('step', '-')} |")
    return "\n".join(lines)


def orientation_table(rows: list[tuple[str, dict[str, Any]]], threshold: float = 0.2) -> str:
    """Markdown: PCK@threshold per range of body orientation (``metrics.pck_by_orientation``) for the
    rows that have it; empty when none does."""
    key = f"pck@{threshold:g}"
    have = [(name, r["pck_by_orientation"]) for name, r in rows if key in r.get("pck_by_orientation", {})]
    if not have:
        return ""
    bins, samples = have[0][1]["bins"], have[0][1]["samples"]
    head = " | ".join(f"{b}° ({n})" for b, n in zip(bins, samples))
    lines = [
        f"PCK@{threshold:g} by body orientation (degrees of the trunk from head-up; samples):",
        "",
        f"| run | {head} |",
        "|---|" + "---|" * len(bins),
    ]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in o[key]) + " |" for name, o in have]
    return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    first = config[f"stage{stage_list(config)[0]}"]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    foundation = prepare_foundation(config, workdir, first.model.image_size)
    stages = stage_configs(config, workdir, foundation)
    split = inputs.eval_split_name(stages[0][1].data)
    rows = [(f"mean pose ({split})", {**mean_pose_baseline(stages[0][1]), "step": "-"})]
    if foundation:
        rows.append(("zero-shot (foundation)", {**evaluate_weights(foundation, stages[0][1]), "step": 0}))
        timings["foundation"] = time.perf_counter() - t0
        log.info("zero-shot: %s", {k: rows[-1][1][k] for k in COLUMNS})
    if mode == "train" and any(sc.loss.sds > 0 and sc.prior_ckpt == str(workdir / "prior") for _, sc in stages):
        t0 = time.perf_counter()
        log.info("=== prior -> %s", workdir / "prior")
        prior_job.run(shared_data(config.prior, config.get("data")), workdir / "prior", mode)
        timings["prior"] = time.perf_counter() - t0
    for name, sc in stages:
        t0 = time.perf_counter()
        log.info("=== %s -> %s (init_from %s)", name, workdir / name, sc.init_from or "random")
        finetune.run(sc, workdir / name, mode)
        timings[name] = time.perf_counter() - t0
    rows += [(name, last_eval(workdir / name) or {}) for name, _ in stages]
    table = results_table(rows)
    gt_g = rows[-1][1].get("g_error_gt")
    if gt_g is not None:
        table += ground_truth_note(gt_g)
    if orient := orientation_table(rows):
        table += "\n\n" + orient
    (workdir / "results.md").write_text(table + "\n")
    (workdir / "results.json").write_text(json.dumps({"rows": dict(rows), "seconds": timings}, indent=1))
    print("\n" + table + "\n")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0
