"""Orbax checkpoints of a fine-tuning run, and loading trained weights back out of a workdir.

A step's checkpoint is a composite of six items:

  params     trainable parameters (float32)          frozen   the frozen parameters
  opt_state  AdamW state of the trainable subset      ema      EMA of the trainable parameters
  data       the Grain iterator of this process       meta     JSON: step, stage, trainable_blocks

``params``/``frozen``/``ema`` are saved as pure nested dicts (``nnx.to_pure_dict`` of the train
state's ``nnx.State``s, keyed like the model's parameter paths), so the export and predict paths
restore ``ema`` (or ``params`` with ``raw=True``) + ``frozen`` without building an optimizer.
Restores go straight into the target shardings (an abstract tree carrying them).

Preservation: the latest ``keep`` checkpoints plus the ``keep_best`` best by validation PCK (saved
with evaluation metrics); saves every ``every`` steps and on preemption (``PreemptionCheckpointingPolicy``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp
from orbax.checkpoint.checkpoint_managers import save_decision_policy as sdp

from hyper_sapiens_jax.models.arch import ModelConfig
from hyper_sapiens_jax.models.weights import PARAMS_DIR, WeightsError, abstract_params, error_summary, load_weights
from hyper_sapiens_jax.training.partition import Trainable
from hyper_sapiens_jax.training.state import TrainState

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_CONFIG_FILE = "model_config.json"
BEST_METRIC = "pck"  # validation PCK (at config.eval.pck_threshold)
TREE_ITEMS = ("params", "frozen", "opt_state", "ema")


def manager(
    directory: str | Path,
    *,
    every: int = 1000,
    keep: int = 2,
    keep_best: int = 1,
    read_only: bool = False,
    async_save: bool = True,
    item_names: tuple[str, ...] | None = None,
) -> ocp.CheckpointManager:
    """The one Orbax CheckpointManager setup of every job (fine-tuning, pretraining, the prior): saves
    every ``every`` steps and on preemption (async unless ``async_save=False``), keeps the latest
    ``keep`` and, with ``keep_best`` > 0, the ``keep_best`` best by ``metrics[BEST_METRIC]`` (see the
    module docstring). ``item_names``: fixed item names (the prior's), else the items ``save`` names.
    ``keep`` < 1 is refused: it would delete the run's last complete checkpoint (a read-only manager
    deletes nothing)."""
    if not read_only and not (isinstance(keep, int) and keep >= 1):
        raise ValueError(
            f"checkpoint keep={keep!r} must be an integer >= 1 (0 would delete the last complete checkpoint)"
        )
    keep_policy = [pp.LatestN(keep)]
    best = {}
    if keep_best:
        keep_policy.append(
            pp.BestN(
                get_metric_fn=lambda m: m[BEST_METRIC],
                reverse=False,
                n=keep_best,
                keep_checkpoints_without_metrics=False,
            )
        )
        # best_fn makes the manager store the metrics passed to save() (the policies rank by them).
        best = {"best_fn": lambda m: m[BEST_METRIC], "best_mode": "max"}
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=sdp.AnySavePolicy([sdp.FixedIntervalPolicy(every), sdp.PreemptionCheckpointingPolicy()]),
        preservation_policy=pp.AnyPreservationPolicy(keep_policy) if keep_best else keep_policy[0],
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
        cleanup_tmp_directories=not read_only,
        **best,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options, item_names=item_names)


def saveable(tree: Any) -> dict[str, Any]:
    """A state tree in its on-disk form: an ``nnx.State`` -> its pure dict (Flax's checkpointing
    idiom); any other pytree (an optax state, whose NamedTuples do not round-trip through Orbax) ->
    {leaf index: leaf}. Every job's checkpoints (fine-tuning, pretraining, the prior) use it."""
    if isinstance(tree, nnx.State):
        return nnx.to_pure_dict(tree)
    return {str(i): leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def restored_like(template: Any, restored: dict[str, Any]) -> Any:
    """The inverse of ``saveable``: ``restored`` put back into ``template``'s structure."""
    if isinstance(template, nnx.State):
        out = jax.tree.map(lambda x: x, template)  # a copy: replace_by_pure_dict fills it in place
        nnx.replace_by_pure_dict(out, restored)
        return out
    leaves = [restored[str(i)] for i in range(len(restored))]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def save(
    mngr: ocp.CheckpointManager,
    state: TrainState,
    data_iter: Any,
    meta: dict[str, Any],
    *,
    metrics: dict[str, float] | None = None,
    force: bool = False,
) -> bool:
    """Save ``state`` at ``int(state.step)`` when the policy (or ``force``) says so; async."""
    step = int(jax.device_get(state.step))
    args = {k: saveable(getattr(state, k)) for k in TREE_ITEMS}
    # A copy: the async writer must not read buffers that the next (donating) step overwrites.
    # Empty trees (nothing frozen) are not saved: Orbax refuses empty items.
    items = {
        k: ocp.args.StandardSave(jax.tree.map(lambda x: x.copy(), v)) for k, v in args.items() if jax.tree.leaves(v)
    }
    items["meta"] = ocp.args.JsonSave({**meta, "step": step})
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    return mngr.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


class CheckpointError(WeightsError):
    """No checkpoint of a workdir can be read; the message names the directory, the damaged steps
    and the fix."""


# What reading a damaged step raises: a truncated or missing file, a bad header, a tree that no
# longer matches. Orbax re-raises TensorStore read errors as a bare ``Exception``, so nothing
# narrower catches them all; the warning names the error's type and message.
RESTORE_ERRORS = (Exception,)


def newest_readable(mngr: ocp.CheckpointManager, restore_step: Any, *, set_aside: bool = False) -> tuple[int, Any]:
    """``(step, restore_step(step))`` for the newest step of ``mngr`` that restores, or ``(0, None)``
    when it has none. A newer, unreadable step is skipped with a warning naming it; with
    ``set_aside`` (a run that will go on saving) it is renamed to ``STEP.damaged`` (kept, never
    deleted) so that the run can save that step number again. Every step unreadable: CheckpointError."""
    directory = Path(mngr.directory)
    damaged = []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            out = restore_step(step)
        except RESTORE_ERRORS as e:
            log.warning(
                "checkpoint %s is unreadable (%s: %s); trying the step before",
                directory / str(step),
                type(e).__name__,
                error_summary(e),
            )
            damaged.append(step)
            continue
        if damaged and set_aside:
            _set_aside(mngr, damaged)
        return step, out
    if damaged:
        raise CheckpointError(
            f"{directory}: no readable checkpoint (steps {sorted(damaged)} are damaged; the warnings above say "
            f"why). Move the damaged step folders out of {directory} to start again from config.init_from, "
            "or point --workdir elsewhere"
        )
    return 0, None


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
    """Rename the damaged ``steps`` to ``STEP.damaged`` (process 0; every process waits for it)."""
    directory = Path(mngr.directory)
    if jax.process_index() == 0:
        for step in steps:
            target = directory / f"{step}.damaged"
            n = 1
            while target.exists():
                target, n = directory / f"{step}.damaged{n}", n + 1
            (directory / str(step)).rename(target)
            log.warning("moved the damaged checkpoint %s aside to %s", directory / str(step), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("checkpoint set aside")
    mngr.reload()


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
    return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])


