r"""The sim-to-real ablation study (``config.job = 'study'``): what each part of the method buys, over seeds.

  python -m hyper_sapiens_jax.main --config configs/study.py --workdir /tmp/study
  python -m hyper_sapiens_jax.main --config configs/study.py --workdir /tmp/study_long \
      --config.study.seeds=0,1,2 --config.study.rows=a,c,e,f --config.stage1.num_steps=1000

``config.study``: ``seeds`` and ``rows`` (comma-separated), ``merge`` (comma-separated study.json
files; see below). The rest is the demo config (configs/demo.py).

Rows (every one evaluated on the held-out "real" split, ``config.stage1.data``'s val split):
  z  zero-shot: the foundation (``config.foundation``) before any infant data (no training, one value)
  a  stage 1 only: synthetic data (SyRIP synthetic + MINI-RGBD), no prior, no geometry
  b  a, then fine-tune on real only (SyRIP real)
  c  a, then plain mixed fine-tune (stage 2's 1:1 synthetic/real mix) without prior or geometry
  d  c + the geometry losses (depth-normal consistency, bone ratios)
  e  d + the diffusion prior (SDS): stage 2's full objective
  f  the full three-stage method: a, then stage 2, then stage 3 (80/20 real/synthetic, prior annealed)
  s  f from scratch: the same preset and three stages from random weights instead of the foundation

Rows a-f start from the foundation; every row of a seed starts from the same stage-1 model (the
stage-1 config with ``seed=SEED``), which is row a's result. Rows b-e then train for as many steps
as f spends in stages 2 and 3 together, with stage 2's schedule (learning rate, trainable blocks,
progressive unfreezing at the same fraction), so rows differ only in data and loss. The diffusion
prior is trained once (``config.prior``, its own seed) and shared by all rows and seeds: it is
frozen, not one of the things compared.

The workdir gets ``prior/``, ``foundation/``, ``seedS/stage1``, ``seedS/{b,c,d,e}``, ``seedS/f/stage{2,3}``,
``seedS/scratch/stage{1,2,3}`` (ordinary training workdirs: ``predict``/``flax_to_torch`` take them),
``study.md`` (table: mean ± the half-width of a 95% confidence interval, Student's t over the
seeds), ``study.json`` (per-seed values, std and CI) and ``study.png`` (bars with CI error bars and
per-seed dots). ``study.merge=A/study.json,B/study.json`` adds the seeds of the same study run
elsewhere (files made with other settings are refused), so the seeds can be spread over machines
or sessions: ``--config.study.seeds=2,3 --config.study.merge=A/study.json``.
Re-running the command resumes: finished runs are skipped (their final evaluation is read back), an
interrupted one resumes from its checkpoint, and the report is written again at the end; a run whose
saved config differs from the one asked for (other overrides) is refused, naming the
fields: use a new workdir for a variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import textwrap
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax import traverse_util
from matplotlib.figure import Figure
from scipy import stats

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.config import config_to_dict
from hyper_sapiens_jax.jobs import code_revision, demo, finetune, inputs, run_locked, semisup
from hyper_sapiens_jax.jobs import prior as prior_job
from hyper_sapiens_jax.logs import progress

# The jobs a study row's runs may be (config.job): the curriculum's stages and NK-Sapiens' stages.
STAGE_JOBS = {"finetune": finetune.run, "semisup": semisup.run}

log = logging.getLogger(__name__)

# (key in the runs' metrics.jsonl rows, column title, format)
METRICS = (
    ("pck@0.05", "PCK@0.05", ".3f"),
    ("ap", "AP", ".3f"),
    ("pck@0.2", "PCK@0.2", ".3f"),
    ("g_error", "G-Error", ".4f"),
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the study: a chain of training runs; the last run's final evaluation is the result.
    ``runs``: (workdir relative to the seed's directory, config) in order; each run starts from the
    previous one's EMA weights, the first from the foundation (``from_scratch``: random weights).
    A row with no runs is the foundation itself, scored zero-shot."""

    key: str
    label: str
    runs: tuple[tuple[str, ml_collections.ConfigDict], ...]
    from_scratch: bool = False


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def finetune_config(
    config: ml_collections.ConfigDict, mix: dict[str, int], geometry: bool, prior: bool
) -> ml_collections.ConfigDict:
    """Stage 2's config stretched over stages 2 + 3's steps, with ``mix`` as the data and the geometry
    terms / SDS prior switched on or off (on: stage 2's weights)."""
    s2, s3 = config.stage2, config.stage3
    c = _copy(s2)
    steps = s2.num_steps + s3.num_steps
    c.num_steps = steps
    if s2.eval.every >= s2.num_steps:
        c.eval.every = steps
    if s2.checkpoint.every >= s2.num_steps:
        c.checkpoint.every = steps
    c.data.mix = ml_collections.ConfigDict(mix)
    c.loss.depth_normal = s2.loss.depth_normal if geometry else 0.0
    c.loss.bone_ratio = s2.loss.bone_ratio if geometry else 0.0
    c.loss.sds = s2.loss.sds if prior else 0.0
    c.loss.sds_final = -1.0  # constant: no annealing (that is stage 3's)
    return c


