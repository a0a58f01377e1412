"""The Sapiens optimizer (docs/design.md §4): AdamW with layer-wise LR decay, no weight decay on
1-D parameters, biases and pos_embed, global-norm clipping, linear warm-up from x1e-3.

Layer ids follow mmpretrain's ``LearningRateDecayOptimizerConstructor`` for ViTs with L blocks:
patch_embed / pos_embed -> 0, block i -> i + 1, final norm and heads -> L + 1; the learning rate of
a parameter is ``base_lr * rate ** (L + 1 - id)``. Paths are Flax parameter paths, e.g.
``('backbone', 'layers', 3, 'attn', 'qkv', 'kernel')``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

# A parameter's key path, e.g. ('backbone', 'layers', 3, 'attn', 'qkv', 'kernel').
KeyPath = tuple


def layer_id(path: KeyPath, num_layers: int) -> int:
    """mmpretrain layer id of a parameter path (0 embeddings, i + 1 block i, L + 1 norm and heads)."""
    if path[0] != "backbone":
        return num_layers + 1
    if path[1] in ("patch_embed", "pos_embed"):
        return 0
    if path[1] == "layers":
        return int(path[2]) + 1
    return num_layers + 1


def lr_scale(path: KeyPath, num_layers: int, decay_rate: float) -> float:
    """The factor on the base learning rate of one parameter."""
    return decay_rate ** (num_layers + 1 - layer_id(path, num_layers))


def applies_weight_decay(path: KeyPath, value: Any) -> bool:
    """No decay for 1-D parameters (norm scales), biases and the position embedding."""
    return jnp.ndim(value) > 1 and path[-1] != "bias" and path[-1] != "pos_embed"


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
    """Multiply updates by a matching pytree of constant per-parameter factors."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(init, update)


def map_params(fn: Any, params: nnx.State) -> nnx.State:
    """A state of the same structure as ``params`` holding ``fn(path, value)`` per parameter (for
    per-parameter optimizer constants and masks, which optax matches leaf by leaf)."""
    return nnx.map_state(lambda path, v: v.replace(fn(path, v.get_value())), params)


def sapiens_adamw(
    params: nnx.State,
    *,
    num_layers: int,
    learning_rate: float | optax.Schedule = 5e-4,
    layer_decay: float = 0.85,
    weight_decay: float = 0.1,
    b1: float = 0.9,
    b2: float = 0.999,
    clip_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW for the given parameters (an ``nnx.State``, arrays or ShapeDtypeStructs).

    Only the parameters in ``params`` get optimizer state: pass the trainable subset.
    """
    scales = map_params(lambda p, _: jnp.float32(lr_scale(p, num_layers, layer_decay)), params)
    decay_mask = map_params(applies_weight_decay, params)
    lr = learning_rate if callable(learning_rate) else (lambda step: learning_rate)
    chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    chain += [
        optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
        optax.add_decayed_weights(weight_decay, mask=decay_mask),
        scale_by_tree(scales),
        optax.scale_by_learning_rate(lr),
    ]
    return optax.chain(*chain)