def _abstract(template: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), template, shardings)


def restore(
    mngr: ocp.CheckpointManager, step: int, template: TrainState, shardings: TrainState, data_iter: Any = None
) -> TrainState:
    """The train state at ``step``, laid out like ``template`` (same trainable split) in ``shardings``;
    ``data_iter`` (if given) is set to the saved position in place."""
    abstract = _abstract(template, shardings)
    trees = {k: saveable(getattr(abstract, k)) for k in TREE_ITEMS}
    items = {k: ocp.args.StandardRestore(v) for k, v in trees.items() if jax.tree.leaves(v)}
    if data_iter is not None:
        items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    out = mngr.restore(step, args=ocp.args.Composite(**items))
    trees = {k: restored_like(getattr(abstract, k), out[k] if k in items else v) for k, v in trees.items()}
    return TrainState(step=jax.device_put(np.asarray(step, np.int32), shardings.step), **trees)


# ---------------------------------------------------------------------------------------------
# Trained weights out of a workdir (init_from, export, predict)
# ---------------------------------------------------------------------------------------------
def is_run_dir(path: str | Path) -> bool:
    """True for a fine-tuning workdir (a model_config.json next to a checkpoints/ folder)."""
    path = Path(path)
    return (path / MODEL_CONFIG_FILE).is_file() and (path / CHECKPOINT_DIR).is_dir()