def study_rows(config: ml_collections.ConfigDict) -> dict[str, Row]:
    """The rows z, a-f and s (see the module docstring) built from the demo config's stage configs
    (with ``config.data`` shared by every stage, as the demo does)."""
    config = _copy(config)
    for name in ("stage1", "stage2", "stage3"):
        config[name] = demo.shared_data(config[name], config.get("data"))
    s1 = config.stage1
    real = {name: w for name, w in config.stage2.data.mix.items() if name.endswith("_real")}
    if not real:
        raise ValueError(f"config.stage2.data.mix {dict(config.stage2.data.mix)} has no real source (*_real)")
    mixed = dict(config.stage2.data.mix)
    first = (("stage1", s1),)

    def tuned(key: str, label: str, mix: dict[str, int], geometry: bool, prior: bool) -> Row:
        return Row(key, label, first + ((key, finetune_config(config, mix, geometry, prior)),))

    full = first + (("f/stage2", _copy(config.stage2)), ("f/stage3", _copy(config.stage3)))
    return {
        r.key: r
        for r in (
            Row("z", "zero-shot foundation", ()),
            Row("a", "stage 1 only (synthetic)", first),
            tuned("b", "fine-tune on real only", real, geometry=False, prior=False),
            tuned("c", "mixed fine-tune, no prior / geometry", mixed, geometry=False, prior=False),
            tuned("d", "mixed + geometry", mixed, geometry=True, prior=False),
            tuned("e", "mixed + geometry + prior (SDS)", mixed, geometry=True, prior=True),
            Row("f", "full three-stage method", full),
            Row(
                "s",
                "same preset from scratch (f without the foundation)",
                tuple((f"scratch/{rel.split('/')[-1]}", c) for rel, c in full),
                from_scratch=True,
            ),
        )
    }


def finished(workdir: Path, num_steps: int) -> dict[str, Any] | None:
    """The final evaluation row of a run that reached ``num_steps``, else None."""
    last = demo.last_eval(workdir)
    return last if last is not None and last.get("step") == num_steps else None


