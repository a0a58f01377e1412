"""Orbax checkpoints of the prior run: three items per step, ``params``, ``ema`` and ``opt_state``.

The EMA weights are their own item so ``DiffusionPrior.load`` restores them alone. Trees are
saved in ``training.checkpoint.saveable`` form and put back with ``restored_like``, as the
fine-tuning checkpoints are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from hyper_sapiens_jax.training import checkpoint as ckpt

ITEMS = ("params", "ema", "opt_state")


def manager(
    directory: str | Path, save_every: int = 1000, keep: int = 2, read_only: bool = False
) -> ocp.CheckpointManager:
    """The prior run's manager (``training.checkpoint.manager`` with this module's ``ITEMS``): async
    saves every ``save_every`` steps and on preemption, the latest ``keep`` kept."""
    return ckpt.manager(directory, every=save_every, keep=keep, keep_best=0, read_only=read_only, item_names=ITEMS)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, ckpt.saveable(tree))


def save(mngr: ocp.CheckpointManager, step: int, state: dict[str, Any], force: bool = False) -> bool:
    """Save ``state`` (keys ITEMS) at ``step`` if the policy (or ``force``) says so."""
    args = ocp.args.Composite(**{k: ocp.args.StandardSave(ckpt.saveable(state[k])) for k in ITEMS})
    return mngr.save(step, args=args, force=force)


def restore(mngr: ocp.CheckpointManager, step: int, template: dict[str, Any]) -> dict[str, Any]:
    """All ITEMS at ``step``, shaped like ``template`` (the freshly initialised train state)."""
    args = ocp.args.Composite(**{k: ocp.args.StandardRestore(_abstract(template[k])) for k in ITEMS})
    restored = mngr.restore(step, args=args)
    return {k: ckpt.restored_like(template[k], restored[k]) for k in ITEMS}


def restore_ema(directory: str | Path, template: nnx.State, step: int | None = None) -> nnx.State:
    """The ``ema`` item of the latest (or given) checkpoint in ``directory``, as NNX state."""
    args = ocp.args.Composite(ema=ocp.args.StandardRestore(_abstract(template)))
    with manager(directory, read_only=True) as mngr:
        read = lambda s: ckpt.restored_like(template, mngr.restore(s, args=args)["ema"])
        if step is not None:
            return read(step)
        _, ema = ckpt.newest_readable(mngr, read)  # damaged newer steps skipped, with a warning
        if ema is None:
            raise FileNotFoundError(f"no prior checkpoint in {directory}")
        return ema
