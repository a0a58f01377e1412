"""Numerical parity of the Flax Sapiens with an independent PyTorch reference (fp32, every mode)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from convert_weights import layout
from convert_weights.torch_to_flax import convert_state_dicts
from hyper_sapiens_jax.models.weights import build_model
from tests.helpers import MODES, numpy_state_dict, rel_err, with_options
from tests.helpers import torch_sapiens as ts

TOL = 1e-4  # max |flax - torch| <= TOL * max |torch|


def shared_backbone_refs(arch, image_size, seed=0):
    """A torch pose model plus standalone depth/normal heads reading the same backbone features."""
    pose = ts.make_reference(arch, "pose", image_size, seed=seed)
    dim, _, _, _, depth_ch, normal_ch = ts.ARCHS[arch][:6]
    patch = ts.patch_size(arch)
    depth = ts.randomize_(ts.make_head("depth", dim, depth_ch, patch=patch), seed + 1)
    normal = ts.randomize_(ts.make_head("normal", dim, normal_ch, patch=patch), seed + 2)
    state_dicts = {
        "pose": numpy_state_dict(pose),
        "depth": numpy_state_dict(depth, "decode_head."),
        "normal": numpy_state_dict(normal, "decode_head."),
    }
    return pose, {"depth": depth, "normal": normal}, state_dicts


def torch_outputs(pose_model, decode_heads, images):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
    with torch.no_grad():
        feats = pose_model.backbone(x)
        out = {"features": nhwc(feats), "pose": nhwc(pose_model.head(feats))}
        for name, head in decode_heads.items():
            out[name] = nhwc(head(feats))
    return out


def flax_model(state_dicts, image_size):
    sources = {r: f"<{r}>" for r in state_dicts}
    config, params, _ = convert_state_dicts(state_dicts, sources, image_size)
    return build_model(config, params)


def assert_parity(model, images, expected, label):
    out = jax.jit(lambda s, x: nnx.merge(nnx.graphdef(model), s)(x))(nnx.state(model), images)
    assert set(out) == set(expected)
    for name, ref in expected.items():
        err = rel_err(np.asarray(out[name]), ref)
        print(f"{label:24s} {name:9s} rel err {err:.2e}")
        assert err <= TOL, f"{label} {name}: {err:.2e}"


@pytest.fixture(scope="module")
def tiny_case():
    image_size = (64, 48)
    pose, heads, sds = shared_backbone_refs("tiny", image_size)
    images = np.random.default_rng(1).standard_normal((2, *image_size, 3)).astype(np.float32)
    return flax_model(sds, image_size), images, torch_outputs(pose, heads, images)


@pytest.mark.parametrize("mode", list(MODES))
def test_tiny_parity_every_head_every_mode(tiny_case, mode):
    model, images, expected = tiny_case
    assert_parity(with_options(model, **MODES[mode]), images, expected, f"tiny {mode}")


def test_patch8_preset_parity_every_head():
    """The ``cpu_p8`` preset (patch 8, one deconv fewer per head, the same output strides) against
    the PyTorch reference built at patch 8."""
    image_size = (64, 48)
    pose, heads, sds = shared_backbone_refs("cpu_p8", image_size, seed=4)
    images = np.random.default_rng(2).standard_normal((2, *image_size, 3)).astype(np.float32)
    model = flax_model(sds, image_size)
    assert model.config.arch == "cpu_p8" and model.config.grid == (8, 6)
    expected = torch_outputs(pose, heads, images)
    assert expected["features"].shape == (2, 8, 6, 160) and expected["pose"].shape == (2, 16, 12, 17)
    assert expected["depth"].shape == (2, 64, 48, 1) and expected["normal"].shape == (2, 32, 24, 3)
    assert_parity(model, images, expected, "cpu_p8")


@pytest.mark.parametrize("task", ["pose", "depth", "normal"])
def test_single_task_checkpoint_parity(task):
    """Each released model type on its own, with its own patch padding (0 for depth)."""
    image_size = (64, 32)
    ref = ts.make_reference("tiny", task, image_size, seed=3)
    model = flax_model({task: numpy_state_dict(ref)}, image_size)
    assert model.config.patch_padding == (0 if task == "depth" else 2)
    images = np.random.default_rng(2).standard_normal((1, *image_size, 3)).astype(np.float32)
    feats, head = ts.run(ref, images)
    assert_parity(model, images, {"features": feats, task: head}, f"tiny {task}-only")


def test_sapiens_0_3b_parity_every_mode():
    """The real sapiens_0.3b shapes (D=1024, 24 layers, 16 heads, 768/384 heads) at 256x192."""
    image_size = (256, 192)
    pose, heads, sds = shared_backbone_refs("sapiens_0.3b", image_size)
    images = np.random.default_rng(1).standard_normal((1, *image_size, 3)).astype(np.float32)
    expected = torch_outputs(pose, heads, images)
    assert expected["pose"].shape == (1, 64, 48, 17)
    assert expected["depth"].shape == (1, 256, 192, 1)
    assert expected["normal"].shape == (1, 128, 96, 3)
    model = flax_model(sds, image_size)
    assert model.config.arch == "sapiens_0.3b"
    for mode, options in MODES.items():
        assert_parity(with_options(model, **options), images, expected, f"sapiens_0.3b {mode}")


def _torch_loss_grads(pose, heads, images, weights):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for m in (pose, *heads.values()):
        m.zero_grad()
    feats = pose.backbone(x)
    outs = {"features": feats, "pose": pose.head(feats), **{n: h(feats) for n, h in heads.items()}}
    loss = sum((o.permute(0, 2, 3, 1) * torch.from_numpy(weights[n])).sum() for n, o in outs.items())
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in pose.named_parameters()}
    for name, head in heads.items():
        grads.update({f"decode_head.{name}.{k}": p.grad.numpy() for k, p in head.named_parameters()})
    return grads


def test_gradients_match_torch_in_every_mode(tiny_case):
    """Backward parity: d(loss)/d(params) equals torch autograd's, in every remat/scan mode."""
    image_size = (64, 48)
    pose, heads, sds = shared_backbone_refs("tiny", image_size, seed=5)
    images = np.random.default_rng(3).standard_normal((2, *image_size, 3)).astype(np.float32)
    model = flax_model(sds, image_size)
    shapes = {k: v.shape for k, v in torch_outputs(pose, heads, images).items()}
    rng = np.random.default_rng(4)
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    torch_grads = _torch_loss_grads(pose, heads, images, weights)

    config = model.config
    rules = {"pose": layout.model_rules(config, ["pose"])}
    for name in ("depth", "normal"):
        rules[name] = [
            layout.Rule(r.key.replace("decode_head.", f"decode_head.{name}."), r.path, r.kind)
            for r in layout.head_rules(name)
        ]

    def loss_fn(state, graphdef):
        out = nnx.merge(graphdef, state)(images)
        return sum((out[n] * weights[n]).sum() for n in out)

    for mode, options in MODES.items():
        m = with_options(model, **options)
        graphdef, state = nnx.split(m)
        grads = jax.jit(jax.grad(loss_fn), static_argnums=1)(state, graphdef)
        flat = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}
        scale = max(float(np.abs(g).max()) for g in torch_grads.values())
        for r in [r for rs in rules.values() for r in rs]:
            ref = layout.to_flax(r.kind, torch_grads[r.key])
            if ".conv_layers." in r.key and r.key.endswith(".bias"):
                # A bias followed by InstanceNorm cancels out: its true gradient is exactly 0.
                assert np.abs(flat[r.path]).max() <= 1e-5 * scale, r.key
                continue
            err = rel_err(flat[r.path], ref)
            assert err <= 1e-4, f"{mode}: grad of {r.key} rel err {err:.2e}"


def test_bf16_compute_keeps_fp32_params_and_stays_close(tiny_case):
    model, images, expected = tiny_case
    bf16 = with_options(model, dtype="bfloat16")
    for _, v in nnx.to_flat_state(nnx.state(bf16, nnx.Param)):
        assert v.get_value().dtype == jnp.float32
    out = bf16(jnp.asarray(images))
    for name, ref in expected.items():
        assert out[name].dtype == jnp.float32  # outputs (and so losses) in fp32
        err = rel_err(np.asarray(out[name]), ref)
        assert 0 < err < 5e-2, f"{name}: bf16 rel err {err:.2e}"  # > 0: bf16 really was used


def test_attention_implementation_is_selectable(tiny_case, monkeypatch):
    model, images, _ = tiny_case
    seen = []
    real = jax.nn.dot_product_attention

    def spy(*args, implementation=None, **kw):
        seen.append(implementation)
        return real(*args, implementation="xla", **kw)  # cuDNN is GPU-only; record, then run on CPU

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    with_options(model, attention="cudnn")(jnp.asarray(images[:1]))
    with_options(model, attention="xla")(jnp.asarray(images[:1]))
    n = model.config.spec.num_layers
    assert seen == ["cudnn"] * n + ["xla"] * n