def check_same_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Refuse to reuse (skip or resume) a run in ``workdir`` that was started with another config:
    a re-run with different overrides into the same workdir would otherwise mix old results in."""
    path = workdir / "config.json"
    if not path.is_file():
        return
    saved, wanted = (_flat_settings(d) for d in (json.loads(path.read_text()), config_to_dict(config)))
    differ = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in differ[:5])
        raise ValueError(
            f"{workdir} was trained with a different config ({shown}"
            f"{', ...' if len(differ) > 5 else ''}); use another workdir or delete that run"
        )


def run_row(row: Row, seed: int, seed_dir: Path, prior_dir: Path, foundation: str) -> dict[str, Any]:
    """Trains whatever of the row's chain has not finished; returns the final evaluation row."""
    previous = "" if row.from_scratch else foundation
    for rel, base in row.runs:
        workdir = seed_dir / rel
        c = _copy(base)
        c.seed = seed
        c.init_from = previous if (rel != "stage1" or not c.init_from) else c.init_from
        c.prior_ckpt = c.prior_ckpt or (str(prior_dir) if c.loss.sds > 0 else "")
        check_same_config(workdir, c)
        result = finished(workdir, c.num_steps)
        if result is None:
            log.info("=== row %s, seed %d: %s (init_from %s)", row.key, seed, workdir, c.init_from or "random")
            if c.job not in STAGE_JOBS:
                raise ValueError(f"{workdir}: config.job={c.job!r} is not one of {sorted(STAGE_JOBS)}")
            run_locked(STAGE_JOBS[c.job], c, workdir, "train")
            result = finished(workdir, c.num_steps)
            if result is None:
                raise InterruptedError(f"{workdir} stopped before step {c.num_steps}; re-run the study to resume")
        previous = str(workdir)
    return result


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% confidence interval of the mean of ``values`` (Student's t; 0 for one)."""
    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def summarize(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per row and metric: mean, sample std (ddof=1; 0 for one seed), the 95% CI half-width and the
    per-seed values."""
    out = {}
    for key, per_seed in results.items():
        seeds = sorted(per_seed)
        out[key] = {"seeds": seeds}
        for metric, _, _ in METRICS:
            values = np.array([per_seed[s].get(metric, np.nan) for s in seeds], np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            out[key][metric] = {
                "mean": float(values.mean()),
                "std": std,
                "ci95": ci95(values),
                "values": values.tolist(),
            }
    return out


def study_table(
    rows: dict[str, Row], summary: dict[str, dict[str, Any]], baseline: dict[str, Any] | None, split: str = "val"
) -> str:
    """Markdown: one line per row, each metric as mean ± 95% CI half-width over the seeds (scored on
    ``split``: 'val', or 'tuning' for a held-out tuning split)."""
    head = "| row | run | " + " | ".join(title for _, title, _ in METRICS) + " | seeds |"
    lines = [head, "|" + "---|" * (len(METRICS) + 3)]
    if baseline is not None:
        lines.append(
            f"| - | mean pose ({split}) | "
            + " | ".join(f"{baseline.get(m, float('nan')):{fmt}}" for m, _, fmt in METRICS)
            + " | - |"
        )
    for key, s in summary.items():
        lines.append(f"| {key} | {rows[key].label} | {summary_cells(s)} | {len(s['seeds'])} |")
    return "\n".join(lines)


def summary_cells(s: dict[str, Any]) -> str:
    """One summary's METRICS as markdown cells: the mean, ± the 95% CI half-width over >1 seeds."""
    return " | ".join(
        f"{s[m]['mean']:{fmt}}" + (f" ± {s[m]['ci95']:{fmt}}" if len(s["seeds"]) > 1 else "") for m, _, fmt in METRICS
    )


def study_plot(
    rows: dict[str, Row],
    summary: dict[str, dict[str, Any]],
    path: Path,
    references: dict[str, tuple[float, str]] | None = None,
) -> None:
    """One bar chart per metric: mean with 95% CI error bars, one dot per seed, and a dashed
    reference line per metric where ``references`` has one ((value, label): the mean pose for
    PCK / AP, the ground truth's own G-Error)."""
    keys = list(summary)
    shown = METRICS
    cols = 2
    nrows = -(-len(shown) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * nrows + 0.6), layout="constrained")  # no pyplot: no GUI backend
    axes = fig.subplots(nrows, cols, squeeze=False)
    x = np.arange(len(keys))
    for ax, (metric, title, _) in zip(np.ravel(axes), shown):
        means = [summary[k][metric]["mean"] for k in keys]
        cis = [summary[k][metric]["ci95"] for k in keys]
        ax.bar(x, means, yerr=cis, capsize=4, color="#4c72b0", alpha=0.8)
        for i, k in enumerate(keys):
            values = summary[k][metric]["values"]
            ax.scatter(
                np.full(len(values), x[i]) + np.linspace(-0.15, 0.15, len(values)),
                values,
                s=12,
                color="black",
                zorder=3,
            )
        if references and metric in references:
            value, label = references[metric]
            ax.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
            ax.legend(loc="best", fontsize=8)
        ax.set_xticks(x, keys)
        ax.set_title(title)
        ax.set_xlabel("row")
    fig.suptitle(
        "Ablation on the held-out real split (mean ± 95% CI over seeds; dots: seeds)\n"
        + "\n".join(textwrap.wrap("; ".join(f"{k}: {rows[k].label}" for k in keys), 75 * cols)),
        fontsize=7,
    )
    fig.savefig(path, dpi=120)


def train_rows(
    config: ml_collections.ConfigDict, rows: dict[str, Row], seeds: list[int], out: Path
) -> dict[str, dict[int, dict[str, Any]]]:
    """Trains (or finds finished) every row for every seed; returns row -> seed -> final eval row."""
    prior_dir = out / "prior"
    if any(c.loss.sds > 0 and not c.prior_ckpt for r in rows.values() for _, c in r.runs):
        prior_job.run(demo.shared_data(config.prior, config.get("data")), prior_dir, "train")
    stage1 = demo.shared_data(config.stage1, config.get("data"))
    foundation = demo.prepare_foundation(config, out, stage1.model.image_size)
    if "z" in rows and not foundation:
        raise ValueError("row z (zero-shot) needs config.foundation.dir")
    results: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in rows}
    if "z" in rows:
        results["z"][0] = demo.evaluate_weights(foundation, stage1)
    todo = [(seed, key) for seed in seeds for key in rows if key != "z"]
    for seed, key in progress(todo, "study runs", len(todo), unit="row"):
        results[key][seed] = run_row(rows[key], seed, out / f"seed{seed}", prior_dir, foundation)
        log.info("row %s seed %d: %s", key, seed, {m: results[key][seed].get(m) for m, _, _ in METRICS})
    return results


