"""The train state: trainable and frozen parameters, optimizer state (trainable only), EMA weights."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """A pytree of ``nnx.State``s, split by the phase's ``partition.Trainable.filter``; the step
    rebuilds the model with ``nnx.merge(graphdef, params, frozen)``."""

    step: jax.Array
    params: nnx.State  # trainable parameters, float32
    frozen: nnx.State  # frozen parameters: no gradients, no optimizer state
    opt_state: Any  # optax state over ``params``
    ema: nnx.State  # EMA of the trainable parameters