def read_model_config(workdir: str | Path) -> ModelConfig:
    path = Path(workdir) / MODEL_CONFIG_FILE
    try:
        return ModelConfig.load(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise WeightsError(f"{path}: unreadable model config ({e})") from e


def final_stage_dir(path: str | Path) -> Path:
    """``path`` itself, or for a multi-stage workdir (configs/demo.py: prior/, stage1/ ... stage3/)
    its last stage that has a checkpoint."""
    path = Path(path)
    if is_run_dir(path):
        return path
    stages = sorted((p for p in path.glob("stage[0-9]*") if is_run_dir(p)), key=lambda p: int(p.name[5:]))
    if not stages:
        raise WeightsError(
            f"{path} holds no model weights (expected {MODEL_CONFIG_FILE} with {PARAMS_DIR}/ "
            f"(converted), with {CHECKPOINT_DIR}/ (a training workdir), or stageN/ runs)"
        )
    return stages[-1]


def load_any(
    path: str | Path, *, raw: bool = False, step: int | str = "latest"
) -> tuple[ModelConfig, dict[tuple, np.ndarray], dict[str, Any]]:
    """(config, flat params, info) from a converted checkpoint directory, a training workdir or a
    multi-stage workdir (its final stage); ``info`` says which and, for runs, the step and EMA/raw."""
    path = Path(path)
    if not path.is_dir():
        raise WeightsError(f"{path.absolute()} is not a directory")
    if (path / PARAMS_DIR).is_dir():
        config, params = load_weights(path)
        return config, params, {"source": str(path), "kind": "converted"}
    run_dir = final_stage_dir(path)
    config, params, step = load_run_params(run_dir, raw=raw, step=step)
    return config, params, {"source": str(run_dir), "kind": "run", "step": step, "weights": "raw" if raw else "ema"}


def load_run_params(
    workdir: str | Path, *, raw: bool = False, step: int | str = "latest"
) -> tuple[ModelConfig, dict[tuple, np.ndarray], int]:
    """(model config, flat float32 params, step) of a training workdir's checkpoint.

    ``raw=False`` gives the EMA weights (the default for export/predict/init_from), ``raw=True`` the
    optimised ones. ``step``: 'latest', 'best' (by validation PCK) or a step number.
    """
    workdir = Path(workdir)
    if not is_run_dir(workdir):
        raise WeightsError(f"{workdir}: not a training workdir (needs {MODEL_CONFIG_FILE} and {CHECKPOINT_DIR}/)")
    config = read_model_config(workdir)
    key = "params" if raw else "ema"
    # Onto this process's first device, whatever topology saved it (a pod run read on a laptop).
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def restore_step(step: int) -> tuple[dict, bool]:
        meta = read_meta(mngr, step)
        train, frozen = Trainable.from_meta(meta, config.spec.num_layers).split(abstract_params(config, here))
        wanted = {key: nnx.to_pure_dict(train), "frozen": nnx.to_pure_dict(frozen)}
        items = {k: ocp.args.StandardRestore(v) for k, v in wanted.items() if jax.tree.leaves(v)}
        return mngr.restore(step, args=ocp.args.Composite(**items)), "frozen" in items

    with manager(workdir / CHECKPOINT_DIR, read_only=True) as mngr:
        steps = mngr.all_steps()
        if not steps:
            raise WeightsError(f"{workdir / CHECKPOINT_DIR}: no checkpoint saved yet")
        if step == "latest":
            step, (out, has_frozen) = newest_readable(mngr, restore_step)
        else:
            if step == "best":
                step = mngr.best_step() or max(steps)  # best_fn ranks by validation PCK
            elif int(step) not in steps:
                raise WeightsError(f"{workdir / CHECKPOINT_DIR}: no checkpoint at step {step}; have {sorted(steps)}")
            step = int(step)
            try:
                out, has_frozen = restore_step(step)
            except RESTORE_ERRORS as e:
                raise WeightsError(f"{workdir / CHECKPOINT_DIR / str(step)}: unreadable checkpoint ({e})") from None
    flat = traverse_util.flatten_dict(out[key])
    if has_frozen:  # not saved when everything trained
        flat.update(traverse_util.flatten_dict(out["frozen"]))
    return config, {p: np.asarray(v, np.float32) for p, v in flat.items()}, step
