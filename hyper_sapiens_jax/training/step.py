"""The train step: a pure function of (TrainState, batch, key) for ``jax.jit`` with explicit shardings.

Gradients are taken only with respect to the trainable parameters. With ``micro_batches`` > 1 the
batch is split on its leading axis and gradients are accumulated with ``lax.scan`` (the supervised
losses use whole-batch normalisers, so the result equals the big-batch step). Updates: the Sapiens
AdamW (``optim.sapiens_adamw``), then EMA of the trainable parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hyper_sapiens_jax.training.objective import batch_normalizers
from hyper_sapiens_jax.training.state import TrainState

Batch = dict[str, jax.Array]
# objective(outputs, micro_batch, normalizers, key, step) -> (total, parts); ``step`` (int32 scalar,
# the number of steps taken so far) drives loss-weight schedules such as the stage-3 prior annealing.
Objective = Callable[[dict, Batch, dict, jax.Array, jax.Array], tuple[jax.Array, dict]]


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    objective: Objective,
    *,
    micro_batches: int = 1,
    ema_decay: float = 0.999,
    dropout: bool = True,
    prepare_batch: Callable[[Batch], Batch] | None = None,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]:
    """Build ``step(state, batch, key) -> (state, metrics)``; jit it with donated state.

    ``prepare_batch`` completes the batch on the device before anything reads it (the lean batch:
    ``functools.partial(training.batch.complete_batch, heatmap_sigma=...)`` normalises the uint8
    images and renders the heatmaps)."""

    def loss_fn(params: nnx.State, frozen: nnx.State, batch: Batch, normalizers: dict, key: jax.Array, step: jax.Array):
        model = nnx.merge(graphdef, params, frozen)
        k_drop, k_obj = jax.random.split(key)
        outputs = model(batch["image"], dropout_key=k_drop if dropout else None)
        return objective(outputs, batch, normalizers, k_obj, step)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, dict]:
        if prepare_batch is not None:
            batch = prepare_batch(batch)
        normalizers = {**batch_normalizers(batch), "micro_batches": jnp.float32(micro_batches)}
        if micro_batches == 1:
            (loss, parts), grads = grad_fn(state.params, state.frozen, batch, normalizers, key, state.step)
        else:
            split = jax.tree.map(lambda x: x.reshape((micro_batches, -1) + x.shape[1:]), batch)
            keys = jax.random.split(key, micro_batches)

            def accumulate(total, xs):
                micro, k = xs
                out = grad_fn(state.params, state.frozen, micro, normalizers, k, state.step)
                return jax.tree.map(jnp.add, total, out), None

            first = jax.tree.map(lambda x: x[0], split)
            zeros = jax.tree.map(
                lambda x: jnp.zeros(x.shape, x.dtype),
                jax.eval_shape(grad_fn, state.params, state.frozen, first, normalizers, keys[0], state.step),
            )
            ((loss, parts), grads), _ = jax.lax.scan(accumulate, zeros, (split, keys))
        return apply_gradients(state, grads, tx, ema_decay), train_metrics(loss, parts, grads)

    return step


def apply_gradients(state: TrainState, grads: Any, tx: optax.GradientTransformation, ema_decay: float) -> TrainState:
    """One optimizer update of the trainable parameters, then their EMA; the step count advances."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema, params)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)


def train_metrics(loss: jax.Array, parts: dict, grads: Any) -> dict[str, jax.Array]:
    """What every train step reports: the loss, its parts, the gradient norm and a non-finite flag."""
    return {
        "loss": loss,
        **parts,
        "grad_norm": optax.tree.norm(grads),
        "nonfinite": jnp.logical_not(jnp.isfinite(loss)).astype(jnp.float32),
    }
