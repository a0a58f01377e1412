"""The testbed foundation (``config.job = 'foundation'``): the testbed's stand-in for Sapiens' released
checkpoints, made the way Sapiens is made, at a size that trains on 2 CPU cores.

  python -m hyper_sapiens_jax.main --config configs/foundation.py --workdir W

  1. the human corpus (``testbed/humans.py``: adults and children, no infants) is rendered;
  2. MAE pretraining of the ``cpu`` ViT on its images (``config.pretrain``, the ``pretrain`` job):
     the backbone in the Sapiens pretrain layout (``*_clean.pth``: flat keys, cls + square grid);
  3. task fine-tuning on the corpus's labels, in two runs: pose end to end from the MAE backbone
     (``config.pose``), then the depth and normal heads on that backbone, frozen (``config.geometry``:
     the backbone runs forward only), so the three task files share one backbone; scored on the
     corpus's validation set;
  4. export in the Sapiens layout as safetensors (float16 to keep them small): the pretrain
     backbone and the pose / depth / normal checkpoints (``backbone.*`` + ``head.*`` /
     ``decode_head.*``), each loadable by the Sapiens PyTorch models;
  5. the exported files are converted back with ``convert_weights.torch_to_flax`` (as the demo
     does) and scored zero-shot on the infant validation split;
  6. ``W/foundation/manifest.json``: the command, the config, the code revision, each file's
     sha256 and size, the timings and both scores.

``W/foundation/`` then holds exactly what ships in ``hyper_sapiens_jax/testbed/foundation/``
(``testbed/shipped.py`` names the files and checks the manifest).
Restarting the command resumes the part that was interrupted.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from convert_weights.flax_to_torch import export as export_task
from convert_weights.torch_io import load_state_dict, save_state_dict
from convert_weights.torch_to_flax import convert
from hyper_sapiens_jax.config import config_to_dict
from hyper_sapiens_jax.data.codec import dark_blur_kernel
from hyper_sapiens_jax.jobs import code_revision, command_line, demo, finetune, pretrain
from hyper_sapiens_jax.jobs.inputs import corpus_paths, sample_config
from hyper_sapiens_jax.models.weights import save_weights
from hyper_sapiens_jax.testbed.shipped import FOUNDATION_FILES, MANIFEST_FILE, PRETRAIN_FILE, sha256

log = logging.getLogger(__name__)


def zero_shot_blur_kernel(stage_config: ml_collections.ConfigDict) -> int:
    """The DARK blur kernel the zero-shot score decodes with (``eval.blur_kernel``, or the rule)."""
    cfg = sample_config(stage_config)
    return int(stage_config.eval.get("blur_kernel") or dark_blur_kernel(cfg.heatmap_wh, cfg.heatmap_sigma))


def _timed(timings: dict, name: str, fn, *args):
    t0 = time.perf_counter()
    log.info("=== foundation: %s", name)
    out = fn(*args)
    timings[name] = round(time.perf_counter() - t0, 1)
    return out


def task_config(config: ml_collections.ConfigDict, part: str, init_from: str, corpus) -> ml_collections.ConfigDict:
    """``config[part]`` ('pose' or 'geometry') starting from ``init_from``, validated on the corpus's
    COCO val set."""
    sc = ml_collections.ConfigDict(config[part].to_dict())
    sc.init_from = init_from
    d = sc.data
    d.source, d.val_ann, d.val_images = "files", str(corpus.val_json), str(corpus.val_images)
    for key in ("humans_dir", "humans"):
        d[key] = config.data[key].to_dict() if key == "humans" else config.data[key]
    return sc


def export(tasks_dir: Path, pretrain_file: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Write the Sapiens-layout files (float16 safetensors) into ``out``; returns name -> sha256/bytes."""
    out.mkdir(parents=True, exist_ok=True)
    for task, name in FOUNDATION_FILES.items():
        export_task(tasks_dir, task, out / name, dtype=np.float16)
    sd, meta = load_state_dict(pretrain_file)
    save_state_dict(out / PRETRAIN_FILE, sd, meta, dtype=np.float16)
    names = [*FOUNDATION_FILES.values(), PRETRAIN_FILE]
    return {n: {"sha256": sha256(out / n), "bytes": (out / n).stat().st_size} for n in names}


def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Corpus, MAE, pose, geometry, export, zero-shot score and manifest, each part resuming where an
    interrupted run left it; ``W/foundation/`` gets the files (see the module docstring)."""
    if mode != "train":
        raise ValueError("the foundation job only trains (score its output with the demo)")
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    corpus = _timed(timings, "corpus", corpus_paths, config.data)
    pre_cfg = ml_collections.ConfigDict(config.pretrain.to_dict())
    for key in ("humans_dir", "humans", "source"):
        pre_cfg.data[key] = config.data[key].to_dict() if key == "humans" else config.data[key]
    _timed(timings, "pretrain", pretrain.run, pre_cfg, workdir / "pretrain")
    pretrain_file = workdir / "pretrain" / "backbone_pretrain.safetensors"

    weights = workdir / "pretrain_weights"
    if not (weights / "model_config.json").is_file():
        mcfg, params, info = convert({"pretrain": pretrain_file}, tuple(config.pose.model.image_size))
        save_weights(weights, mcfg, params, info, overwrite=True)
    _timed(timings, "pose", finetune.run, task_config(config, "pose", str(weights), corpus), workdir / "pose")
    _timed(
        timings,
        "geometry",
        finetune.run,
        task_config(config, "geometry", str(workdir / "pose"), corpus),
        workdir / "geometry",
    )
    humans_val = demo.last_eval(workdir / "geometry")

    out = workdir / "foundation"
    files = _timed(timings, "export", export, workdir / "geometry", pretrain_file, out)
    # Score the files the way the demo reads them: converted from the Sapiens layout.
    zs_dir = workdir / "zero_shot"
    shutil.rmtree(zs_dir, ignore_errors=True)
    zs_cfg = ml_collections.ConfigDict({"foundation": {"dir": str(out), **FOUNDATION_FILES}})
    converted = demo.prepare_foundation(zs_cfg, zs_dir, config.zero_shot.model.image_size)
    zero_shot = _timed(timings, "zero_shot", demo.evaluate_weights, converted, config.zero_shot)

    keep = ("pck@0.05", "pck@0.1", "pck@0.2", "ap", "ap50", "g_error", "num_samples")
    manifest = {
        "command": command_line(),
        "code_revision": code_revision(),
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "seconds": timings,
        "humans_val": {k: humans_val.get(k) for k in keep} if humans_val else None,
        "zero_shot_infant_val": {k: zero_shot.get(k) for k in keep},
        "zero_shot_blur_kernel": zero_shot_blur_kernel(config.zero_shot),
        "config": config_to_dict(config),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    log.info(
        "foundation written to %s (%.1f MB): humans val %s, infant zero-shot %s",
        out,
        manifest["total_bytes"] / 1e6,
        manifest["humans_val"],
        manifest["zero_shot_infant_val"],
    )
    return 0
