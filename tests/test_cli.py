"""The console scripts of pyproject.toml point at callables that exist (a rename breaks this test)."""

import importlib
import tomllib

from conftest import REPO


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"hyper-sapiens", "hyper-sapiens-study", "sapiens-torch-to-flax"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr, None)
        assert callable(fn), f"{name} -> {target}"
        assert fn.__doc__, f"{name} -> {target} has no docstring for --help readers"
