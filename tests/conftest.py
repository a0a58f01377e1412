"""Fixtures and settings for the whole suite (``tests/unit`` and ``tests/integration``); the shared
helpers are a package, ``tests.helpers``.

Every test under ``tests/integration/`` is marked ``integration`` and every one under ``tests/unit/``
``unit``, so ``-m unit`` and ``-m "not integration"`` select the same fast set as ``tests/unit``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

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

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Mark each test by its folder: ``unit`` (seconds each) or ``integration`` (runs, subprocesses,
    several devices or processes)."""
    for item in items:
        kind = Path(item.fspath).relative_to(HERE).parts[0]
        if kind in ("unit", "integration"):
            item.add_marker(getattr(pytest.mark, kind))


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
