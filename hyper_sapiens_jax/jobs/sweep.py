r"""A sweep (``config.job = 'sweep'``) of the prior weight alpha (SDS) and the geometry weight beta, on a
tuning split.

  python -m hyper_sapiens_jax.main --config configs/sweep.py --workdir /tmp/sweep \
      --config.data.tuning_images=50 --config.sweep.alphas=0,0.01,0.03 --config.sweep.betas=0,0.1,0.3 \
      --config.sweep.seeds=0

Every point of the grid is the full three-stage method (the study's row f: stage 1, then stage 2,
then stage 3) with stage 2's and stage 3's ``loss.sds`` = alpha (stage 3 still anneals it to
``sds_final``) and ``loss.depth_normal`` = ``loss.bone_ratio`` = beta; the rest is the demo config.
Stage 1 has no prior and no geometry, so one stage-1 run per seed serves every point. The scores
are on the tuning split (``config.data.tuning_images`` real *training* images held out, see
``data/tuning.py``), never on the validation split: the sweep refuses to run without one. The
chosen point is the best by mean tuning PCK@0.05 (ties: AP); measure it on validation afterwards
(the study, or the demo with ``--config.stage2.loss.sds=...``).

The workdir gets ``prior/``, ``foundation/``, ``seedS/stage1``, ``seedS/a{alpha}_b{beta}/stage{2,3}``,
``sweep.md`` and ``sweep.json``. Re-running resumes, as the study does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ml_collections

from hyper_sapiens_jax.jobs import study


def point_row(config: ml_collections.ConfigDict, alpha: float, beta: float) -> study.Row:
    """Row f of the study with alpha and beta set in stages 2 and 3."""
    f = study.study_rows(config)["f"]
    name = f"a{alpha:g}_b{beta:g}"
    runs = []
    for rel, c in f.runs:
        c = ml_collections.ConfigDict(c.to_dict())
        if rel != "stage1":
            c.loss.sds = alpha
            c.loss.depth_normal = c.loss.bone_ratio = beta
            rel = f"{name}/{rel.split('/')[-1]}"
        runs.append((rel, c))
    return study.Row(name, f"alpha {alpha:g}, beta {beta:g}", tuple(runs))


def sweep_table(points: dict[tuple[float, float], dict[str, Any]]) -> str:
    """Markdown: one line per (alpha, beta) point, each metric as mean ± 95% CI over the seeds."""
    head = "| alpha (SDS) | beta (geometry) | " + " | ".join(t for _, t, _ in study.METRICS) + " | seeds |"
    lines = [head, "|" + "---|" * (len(study.METRICS) + 3)]
    for (alpha, beta), s in points.items():
        lines.append(f"| {alpha:g} | {beta:g} | {study.summary_cells(s)} | {len(s['seeds'])} |")
    return "\n".join(lines)


def best_point(points: dict[tuple[float, float], dict[str, Any]]) -> tuple[float, float]:
    """The point with the highest mean tuning PCK@0.05, then AP."""
    return max(points, key=lambda p: (points[p]["pck@0.05"]["mean"], points[p]["ap"]["mean"]))


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Trains every (alpha, beta, seed) of ``config.sweep`` (resuming), writes sweep.md / sweep.json;
    returns 0."""
    if mode != "train":
        raise ValueError("the sweep has no --mode eval: re-running it resumes and writes the report again")
    alphas = study.comma_list(config.sweep.alphas, float, "config.sweep.alphas")
    betas = study.comma_list(config.sweep.betas, float, "config.sweep.betas")
    seeds = study.comma_list(config.sweep.seeds, int, "config.sweep.seeds")
    if int(config.data.get("tuning_images", 0) or 0) <= 0:
        raise ValueError(
            "the sweep scores on a tuning split carved from the real training images: set "
            "--config.data.tuning_images=N (e.g. 50), never tune on the validation split"
        )
    out = Path(workdir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = {(a, b): point_row(config, a, b) for a in alphas for b in betas}
    results = study.train_rows(config, {row.key: row for row in rows.values()}, seeds, out)
    summary = study.summarize(results)
    points = {p: summary[row.key] for p, row in rows.items()}
    alpha, beta = best_point(points)
    table = sweep_table(points) + (
        f"\n\nOn {config.data.tuning_images} held-out real training images "
        f"(tuning split). Chosen: alpha {alpha:g}, beta {beta:g}."
    )
    (out / "sweep.md").write_text(table + "\n")
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "tuning_images": int(config.data.tuning_images),
                "chosen": {"alpha": alpha, "beta": beta},
                "points": [{"alpha": a, "beta": b, **points[(a, b)]} for a, b in points],
            },
            indent=1,
        )
    )
    print("\n" + table + "\n")
    print(f"wrote {out / 'sweep.md'}, {out / 'sweep.json'} ({time.perf_counter() - t0:.0f} s)")
    return 0
