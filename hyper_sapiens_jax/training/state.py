"""The train state: trainable and frozen parameters, optimizer state (trainable only), EMA weights."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hyper_sapiens_jax.models.weights import flatten, nest
from hyper_sapiens_jax.training.partition import split_flat


@flax.struct.dataclass
class TrainState:
    """Pure pytrees (nested dicts keyed like the model's parameter paths)."""

    step: jax.Array
    params: Any  # trainable parameters, float32
    frozen: Any  # frozen parameters: no gradients, no optimizer state
    opt_state: Any
    ema: Any  # EMA of the trainable parameters


def create_state(
    model: nnx.Module, tx: optax.GradientTransformation, trainable_blocks: int | None
) -> tuple[nnx.GraphDef, nnx.State, TrainState]:
    """Split ``model`` into (graphdef, parameter template, TrainState) for the given trainable subset."""
    graphdef, template = nnx.split(model)
    flat = {p: v.get_value() for p, v in nnx.to_flat_state(template)}
    train, frozen = split_flat(flat, model.config.spec.num_layers, trainable_blocks)
    params, frozen = nest(train), nest(frozen)
    return (
        graphdef,
        template,
        TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            frozen=frozen,
            opt_state=tx.init(params),
            ema=jax.tree.map(jnp.copy, params),
        ),
    )


def merge_model(graphdef: nnx.GraphDef, template: nnx.State, params: Any, frozen: Any) -> nnx.Module:
    """The model with the given trainable + frozen parameter trees (works under jit)."""
    state = jax.tree.map(lambda x: x, template)  # a fresh State: never mutate the template
    nnx.replace_by_pure_dict(state, nest({**flatten(frozen), **flatten(params)}))
    return nnx.merge(graphdef, state)
