"""The console scripts of pyproject.toml point at documented callables (a rename breaks this test)."""

import subprocess
import sys
import tomllib

from conftest import REPO


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"hyper-sapiens", "hyper-sapiens-study", "sapiens-torch-to-flax"} <= set(scripts)
    # One process per script: the absl CLIs each define --config when imported.
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        check = f"import {module} as m; f = getattr(m, {attr!r}); assert callable(f) and f.__doc__"
        done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, check=False)
        assert done.returncode == 0, f"{name} -> {target}: {done.stderr[-800:]}"
