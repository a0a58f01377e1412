"""The Sapiens optimizer: layer-wise LR values, weight-decay exclusions, warm-up."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from hyper_sapiens_jax.models import ModelConfig
from hyper_sapiens_jax.models.weights import abstract_model, state_to_flat
from hyper_sapiens_jax.training.adapters import cosine_schedule
from hyper_sapiens_jax.training.optim import applies_weight_decay, layer_id, lr_scale, sapiens_adamw


def test_layer_ids_and_lr_scales_follow_mmpretrain():
    L, rate = 24, 0.85
    assert layer_id(("backbone", "patch_embed", "kernel"), L) == 0
    assert layer_id(("backbone", "pos_embed"), L) == 0
    assert layer_id(("backbone", "layers", 0, "attn", "qkv", "kernel"), L) == 1
    assert layer_id(("backbone", "layers", 23, "ffn", "fc2", "bias"), L) == 24
    assert layer_id(("backbone", "norm", "scale"), L) == 25
    assert layer_id(("heads", "pose", "final_layer", "kernel"), L) == 25
    assert lr_scale(("backbone", "pos_embed"), L, rate) == pytest.approx(0.85**25)
    assert lr_scale(("backbone", "layers", 10, "ln1", "scale"), L, rate) == pytest.approx(0.85**14)
    assert lr_scale(("heads", "depth", "conv_seg", "bias"), L, rate) == 1.0


def test_weight_decay_exclusions():
    assert applies_weight_decay(("backbone", "layers", 0, "attn", "qkv", "kernel"), jnp.zeros((4, 12)))
    assert not applies_weight_decay(("backbone", "layers", 0, "attn", "qkv", "bias"), jnp.zeros(12))
    assert not applies_weight_decay(("backbone", "norm", "scale"), jnp.zeros(4))
    assert not applies_weight_decay(("backbone", "pos_embed"), jnp.zeros((1, 12, 4)))
    assert applies_weight_decay(("heads", "pose", "deconv_layers", 0, "kernel"), jnp.zeros((4, 4, 2, 3)))


def _params():
    model = abstract_model(ModelConfig(arch="tiny", image_size=(32, 32), heads=("pose",)))
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), nnx.state(model, nnx.Param))


def test_each_parameter_moves_by_its_own_learning_rate():
    """Plain SGD-like check: with b1 = b2 = 0 Adam's direction is sign(g), so the first step moves
    every parameter by exactly lr * scale (+ lr * scale * wd * w where decay applies)."""
    params = _params()
    grads = jax.tree.map(jnp.ones_like, params)
    lr, wd, L = 1e-2, 0.1, 4
    tx = sapiens_adamw(params, num_layers=L, learning_rate=lr, weight_decay=wd, b1=0.0, b2=0.0, clip_norm=None)
    updates, _ = tx.update(grads, tx.init(params), params)
    flat_p = state_to_flat(params)
    for path, u in state_to_flat(updates).items():
        scale = lr_scale(path, L, 0.85)
        expected = -lr * scale * (1.0 + (wd * flat_p[path] if applies_weight_decay(path, flat_p[path]) else 0.0))
        np.testing.assert_allclose(
            np.asarray(u), np.asarray(expected) * np.ones_like(u), rtol=1e-4, atol=1e-9, err_msg=str(path)
        )


def test_clipping_and_warmup():
    optim = ml_collections.ConfigDict({"warmup_steps": 500, "final_lr_frac": 0.0})
    sched = cosine_schedule(5e-4, optim, 10_000)
    assert float(sched(0)) == pytest.approx(5e-7, rel=1e-4)
    assert float(sched(250)) == pytest.approx(5e-7 + 0.5 * (5e-4 - 5e-7), rel=1e-5)
    assert float(sched(500)) == pytest.approx(5e-4, rel=1e-5)
    assert float(sched(10_000)) == pytest.approx(0.0, abs=1e-9)
    assert float(sched(5250)) == pytest.approx(2.5e-4, rel=1e-4)  # half-way down the cosine
    optim.final_lr_frac = 0.1
    assert float(cosine_schedule(5e-4, optim, 10_000)(10_000)) == pytest.approx(5e-5, rel=1e-5)
    params = nnx.State({"w": nnx.Param(jnp.zeros((3, 3)))})
    tx = sapiens_adamw(params, num_layers=1, learning_rate=1.0, weight_decay=0.0, clip_norm=1.0)
    # path ('w',) is not in the backbone -> scale 1; a huge gradient is clipped to norm 1 first,
    # and Adam's first step is then lr * g / |g| elementwise = 1 in every entry regardless.
    grads = jax.tree.map(lambda x: jnp.full(x.shape, 1e6), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.allclose(np.asarray(updates["w"].get_value()), -1.0, atol=1e-3)
    clipped, _ = optax.clip_by_global_norm(1.0).update({"w": jnp.full((3, 3), 1e6)}, optax.EmptyState())
    assert float(optax.tree.norm(clipped)) == pytest.approx(1.0, rel=1e-5)
