"""The command lines: console scripts point at documented ``main``s, one argparse style with
kebab-case flags, config files with typed ``--config.FIELD=VALUE`` overrides; progress bars."""

import importlib
import re
import subprocess
import sys
import tomllib

import pytest

from hyper_sapiens_jax import cli
from tests.helpers import REPO


def test_console_scripts_resolve():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"hyper-sapiens", "hyper-sapiens-predict", "sapiens-torch-to-flax"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        check = f"import {module} as m; f = getattr(m, {attr!r}); assert callable(f) and f.__doc__"
        done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, check=False)
        assert done.returncode == 0, f"{name} -> {target}: {done.stderr[-800:]}"


def test_every_console_script_has_one_help_style(capsys):
    """``main(['--help'])`` of every script prints argparse usage and exits 0, in one process (no
    global flag registry), and every flag it lists is --kebab-case."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        with pytest.raises(SystemExit) as e:
            getattr(importlib.import_module(module), attr)(["--help"])
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith("usage:"), (name, out[:200])
        flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", out))
        assert flags and not [f for f in flags if "_" in f], (name, sorted(flags))


def test_config_overrides_are_typed_and_strict():
    config = cli.load_config(
        f"{REPO}/configs/stage2.py:tiny", ["--config.num_steps=7", "--config.model.image_size=(32,32)"]
    )
    assert config.num_steps == 7 and tuple(config.model.image_size) == (32, 32)
    p = cli.parser("doc", config=True)
    p.add_argument("--workdir")
    args = cli.parse(p, [f"--config={REPO}/configs/stage2.py:tiny", "--config.seed", "3", "--workdir", "w"])
    assert (args.config.seed, args.workdir) == (3, "w")  # the space-separated form too
    with pytest.raises(ValueError, match="num_stpes"):
        cli.load_config(f"{REPO}/configs/stage2.py:tiny", ["--config.num_stpes=7"])
    with pytest.raises(ValueError, match="num_steps"):
        cli.load_config(f"{REPO}/configs/stage2.py:tiny", ["--config.num_steps=many"])
    with pytest.raises(ValueError, match="nothing.py"):
        cli.load_config(f"{REPO}/configs/nothing.py")
    assert cli.comma_list(int)("0, 1,2") == [0, 1, 2]
    # The study's and the sweep's lists are strings on the command line, whatever they look like.
    for text in ("0", "0,1,2"):
        assert cli.load_config(f"{REPO}/configs/study.py:tiny", [f"--config.study.seeds={text}"]).study.seeds == text
    swept = cli.load_config(f"{REPO}/configs/sweep.py:tiny", ["--config.sweep.alphas=0.5"]).sweep.alphas
    assert swept == "0.5"


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