def write_report(
    config: ml_collections.ConfigDict, rows: dict[str, Row], results: dict[str, dict[int, dict[str, Any]]], out: Path
) -> str:
    """study.md (returned), study.json and study.png from the per-seed results, with the mean-pose
    baseline of the validation split and the ground truth's own G-Error as references."""
    summary = summarize(results)
    stage1 = demo.shared_data(config.stage1, config.get("data"))
    baseline = demo.mean_pose_baseline(stage1)
    table = study_table(rows, summary, baseline, inputs.eval_split_name(stage1.data))
    references = {m: (baseline[m], "mean pose") for m, _, _ in METRICS if m != "g_error" and m in baseline}
    gt_g = next((r["g_error_gt"] for per in results.values() for r in per.values() if "g_error_gt" in r), None)
    if gt_g is not None:
        references["g_error"] = (gt_g, "ground truth")
        table += demo.ground_truth_note(gt_g)
    (out / "study.md").write_text(table + "\n")
    (out / "study.json").write_text(
        json.dumps(
            {
                "rows": {
                    k: {"label": rows[k].label, "runs": [rel for rel, _ in rows[k].runs], **summary[k]} for k in rows
                },
                "mean_pose": {m: baseline.get(m) for m, _, _ in METRICS},
                "g_error_gt": gt_g,
                "config": config_to_dict(config),
                "code": code_revision(),
            },
            indent=1,
        )
    )
    study_plot(rows, summary, out / "study.png", references)
    return table


