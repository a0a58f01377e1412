"""Orbax checkpoints of the prior run: three items per step, ``params``, ``ema`` and ``opt_state``.

The EMA weights are their own item so ``DiffusionPrior.load`` restores them alone. Trees are
saved as pure dicts (plain nested dicts of arrays) and put back into NNX state on restore.
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


def _pure(tree: Any) -> Any:
    """NNX state -> its pure dict; any other pytree (the optax state) -> {leaf index: leaf}."""
    if isinstance(tree, nnx.State):
        return nnx.to_pure_dict(tree)
    return {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, _pure(tree))


def save(mngr: ocp.CheckpointManager, step: int, state: dict[str, Any], force: bool = False) -> bool:
    """Save ``state`` (keys ITEMS) at ``step`` if the policy (or ``force``) says so."""
    args = ocp.args.Composite(**{k: ocp.args.StandardSave(_pure(state[k])) for k in ITEMS})
    return mngr.save(step, args=args, force=force)


def _into(template: Any, restored: Any) -> Any:
    """Put a restored pure dict back into the structure of ``template`` (NNX state or pytree)."""
    if isinstance(template, nnx.State):
        out = jax.tree.map(lambda x: x, template)  # a copy: replace_by_pure_dict works in place
        nnx.replace_by_pure_dict(out, restored)
        return out
    leaves = [restored[str(i)] for i in range(len(restored))]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def restore(mngr: ocp.CheckpointManager, step: int, template: dict[str, Any]) -> dict[str, Any]:
    """All ITEMS at ``step``, shaped like ``template`` (the freshly initialised train state)."""
    args = ocp.args.Composite(**{k: ocp.args.StandardRestore(_abstract(template[k])) for k in ITEMS})
    restored = mngr.restore(step, args=args)
    return {k: _into(template[k], restored[k]) for k in ITEMS}


def restore_ema(directory: str | Path, template: nnx.State, step: int | None = None) -> nnx.State:
    """The ``ema`` item of the latest (or given) checkpoint in ``directory``, as NNX state."""
    with manager(directory, read_only=True) as mngr:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no prior checkpoint in {directory}")
        args = ocp.args.Composite(ema=ocp.args.StandardRestore(_abstract(template)))
        return _into(template, mngr.restore(step, args=args)["ema"])
