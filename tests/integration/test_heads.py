"""The heads' deconvolution (Deconv4x2, both methods) equals nnx.ConvTranspose and torch conv_transpose2d.

Random kernels on odd and even sizes: a wrong tap, phase or padding side in either method fails them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from convert_weights import layout
from hyper_sapiens_jax.models.heads import Conv1x1, Deconv4x2, DepthHead, NormalHead, PoseHead

TOL = 1e-5  # max |a - b| <= TOL * max |b|

# (batch, h, w, Cin, Cout): odd and even spatial sizes, Cin != Cout both ways, 1x1 input.
SHAPES = [(2, 4, 6, 8, 5), (3, 5, 3, 4, 7), (1, 7, 8, 6, 6), (2, 1, 1, 3, 2)]
METHODS = ["phases", "subpixel3x3"]


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def reference(c_in, c_out, dtype=None):
    return nnx.ConvTranspose(
        c_in,
        c_out,
        (4, 4),
        strides=(2, 2),
        padding=((2, 2), (2, 2)),
        use_bias=False,
        transpose_kernel=True,
        dtype=dtype,
        rngs=nnx.Rngs(0),
    )


def case(shape, seed=0):
    b, h, w, c_in, c_out = shape
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (b, h, w, c_in))
    kernel = jax.random.normal(k2, (4, 4, c_out, c_in))
    probe = jax.random.normal(k3, (b, 2 * h, 2 * w, c_out))  # random linear functional of the output
    return x, kernel, probe


def apply_fn(module):
    """Pure f(kernel, x): ``module`` (whose only state is its kernel) run with ``kernel``."""
    graphdef, state = nnx.split(module)
    assert len(jax.tree.leaves(state)) == 1

    def f(kernel, x):
        return nnx.merge(graphdef, jax.tree.map(lambda _: kernel, state))(x)

    return f


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_equals_nnx_conv_transpose_forward_and_grads(shape, method):
    x, kernel, probe = case(shape)
    c_in, c_out = shape[3], shape[4]
    new = apply_fn(Deconv4x2(c_in, c_out, method=method, rngs=nnx.Rngs(0)))
    old = apply_fn(reference(c_in, c_out))
    assert rel(new(kernel, x), old(kernel, x)) <= TOL

    def grads(f):
        return jax.jit(jax.grad(lambda k, v: jnp.sum(f(k, v) * probe), argnums=(0, 1)))(kernel, x)

    (gk_new, gx_new), (gk_old, gx_old) = grads(new), grads(old)
    assert rel(gk_new, gk_old) <= TOL
    assert rel(gx_new, gx_old) <= TOL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_equals_torch_conv_transpose2d(shape, method):
    x, kernel, _ = case(shape, seed=1)
    ours = apply_fn(Deconv4x2(shape[3], shape[4], method=method, rngs=nnx.Rngs(0)))(kernel, x)
    w = torch.from_numpy(layout.to_torch("conv", np.asarray(kernel)))  # (Cin, Cout, 4, 4)
    xt = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)
    ref = torch.nn.functional.conv_transpose2d(xt, w, stride=2, padding=1).permute(0, 2, 3, 1).numpy()
    assert rel(ours, ref) <= TOL


def test_param_matches_nnx_conv_transpose():
    """Same param name, shape, dtype and initial values (same initializer and rng draw)."""
    new = Deconv4x2(6, 4, rngs=nnx.Rngs(3))
    old = nnx.ConvTranspose(
        6, 4, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), use_bias=False, transpose_kernel=True, rngs=nnx.Rngs(3)
    )
    s_new, s_old = nnx.state(new, nnx.Param), nnx.state(old, nnx.Param)
    assert jax.tree.structure(s_new) == jax.tree.structure(s_old)
    assert new.kernel.shape == old.kernel.shape == (4, 4, 4, 6)
    assert new.kernel.dtype == old.kernel.dtype == jnp.float32
    np.testing.assert_array_equal(new.kernel[...], old.kernel[...])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv1x1_equals_nnx_conv(dtype):
    """Same params and initial values as nnx.Conv(k=1); the matmul gives its outputs and gradients."""
    new, old = Conv1x1(6, 5, dtype=dtype, rngs=nnx.Rngs(4)), nnx.Conv(6, 5, (1, 1), dtype=dtype, rngs=nnx.Rngs(4))
    s_new, s_old = nnx.state(new, nnx.Param), nnx.state(old, nnx.Param)
    assert jax.tree.structure(s_new) == jax.tree.structure(s_old)
    jax.tree.map(np.testing.assert_array_equal, s_new, s_old)
    new.bias[...] = jnp.linspace(-1.0, 1.0, 5)  # a non-zero bias, so its gradient is tested too
    old.bias[...] = new.bias[...]
    x = jax.random.normal(jax.random.key(0), (2, 4, 3, 6))

    def loss(module, x):
        return jnp.sum(jnp.sin(module(x).astype(jnp.float32)))

    (v_new, (g_new, gx_new)), (v_old, (g_old, gx_old)) = (
        nnx.value_and_grad(loss, argnums=(0, 1))(m, x) for m in (new, old)
    )
    assert new(x).dtype == old(x).dtype == dtype
    tol = 1e-5 if dtype == jnp.float32 else 2e-2  # float32: summation order only
    assert abs(float(v_new - v_old)) <= tol * abs(float(v_old)) + tol
    for a, b in [
        (g_new["kernel"][...], g_old["kernel"][...]),
        (g_new["bias"][...], g_old["bias"][...]),
        (gx_new, gx_old),
    ]:
        assert rel(a.astype(jnp.float32), b.astype(jnp.float32)) <= tol


@pytest.mark.parametrize("method", METHODS)
def test_bfloat16_compute_dtype(method):
    """Params stay float32, compute runs in the module dtype, as in nnx.ConvTranspose(dtype=bf16)."""
    x, kernel, _ = case((2, 4, 3, 8, 8), seed=2)
    new_m = Deconv4x2(8, 8, dtype=jnp.bfloat16, method=method, rngs=nnx.Rngs(0))
    assert new_m.kernel.dtype == jnp.float32
    new = apply_fn(new_m)(kernel, x)
    old = apply_fn(reference(8, 8, dtype=jnp.bfloat16))(kernel, x)
    assert new.dtype == old.dtype == jnp.bfloat16
    assert rel(new.astype(jnp.float32), old.astype(jnp.float32)) <= 2e-2


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="method"):
        Deconv4x2(2, 2, method="3x3", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("head_cls", [PoseHead, DepthHead, NormalHead])
def test_heads_keep_their_param_tree(head_cls):
    head = head_cls(16, **({"num_keypoints": 5} if head_cls is PoseHead else {}), channels=8, rngs=nnx.Rngs(0))
    params = dict(nnx.to_flat_state(nnx.state(head, nnx.Param)))
    deconvs = {k: v for k, v in params.items() if k[0] == "deconv_layers"}
    assert deconvs and all(k[-1] == "kernel" and len(k) == 3 for k in deconvs)
    assert params[("deconv_layers", 0, "kernel")].shape == (4, 4, 8, 16)
    out = head(jnp.zeros((1, 2, 3, 16)))
    n = len(deconvs)
    assert out.shape[1:3] == (2 * 2**n, 3 * 2**n)


@pytest.mark.parametrize("head_cls", [PoseHead, DepthHead, NormalHead])
def test_head_remat_keeps_outputs_and_gradients(head_cls):
    """remat=True changes only what the backward keeps: same params, outputs and gradients."""
    kw = {"num_keypoints": 5} if head_cls is PoseHead else {"dropout": 0.0}
    plain = head_cls(16, **kw, channels=8, rngs=nnx.Rngs(0))
    remat = head_cls(16, **kw, channels=8, remat=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 2, 3, 16))

    def loss(head, x):
        return jnp.sum(jnp.sin(head(x)))

    grads = {}
    for name, head in (("plain", plain), ("remat", remat)):
        value, (g_params, g_x) = nnx.value_and_grad(loss, argnums=(0, 1))(head, x)
        grads[name] = (value, nnx.to_flat_state(g_params), g_x)
    assert float(grads["plain"][0]) == pytest.approx(float(grads["remat"][0]), rel=1e-6)
    flat_plain, flat_remat = dict(grads["plain"][1]), dict(grads["remat"][1])
    assert flat_plain.keys() == flat_remat.keys()
    for path in flat_plain:
        assert rel(flat_remat[path][...], flat_plain[path][...]) <= 1e-5, path
    assert rel(grads["remat"][2], grads["plain"][2]) <= 1e-5
    # The rematerialised backward recomputes the layers: the jaxpr holds checkpoint (remat) calls.
    jaxprs = {
        n: str(jax.make_jaxpr(lambda v, h=h: jax.grad(lambda u: loss(h, u))(v))(x))
        for n, h in (("plain", plain), ("remat", remat))
    }
    assert "remat" in jaxprs["remat"] and "remat" not in jaxprs["plain"]
