"""Shared helpers for the test suite: the torch reference and small conversion shortcuts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for ``import torch_sapiens``

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
    from hyper_sapiens_jax.data.synthetic import write_testbed
    return write_testbed(tmp_path_factory.mktemp("testbed") / "tb", num_syn=12, num_real=10, num_val=7,
                         num_sequences=2, frames_per_sequence=6, num_skeletons=50, seed=0)


def tiny_data_config(testbed_paths, stage: int = 2):
    """configs/stageN.py:tiny pointed at the test's testbed."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"stage{stage}", Path(__file__).parents[1] / f"configs/stage{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny")
    p = testbed_paths
    d = config.data
    d.syrip_syn_ann, d.syrip_syn_images = str(p.train_syn_json), str(p.train_syn_images)
    d.syrip_real_ann, d.syrip_real_images = str(p.train_real_json), str(p.train_real_images)
    d.val_ann, d.val_images = str(p.val_json), str(p.val_images)
    d.mini_rgbd_root, d.mini_rgbd_sequences = str(p.mini_rgbd), "01-02"
    d.skeletons = str(p.skeletons)
    config.model.image_size = (64, 48)
    return config
