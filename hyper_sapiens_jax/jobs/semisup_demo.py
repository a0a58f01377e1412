"""The semi-supervised demo (``config.job = 'semisup_demo'``): NK-Sapiens against supervised-only.

  python -m hyper_sapiens_jax.main --config configs/semisup_demo.py --workdir W
  python -m hyper_sapiens_jax.main --config configs/semisup_demo.py --workdir W \\
      --config.seeds="(0, 1, 2)" --config.rows="('supervised', 'mean-teacher', 'gated', 'semi-supervised')"

From the foundation (``config.foundation``, converted as configs/demo.py does), per seed:
``seedS/stage0`` is the supervised warm-up on the labelled subset (``config.stage0``), and every row
continues from it for ``config.stage1.num_steps`` steps on the same labels:

  supervised       the labelled data only (a fine-tuning run with stage 1's schedule)
  mean-teacher     + unlabelled images, teacher A (EMA) labels every sample, no gate
  gated            + the hybrid teacher: A where confident and plausible, else B (prior-refined)
  semi-supervised  the full method: gated + L_dev + limb rigidity + normal orthogonality

The prior (``config.prior``) is trained once into ``W/prior`` and shared. ``W/results.json`` is
``{"rows": {row: {"pck@0.05": mean, "ap": mean, "pck@0.2": ..., "g_error": ..., "ci95": {...},
"values": {...}, "seeds": [...]}}, "zero_shot": {...}, "seconds": {...}}`` and ``W/results.md`` the
table (mean ± 95% CI over the seeds, the study's format). Re-running resumes (finished runs are
skipped; a run started with another config is refused, as in the study).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import ml_collections

from hyper_sapiens_jax.jobs import demo, study
from hyper_sapiens_jax.jobs import prior as prior_job

log = logging.getLogger(__name__)
ROWS = {
    "warm-up": "stage 0 only (supervised warm-up)",
    "supervised": "supervised-only on the same labels",
    "mean-teacher": "plain mean teacher (A only, no gate)",
    "gated": "hybrid teacher: A + B with the gate",
    "semi-supervised": "full method (+ L_dev + geometry)",
}


def row_config(stage1: ml_collections.ConfigDict, key: str, prior_dir: Path) -> ml_collections.ConfigDict:
    """Stage 1's config as the named row runs it (see the module docstring)."""
    c = ml_collections.ConfigDict(stage1.to_dict())
    if key == "supervised":
        c.job = "finetune"
        return c
    c.prior_ckpt = c.prior_ckpt or str(prior_dir)
    if key == "mean-teacher":
        c.semisup.teacher = "ema"
    if key in ("mean-teacher", "gated"):
        c.semisup.dev = c.semisup.rigidity = c.semisup.orthogonality = 0.0
    elif key != "semi-supervised":
        raise ValueError(f"config.rows: unknown row {key!r}; known: {sorted(set(ROWS) - {'warm-up'})}")
    return c


def demo_rows(config: ml_collections.ConfigDict, workdir: Path) -> dict[str, study.Row]:
    """The study rows of ``config.rows`` (plus 'warm-up'), each a chain stage0 -> row."""
    stage0 = demo.shared_data(config.stage0, config.get("data"))
    stage1 = demo.shared_data(config.stage1, config.get("data"))
    first = (("stage0", stage0),)
    rows = {"warm-up": study.Row("warm-up", ROWS["warm-up"], first)}
    for key in config.rows:
        if key == "warm-up":  # always there: every row starts from it
            continue
        rows[key] = study.Row(key, ROWS.get(key, key), first + ((key, row_config(stage1, key, workdir / "prior")),))
    return rows


def flat_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A study summary row -> {metric: mean, ..., 'ci95': {metric: ...}, 'values': {...}, 'seeds'}."""
    metrics = [m for m, _, _ in study.METRICS]
    return {
        **{m: summary[m]["mean"] for m in metrics},
        "ci95": {m: summary[m]["ci95"] for m in metrics},
        "values": {m: summary[m]["values"] for m in metrics},
        "seeds": summary["seeds"],
    }


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Train what has not finished, then write results.json / results.md (see the module docstring)."""
    if mode != "train":
        raise ValueError("the semi-supervised demo has no --mode eval; its runs are ordinary workdirs")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    foundation = demo.prepare_foundation(config, workdir, config.stage0.model.image_size)
    rows = demo_rows(config, workdir)
    if any(c.job == "semisup" for row in rows.values() for _, c in row.runs):
        prior_job.run(demo.shared_data(config.prior, config.get("data")), workdir / "prior", mode)
        timings["prior"] = time.perf_counter() - t0
    results: dict[str, dict[int, dict[str, Any]]] = {key: {} for key in rows}
    for seed in config.seeds:
        for key, row in rows.items():
            t0 = time.perf_counter()
            results[key][int(seed)] = study.run_row(
                row, int(seed), workdir / f"seed{seed}", workdir / "prior", foundation
            )
            timings[f"seed{seed}/{key}"] = time.perf_counter() - t0
    out: dict[str, Any] = {}
    stage0 = demo.shared_data(config.stage0, config.get("data"))
    if foundation:
        out["zero_shot"] = demo.evaluate_weights(foundation, stage0)
    summary = study.summarize(results)
    table = study.study_table(rows, summary, out.get("zero_shot"), "val")
    table = table.replace("mean pose (val)", "zero-shot foundation")
    (workdir / "results.md").write_text(table + "\n")
    out = {"rows": {key: {**flat_summary(s), "label": rows[key].label} for key, s in summary.items()}, **out}
    (workdir / "results.json").write_text(json.dumps({**out, "seconds": timings}, indent=1))
    print("\n" + table + "\n")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0
