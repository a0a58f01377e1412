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
