"""Shared test helpers, imported as ``from tests.helpers import ...`` (pytest puts the repository
root on ``sys.path``, pyproject.toml ``pythonpath``; subprocesses get it through ``subprocess_env``).

``torch_sapiens`` is the PyTorch reference of the Sapiens model, ``train`` the tiny-model train-step
helpers; this module holds the small ones: paths, the parity measure, the testbed config shortcuts,
processes and ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
from flax import nnx

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.models.sapiens import Sapiens
from hyper_sapiens_jax.models.weights import abstract_model
from hyper_sapiens_jax.testbed import bodies

REPO = Path(__file__).resolve().parents[2]

# Execution modes of the backbone: parity must hold in each.
MODES = {
    "plain": {},
    "remat": {"remat": True},
    "scan": {"scan_blocks": True},
    "scan+remat": {"scan_blocks": True, "remat": True},
}


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| — the parity measure of the foundation issue."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def numpy_state_dict(module, prefix: str = "") -> dict[str, np.ndarray]:
    """A torch module's state dict as numpy views (no copies), keys optionally prefixed."""
    return {prefix + k: v.detach().numpy() for k, v in module.state_dict().items()}


def point_at_testbed(config, p):
    """Set ``config.data``'s dataset paths to a testbed's ``Paths`` (both MINI-RGBD sequences, source 'files')."""
    d = config.data
    d.source = "files"
    d.syrip_syn_ann, d.syrip_syn_images = str(p.train_syn_json), str(p.train_syn_images)
    d.syrip_real_ann, d.syrip_real_images = str(p.train_real_json), str(p.train_real_images)
    d.val_ann, d.val_images = str(p.val_json), str(p.val_images)
    d.mini_rgbd_root, d.mini_rgbd_sequences = str(p.mini_rgbd), (1, 2)
    d.skeletons = str(p.skeletons)
    return config


def tiny_data_config(testbed_paths, stage: int = 2):
    """configs/stageN.py:tiny pointed at the test's testbed."""
    config = point_at_testbed(load_config_file(REPO / f"configs/stage{stage}.py", "tiny"), testbed_paths)
    config.model.image_size = (64, 48)
    return config


def truncate_largest(directory: Path) -> Path:
    """Cut the largest file under ``directory`` to half its size (a write cut short); returns it."""
    victim = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    return victim


def free_port() -> int:
    """An unused localhost port (for a jax.distributed coordinator)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def subprocess_env(devices: int = 1) -> dict[str, str]:
    """Environment for a CPU JAX subprocess with ``devices`` (fake) devices and the repo importable."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}" if devices > 1 else "",
    }


def with_options(model: Sapiens, **overrides) -> Sapiens:
    """The same parameters (shared, not copied) under a config with other execution options
    (remat, remat_heads, scan_blocks, dtype, attention): those live in the graph, not in the parameters."""
    config = model.config.replace(**overrides)
    return nnx.merge(nnx.graphdef(abstract_model(config)), nnx.state(model))


def rest_skeletons(shape: bodies.InfantShape) -> bodies.Skeletons:
    """The testbed infants' rest pose (standing, T-pose arms) in the body frame, pelvis at the origin."""
    n = shape.body_length.shape[0]
    angles = np.zeros((n, bodies.NUM_JOINTS, 3))
    joints, frames = bodies.forward_kinematics(
        shape.offsets, bodies.euler_to_matrix(angles), np.broadcast_to(np.eye(3), (n, 3, 3)), np.zeros((n, 3))
    )
    return bodies.Skeletons(joints, frames, angles, np.full(n, -1), shape)
