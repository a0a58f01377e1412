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


def test_progress_bars_only_on_a_terminal_and_never_under_ci(monkeypatch, capsys):
    from hyper_sapiens_jax import logs

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HYPER_SAPIENS_NO_PROGRESS", raising=False)
    monkeypatch.setattr(logs.sys.stderr, "isatty", lambda: True, raising=False)
    assert logs.progress_enabled()
    assert list(logs.progress(iter(range(5)), "items", 5)) == [0, 1, 2, 3, 4]
    assert "items" in capsys.readouterr().err  # the bar was drawn
    monkeypatch.setenv("CI", "1")
    assert not logs.progress_enabled()
    assert list(logs.progress(range(3), "items")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
