"""Export hyper-sapiens-jax weights to the Sapiens PyTorch layout.

  python -m convert_weights.flax_to_torch --ckpt DIR --task pose|depth|normal|backbone --out FILE [--raw]

DIR is a converted weights directory (``torch_to_flax``), a training workdir (its latest checkpoint;
EMA weights unless ``--raw``; ``--step best`` for the best by validation PCK) or a multi-stage
workdir (configs/demo.py: its final stage).

FILE ends in .pth (``torch.save({'state_dict', 'meta'})``) or .safetensors (meta as JSON strings).
Keys are exactly Sapiens': ``backbone.*`` plus ``head.*`` (pose) or ``decode_head.*`` (depth,
normal), so the file loads with ``strict=True`` into the Sapiens PyTorch model of that task.
``meta`` records arch, embed_dims, num_layers, num_heads, image_size [H, W], patch_size, patch_padding, task
(and num_keypoints for pose).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convert_weights import layout
from convert_weights.torch_io import CheckpointFileError, save_state_dict
from hyper_sapiens_jax.logs import setup_logging
from hyper_sapiens_jax.models.arch import HEADS, ModelConfig
from hyper_sapiens_jax.models.weights import WeightsError
from hyper_sapiens_jax.training.checkpoint import load_any

log = logging.getLogger("convert_weights.flax_to_torch")
TASKS = (*HEADS, "backbone")


def export_meta(config: ModelConfig, task: str) -> dict[str, Any]:
    """What a PyTorch user needs to rebuild the Sapiens model of ``task`` for the exported weights."""
    if task not in TASKS:
        raise WeightsError(f"task {task!r} must be one of {TASKS}")
    if task != "backbone" and task not in config.heads:
        raise WeightsError(f"the checkpoint has no {task} head (heads: {list(config.heads)})")
    spec = config.spec
    meta = {
        "arch": config.arch,
        "embed_dims": spec.embed_dims,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "image_size": list(config.image_size),
        "patch_size": config.patch_size,
        "patch_padding": config.patch_padding,
        "task": task,
        "exported_by": "hyper_sapiens_jax",
    }
    if task == "pose":
        meta["num_keypoints"] = config.num_keypoints
    return meta


def export_rules(config: ModelConfig, task: str) -> list[layout.Rule]:
    """The Flax path <-> Sapiens key rules of the tensors exported for ``task``."""
    return layout.model_rules(config, [] if task == "backbone" else [task])


def export_state_dict(
    config: ModelConfig, params: dict[tuple, np.ndarray], task: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Flat Flax params -> (Sapiens-layout state dict, meta) for ``task``."""
    meta = export_meta(config, task)
    return layout.flax_to_torch_state_dict(params, export_rules(config, task)), meta


def export(
    ckpt: str | Path, task: str, out: str | Path, *, raw: bool = False, step: int | str = "latest", dtype=np.float32
) -> dict[str, Any]:
    """Read ``ckpt`` (weights directory or training workdir) and write ``task``'s Sapiens checkpoint
    to ``out`` (tensors stored as ``dtype``); returns the meta written."""
    config, params, info = load_any(ckpt, raw=raw, step=step)
    state_dict, meta = export_state_dict(config, params, task)
    if info["kind"] == "run":
        log.info("%s: step %d, %s weights", info["source"], info["step"], info["weights"])
    save_state_dict(out, state_dict, meta, dtype=dtype)
    return meta


def main(argv: list[str] | None = None) -> int:
    """The ``sapiens-flax-to-torch`` console script (``python -m convert_weights.flax_to_torch``);
    ``--help`` lists the flags."""
    parser = argparse.ArgumentParser(
        prog="python -m convert_weights.flax_to_torch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--ckpt", required=True, help="weights directory (from torch_to_flax), training workdir or demo workdir"
    )
    parser.add_argument("--task", required=True, choices=TASKS, help="which model to write")
    parser.add_argument("--out", required=True, help="output file, .pth or .safetensors")
    parser.add_argument("--raw", action="store_true", help="training workdirs: the raw weights, not the EMA")
    parser.add_argument("--step", default="latest", help="training workdirs: 'latest' (default), 'best' or a step")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        step = int(args.step) if args.step.isdigit() else args.step
        meta = export(args.ckpt, args.task, args.out, raw=args.raw, step=step)
    except (WeightsError, CheckpointFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    log.info("wrote %s (%s %s, %dx%d)", args.out, meta["arch"], meta["task"], *meta["image_size"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
