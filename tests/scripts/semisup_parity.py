"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: a semi-supervised train step on a
4x2 ('data', 'fsdp') mesh vs one device, plain SGD at lr 1 (the update is minus the gradient), for
two objectives: 'teachers' (L_sup + L_cons with the hybrid teacher + L_dev) and 'full' (+ limb
rigidity and normal orthogonality with the 'copy' geometry teacher). Prints, per objective, the
largest per-tensor relative difference ||a - b|| / ||a|| of the parameter updates (conv biases
before InstanceNorm skipped: their true gradient is 0) and of the loss.

  python semisup_parity.py TESTBED_ROOT
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hyper_sapiens_jax.models.weights import state_to_flat
from hyper_sapiens_jax.semisup.step import make_semisup_step
from hyper_sapiens_jax.sharding import batch_sharding, make_mesh, param_shardings, replicated
from hyper_sapiens_jax.training.state import TrainState
from tests.helpers.train import first_batch, semisup_parts, with_unlabeled

assert len(jax.devices()) == 8, jax.devices()
batch = with_unlabeled(first_batch(Path(sys.argv[1])))


def run(state0, geo, shardings, jitted):
    """One step with the state, batch and geometry teacher placed by ``shardings`` (a device or trees)."""
    put = [jax.device_put(x, s) for x, s in zip((state0, batch, geo), shardings)]
    state, metrics = jitted(put[0], put[1], jax.random.key(0), put[2])
    return state, float(metrics["loss"]), float(metrics["from_a"])


for name, changes in (("teachers", dict(rigidity=0.0, orthogonality=0.0)), ("full", {})):
    graphdef, params, spec, reference, prior, obj = semisup_parts(**changes)
    tx = optax.sgd(1.0)
    step = make_semisup_step(
        graphdef,
        tx,
        obj,
        spec=spec,
        reference=reference,
        prior=prior,
        heatmap_sigma=2.0,
        ema_decay=0.5,
    )
    frozen = nnx.State({})
    state0 = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=frozen,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params),
    )
    geo = jax.tree.map(jnp.copy, params)
    before = state_to_flat(params)  # host copies: the donating step below may free the inputs
    one = jax.devices()[0]
    ref_state, ref_loss, _ = run(state0, geo, (one, one, one), jax.jit(step))

    mesh = make_mesh(data=4, fsdp=2)
    s_sh = param_shardings(state0, mesh)
    b_sh = {k: batch_sharding(mesh) for k in batch}
    g_sh = param_shardings(geo, mesh)
    sharded = jax.jit(
        step, in_shardings=(s_sh, b_sh, replicated(None, mesh), g_sh), out_shardings=(s_sh, None), donate_argnums=0
    )
    state, loss, from_a = run(state0, geo, (s_sh, b_sh, g_sh), sharded)
    n_sharded = sum(1 for x in jax.tree.leaves(state.params) if not x.sharding.is_fully_replicated)

    err = 0.0
    for (path, a), b in zip(state_to_flat(ref_state.params).items(), state_to_flat(state.params).values()):
        if "conv_layers" in path and path[-1] == "bias":
            continue
        da, db = np.asarray(a) - np.asarray(before[path]), np.asarray(b) - np.asarray(before[path])
        err = max(err, float(np.linalg.norm(da - db) / (np.linalg.norm(da) + 1e-12)))
    print(
        f"objective={name} params_rel_err={err:.3e} loss_rel_err={abs(loss - ref_loss) / abs(ref_loss):.3e} "
        f"fsdp_sharded={n_sharded} from_a={from_a:.3f}"
    )
