"""The train state: trainable and frozen parameters, optimizer state (trainable only), EMA weights."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
from flax import nnx

from hyper_sapiens_jax.models.weights import flatten, nest


@flax.struct.dataclass
class TrainState:
    """Pure pytrees (nested dicts keyed like the model's parameter paths)."""

    step: jax.Array
    params: Any  # trainable parameters, float32
    frozen: Any  # frozen parameters: no gradients, no optimizer state
    opt_state: Any
    ema: Any  # EMA of the trainable parameters


def merge_model(graphdef: nnx.GraphDef, template: nnx.State, params: Any, frozen: Any) -> nnx.Module:
    """The model with the given trainable + frozen parameter trees (works under jit)."""
    state = jax.tree.map(lambda x: x, template)  # a fresh State: never mutate the template
    nnx.replace_by_pure_dict(state, nest({**flatten(frozen), **flatten(params)}))
    return nnx.merge(graphdef, state)
