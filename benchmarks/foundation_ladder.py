r"""The foundation ladder: short runs of the testbed foundation's levers, side by side in one table.

  python benchmarks/foundation_ladder.py --workdir W [--rows base,sigma1,...] [--out benchmarks/results]

Each row is a short version of ``configs/foundation.py``'s pose part, with one or more levers moved
(``ROWS``): the human corpus's size and views, the input size, the heatmap sigma, the learning rate,
the number of pose steps. Every row starts from the same MAE backbone (``--pretrain``, by default
the shipped ``sapiens_cpu_humans_pretrain_clean.safetensors``) unless the row names its own, and
measures:

  * the step time (median of the pose run's logged intervals, on this machine as it was);
  * in-domain PCK@0.05 and OKS AP on the human corpus's held-out split (flip test, DARK-UDP);
  * zero-shot PCK@0.05 on the infant *tuning* split (``data.tuning_images`` real training images
    held out, never the validation split);
  * fine-tuned PCK@0.05 on that tuning split after a short fine-tune (``FINETUNE``: every block,
    pose only, real 2 : synthetic 1 : MINI-RGBD 1).

Rows already measured are read back from ``W/ladder.json`` and not run again, and an interrupted row
resumes from its checkpoints, so the ladder can run in the background over several sittings (from a
frozen checkout: ``git worktree add``). ``--out`` writes ``foundation_ladder.{md,json}``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyper_sapiens_jax.config import config_to_dict, load_config_file  # noqa: E402
from hyper_sapiens_jax.jobs import demo, finetune  # noqa: E402
from hyper_sapiens_jax.jobs.foundation import task_config  # noqa: E402
from hyper_sapiens_jax.jobs.inputs import corpus_paths  # noqa: E402
from hyper_sapiens_jax.testbed.shipped import FOUNDATION_DIR, PRETRAIN_FILE  # noqa: E402
from hyper_sapiens_jax.training.trainer import METRICS_FILE, TRAIN_LOG_FILE  # noqa: E402

log = logging.getLogger("ladder")

# The ladder's common settings: a smaller corpus and shorter runs than the foundation's (the smoke
# test shrinks them with --corpus-images, --humans-val, --pose-steps and --finetune-steps).
SCALE = dict(corpus_images=6000, humans_val=300, pose_steps=1500, finetune_steps=300)
TUNING_IMAGES = 50
# The fine-tune that scores a row on infants: every block, pose only (the recipe the first probes used).
FINETUNE = dict(lr=2e-3, mix={"syrip_real": 2, "syrip_syn": 1, "mini_rgbd": 1})

# name -> (what it moves, dotted overrides of configs/foundation.py applied to the pose run and corpus).
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("today's foundation recipe, shortened", {}),
    "sigma1": ("heatmap sigma 1 (from 2)", {"data.heatmap_sigma": 1.0}),
    "person": ("corpus framed on one person (people fill the frame)", {"data.humans.framing": "person"}),
    "views": (
        "framed on one person + any roll, 20% from above, 40% lying",
        {
            "data.humans.framing": "person",
            "data.humans.roll_deg": 180.0,
            "data.humans.top_down": 0.2,
            "data.humans.lying_share": 0.4,
            "data.aug.rotate_factor": 180.0,
        },
    ),
    "input192": ("input 192x144 (from 128x96): 2.25x the tokens per person", {"model.image_size": (192, 144)}),
    "patch8": (
        "patch 8 (cpu_p8): 4x the tokens per person; the MAE patch kernel summed 2x2 (exactly the patch-16 "
        "backbone on the image upsampled 2x at start)",
        {"arch": "cpu_p8", "model.patch_padding": 1},
    ),
    "lr1e-3": ("pose lr 1e-3 (from 2e-3)", {"optim.lr": 1e-3}),
}


def row_configs(name: str, workdir: Path) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """(the foundation config with the row's levers, the fine-tune config scoring it on infants)."""
    _, overrides = ROWS[name]
    fc = load_config_file(ROOT / "configs" / "foundation.py", "cpu")
    fc.data.humans.num_train = SCALE["corpus_images"]
    fc.data.humans.num_val = SCALE["humans_val"]
    pose = fc.pose
    pose.num_steps = SCALE["pose_steps"]
    pose.optim.warmup_steps = min(100, pose.num_steps)
    pose.eval.every = max(1, pose.num_steps // 2)
    pose.checkpoint.every = min(250, pose.num_steps)
    pose.log_every = min(pose.log_every, pose.num_steps)
    fc.update_from_flattened_dict({k: v for k, v in overrides.items() if k.startswith("data.humans")})
    pose.update_from_flattened_dict({k: v for k, v in overrides.items() if not k.startswith("data.humans")})
    # One corpus per set of corpus settings, shared by the rows that use it.
    corpus_key = json.dumps(fc.data.humans.to_dict(), sort_keys=True, default=list)
    fc.data.humans_dir = str(workdir / "corpora" / hashlib.sha1(corpus_key.encode()).hexdigest()[:10])

    ft = load_config_file(ROOT / "configs" / "stage1.py", "cpu")
    ft.arch = pose.arch
    ft.model.patch_padding = pose.model.patch_padding
    ft.model.image_size = tuple(pose.model.image_size)
    ft.model.heads = ("pose",)
    ft.data.heatmap_sigma = pose.data.heatmap_sigma
    ft.data.aug = ml_collections.ConfigDict(pose.data.aug.to_dict())
    ft.loss.depth = ft.loss.normal = 0.0
    ft.trainable_blocks = None
    ft.train_pos_embed = True
    ft.num_steps = SCALE["finetune_steps"]
    ft.optim.lr, ft.optim.layer_decay, ft.optim.warmup_steps = FINETUNE["lr"], 1.0, min(30, ft.num_steps)
    ft.data.mix = ml_collections.ConfigDict(FINETUNE["mix"])
    ft.data.tuning_images = TUNING_IMAGES
    ft.eval.every = ft.checkpoint.every = ft.num_steps
    ft.log_every = min(50, ft.num_steps)
    return fc, ft


def pretrain_weights(pretrain: Path, arch: str, image_size: tuple[int, int], out: Path) -> Path:
    """The MAE backbone file as a weights directory for ``arch`` at ``image_size`` (made once).

    A patch-8 preset starts from the patch-16 backbone: its 16x16 patch kernel summed over 2x2
    blocks (8x8) and the position embedding of the grid at twice the input size, so that at start
    it computes exactly what the patch-16 backbone computes on the image upsampled 2x (nearest);
    the padding halves with it (``model.patch_padding``: 1 for Sapiens' 2)."""
    from convert_weights.torch_to_flax import convert
    from hyper_sapiens_jax.models.arch import ModelConfig, arch_spec
    from hyper_sapiens_jax.models.weights import save_weights

    if (out / "model_config.json").is_file():
        return out
    p = arch_spec(arch).patch_size
    zoom = 16 // p
    mcfg, params, info = convert({"pretrain": pretrain}, (image_size[0] * zoom, image_size[1] * zoom))
    if zoom > 1:
        key = ("backbone", "patch_embed", "kernel")
        k = params[key]  # (16, 16, 3, D) HWIO
        params[key] = k.reshape(p, zoom, p, zoom, *k.shape[2:]).sum(axis=(1, 3))
        mcfg = ModelConfig(arch=arch, image_size=tuple(image_size), heads=mcfg.heads, patch_padding=2 // zoom)
        info = {**info, "patch_kernel": f"16x16 summed over {zoom}x{zoom} blocks to {p}x{p}"}
    save_weights(out, mcfg, params, info, overwrite=True)
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_row(name: str, workdir: Path, pretrain: Path) -> dict[str, Any]:
    """Measure one row (resuming what an earlier call left); returns its table row."""

    fc, ft = row_configs(name, workdir)
    rdir = workdir / name
    rdir.mkdir(parents=True, exist_ok=True)
    (rdir / "config.json").write_text(json.dumps({"foundation": config_to_dict(fc), "finetune": config_to_dict(ft)}))
    t0 = time.perf_counter()
    corpus = corpus_paths(fc.data)
    corpus_s = time.perf_counter() - t0
    size, arch = tuple(fc.pose.model.image_size), fc.pose.arch
    weights = pretrain_weights(pretrain, arch, size, workdir / f"pretrain_{arch}_{size[0]}x{size[1]}")

    t0 = time.perf_counter()
    finetune.run(task_config(fc, "pose", str(weights), corpus), rdir / "pose")
    pose_s = time.perf_counter() - t0
    evals = _rows(rdir / "pose" / METRICS_FILE)
    logged = _rows(rdir / "pose" / TRAIN_LOG_FILE)
    steps = [r["step_s"] for r in logged[1:]] or [r["step_s"] for r in logged]  # the first holds compilation

    zero_shot = demo.evaluate_weights(rdir / "pose", ft)
    ft.init_from = str(rdir / "pose")
    finetune.run(ft, rdir / "finetune")
    tuned = demo.last_eval(rdir / "finetune")
    return {
        "row": name,
        "levers": ROWS[name][0],
        "step_s": round(statistics.median(steps), 4) if steps else None,
        "pose_steps": int(fc.pose.num_steps),
        "humans_pck@0.05": evals[-1]["pck@0.05"],
        "humans_ap": evals[-1]["ap"],
        "humans_curve": [(r["step"], round(r["pck@0.05"], 4)) for r in evals],
        "zero_shot_tuning_pck@0.05": zero_shot["pck@0.05"],
        "finetuned_tuning_pck@0.05": tuned["pck@0.05"],
        "finetuned_tuning_ap": tuned["ap"],
        "finetuned_tuning_pck@0.2": tuned["pck@0.2"],
        "corpus_s": round(corpus_s, 1),
        "pose_s": round(pose_s, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of measured rows."""
    lines = [
        f"Short runs ({SCALE['pose_steps']} pose steps at batch 16 from the same MAE backbone, a "
        f"{SCALE['corpus_images']}-image corpus; infants: the {TUNING_IMAGES}-image tuning split, fine-tuned "
        f"{SCALE['finetune_steps']} steps, every block, lr 2e-3, pose only, real 2 : synthetic 1 : MINI-RGBD 1).",
        "",
        "| row | levers | step (s) | humans PCK@0.05 | humans AP | infants zero-shot PCK@0.05 "
        "| infants fine-tuned PCK@0.05 | fine-tuned AP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['levers']} | {r['step_s']:.3f} | {r['humans_pck@0.05']:.3f} | {r['humans_ap']:.3f} "
            f"| {r['zero_shot_tuning_pck@0.05']:.3f} | {r['finetuned_tuning_pck@0.05']:.3f} "
            f"| {r['finetuned_tuning_ap']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", required=True, help="where the rows run and ladder.json collects them")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run, in order (known: {', '.join(ROWS)})")
    parser.add_argument("--pretrain", default=str(FOUNDATION_DIR / PRETRAIN_FILE), help="the MAE backbone file")
    parser.add_argument("--out", default="", help="folder for foundation_ladder.{md,json} (empty: none)")
    for name, value in SCALE.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value, help="the ladder's scale")
    args = parser.parse_args(argv)
    SCALE.update({name: getattr(args, name) for name in SCALE})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    results = workdir / "ladder.json"
    done = {r["row"]: r for r in _rows(results)}
    for name in names:
        if name in done:
            log.info("row %s: measured before, kept", name)
            continue
        log.info("row %s: %s", name, ROWS[name][0])
        done[name] = run_row(name, workdir, Path(args.pretrain))
        with results.open("a") as f:
            f.write(json.dumps(done[name]) + "\n")
        log.info("row %s: %s", name, done[name])
    rows = [done[n] for n in ROWS if n in done]
    print(table(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "foundation_ladder.md").write_text("# The foundation ladder\n\n" + table(rows))
        (out / "foundation_ladder.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
