"""Shared helpers for the test suite: the torch reference and small conversion shortcuts."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for ``import torch_sapiens``
REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent JAX compilation cache for the run, shared by this process and every subprocess it
# starts (they inherit the environment): the suite compiles the same tiny train steps in dozens of
# jobs, and a cache hit loads the very executable a compile would produce. Removed at exit; a
# cache given in the environment is used as it is.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="hyper-sapiens-tests-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def testbed(tmp_path_factory):
    """A small synthetic testbed (SyRIP layout + MINI-RGBD layout + skeletons), made once per run."""
    from hyper_sapiens_jax.testbed.writer import write_testbed

    return write_testbed(
        tmp_path_factory.mktemp("testbed") / "tb",
        num_syn=12,
        num_real=10,
        num_val=7,
        num_sequences=2,
        frames_per_sequence=6,
        num_skeletons=50,
        seed=0,
    )


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
    from hyper_sapiens_jax.config import load_config_file

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
