"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: one train step on a 4x2
('data', 'fsdp') mesh vs the same step on one device, for two objectives ('no_depth': pose + normal;
'full': + depth). Prints, per objective, the largest per-tensor relative difference ||a - b|| / ||a||
of the parameter updates (and the elementwise max for information) and of the loss. Plain SGD with
lr 1, so the update is minus the gradient; conv biases followed by InstanceNorm have a true gradient
of 0 and are skipped, their values being float noise.

With ``--float64`` the same comparison is also made in float64 (x64, float64 parameters and
compute, the same initial values): a gap that is float32 rounding shrinks by ~1e9 there, a real
difference (a reduction that sees only its shard, a wrong all-reduce) stays. Rows are named
``DTYPE/OBJECTIVE``.

  python train_step_parity.py TESTBED_ROOT [--float64]
"""

import sys
from pathlib import Path

import jax

FLOAT64 = "--float64" in sys.argv[2:]
if FLOAT64:
    jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hyper_sapiens_jax.models.weights import state_to_flat  # noqa: E402
from hyper_sapiens_jax.sharding import batch_sharding, make_mesh, param_shardings, replicated  # noqa: E402
from hyper_sapiens_jax.training.objective import LossWeights  # noqa: E402
from tests.helpers.train import first_batch, make_step_and_state  # noqa: E402

assert len(jax.devices()) == 8, jax.devices()
batch = first_batch(Path(sys.argv[1]))
key = jax.random.key(0)
mesh = make_mesh(data=4, fsdp=2)

runs = [
    (dtype, name, weights)
    for dtype in (("float32", "float64") if FLOAT64 else ("float32",))
    for name, weights in (("no_depth", LossWeights(depth=0.0)), ("full", LossWeights()))
]
for dtype, name, weights in runs:
    f64 = dtype == "float64"
    inputs = {k: v.astype(jnp.float64) if f64 and v.dtype == jnp.float32 else v for k, v in batch.items()}
    step, state = make_step_and_state(sgd=True, lr=1.0, weights=weights, float64=f64)
    before = state_to_flat(jax.device_get(state.params))
    ref_state, ref_metrics = jax.jit(step)(jax.device_put(state, jax.devices()[0]), inputs, key)

    step, state = make_step_and_state(sgd=True, lr=1.0, weights=weights, float64=f64)
    s_shard = param_shardings(state, mesh)
    b_shard = jax.tree.map(lambda _: batch_sharding(mesh), inputs)
    sharded = jax.jit(
        step, in_shardings=(s_shard, b_shard, replicated(key, mesh)), out_shardings=(s_shard, None), donate_argnums=0
    )
    new_state, metrics = sharded(jax.device_put(state, s_shard), jax.device_put(inputs, b_shard), key)
    n_sharded = sum(1 for x in jax.tree.leaves(new_state.params) if not x.sharding.is_fully_replicated)
    dtypes = {str(x.dtype) for x in jax.tree.leaves(new_state.params)}

    err = worst = 0.0
    worst_path = None
    for (path, a), b in zip(state_to_flat(ref_state.params).items(), state_to_flat(new_state.params).values()):
        if "conv_layers" in path and path[-1] == "bias":
            continue
        da, db = np.asarray(a) - before[path], np.asarray(b) - before[path]
        rel = float(np.linalg.norm(da - db) / (np.linalg.norm(da) + 1e-300))
        if rel > err:
            err, worst_path = rel, "/".join(map(str, path))
        worst = max(worst, float(np.abs(da - db).max() / (np.abs(da).max() + 1e-300)))
    loss_err = abs(float(metrics["loss"]) - float(ref_metrics["loss"])) / abs(float(ref_metrics["loss"]))
    print(
        f"objective={dtype}/{name} params_rel_err={err:.3e} elementwise_rel_err={worst:.3e} "
        f"loss_rel_err={loss_err:.3e} fsdp_sharded={n_sharded} dtype={','.join(sorted(dtypes))} worst={worst_path}"
    )