def _flat_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict as {'a.b.c': value}, tuples as lists (as they come back from JSON)."""
    as_json = lambda v: [as_json(x) for x in v] if isinstance(v, (list, tuple)) else v
    return {k: as_json(v) for k, v in traverse_util.flatten_dict(config, sep=".").items()}


def _differing_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Flattened config keys whose values differ, paths aside (another checkout or workdir moves them),
    and the study's own settings aside (which job ran it, its seeds, rows and merged files do not move
    a row's numbers). A key only one side has differs."""
    own = lambda k: k == "job" or k.startswith("study.")
    a, b = ({k: v for k, v in _flat_settings(d).items() if not own(k)} for d in (saved, wanted))
    is_path = lambda v: isinstance(v, str) and "/" in v
    return sorted(
        k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not (is_path(a.get(k)) and is_path(b.get(k)))
    )


def merge_results(
    results: dict[str, dict[int, dict[str, Any]]], files: list[str | Path], config: ml_collections.ConfigDict
) -> dict[str, dict[int, dict[str, Any]]]:
    """Add the per-seed values of earlier ``study.json`` files (other machines or sessions, the same
    study) to ``results`` (row -> seed -> metrics). A file made with other settings, or a seed whose
    values disagree with the ones in hand, is refused, naming the file; one from another code revision
    is merged with a warning. Returns the merged results (rows of ``results`` only)."""
    merged = {k: dict(v) for k, v in results.items()}
    wanted = config_to_dict(config)
    for path in map(Path, files):
        try:
            saved = json.loads(path.read_text())
            saved_rows = saved["rows"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"study.merge {path}: not a study.json ({e})") from None
        if "config" not in saved:
            raise ValueError(f"study.merge {path}: holds no config (written before merging existed); re-run its report")
        differ = _differing_settings(saved["config"], wanted)
        if differ:
            raise ValueError(
                f"study.merge {path}: made with other settings ({', '.join(differ[:5])}); not the same study"
            )
        if saved.get("code") != code_revision():
            log.warning(
                "config.study.merge: %s: made at code revision %s (this is %s)",
                path,
                saved.get("code"),
                code_revision(),
            )
        for key, row in saved_rows.items():
            if key not in merged:
                continue
            for i, seed in enumerate(row["seeds"]):
                values = {m: row[m]["values"][i] for m, _, _ in METRICS if m in row}
                have = merged[key].get(seed)
                if have is not None and any(
                    not np.isclose(have.get(m, np.nan), v, equal_nan=True) for m, v in values.items()
                ):
                    raise ValueError(f"study.merge {path}: row {key} seed {seed} disagrees with the runs in hand")
                merged[key].setdefault(seed, values)
    return merged


def comma_list(text: str, kind: type = str, field: str = "config.study") -> list[Any]:
    """'0,1,2' -> [0, 1, 2] (``kind`` each, the command line's ``cli.comma_list``); a ValueError naming
    ``field`` for a bad item."""
    try:
        return cli.comma_list(kind)(str(text))
    except argparse.ArgumentTypeError:
        raise ValueError(f"{field}={text!r} is not a comma-separated list of {kind.__name__}") from None


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Runs the rows ``config.study.rows`` for every seed of ``config.study.seeds`` (resuming), adds
    the seeds of the ``config.study.merge`` study.json files, then writes study.md / .json / .png."""
    if mode != "train":
        raise ValueError("the study has no --mode eval: re-running it resumes and writes the report again")
    seeds = comma_list(config.study.seeds, int, "config.study.seeds")
    keys = comma_list(config.study.rows, str, "config.study.rows")
    merge = comma_list(config.study.merge, str, "config.study.merge")
    out = Path(workdir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    rows = study_rows(config)
    unknown = [k for k in keys if k not in rows]
    if unknown:
        raise ValueError(f"config.study.rows: unknown rows {unknown}; choose from {sorted(rows)}")
    rows = {k: rows[k] for k in keys}
    t0 = time.perf_counter()
    results = merge_results(train_rows(config, rows, seeds, out), merge, config)
    table = write_report(config, rows, results, out)
    print("\n" + table + "\n")
    print(f"wrote {out / 'study.md'}, {out / 'study.json'}, {out / 'study.png'} ({time.perf_counter() - t0:.0f} s)")
    return 0
