"""Every ``python -m MODULE ...`` command in the README and in ``docs/*.md`` still parses.

The commands are read from fenced code blocks (``\\`` continuations joined, ``&&`` / ``;`` / ``|``
chains split, comments and leading ``VAR=value`` assignments dropped). For each one:

- the module exists (``importlib.util.find_spec``);
- ``python -m MODULE --help`` exits 0 (run once per module, ``JAX_PLATFORMS=cpu``) and lists every
  ``--flag`` the command uses (``--config.FIELD=VALUE`` overrides are checked below instead);
- a ``--config FILE[:ARG]`` loads with ``hyper_sapiens_jax.cli.load_config`` and the command's
  ``--config.FIELD=VALUE`` overrides, which refuses unknown fields. Placeholder values (``...``,
  ``$VAR``) are not set; their field must exist in the loaded config. A ``--config`` that is itself a
  placeholder (``CONFIG[:ARCH]``) is not loaded.

Each command is its own test, named ``FILE:LINE:MODULE``; a failure names the file, the line and
the command.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from tests.helpers import REPO

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Fences whose contents are shell commands (an unlabelled fence counts; python / json ones do not).
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "text"}
PYTHON = re.compile(r"^python3?$")
FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1", "&>"}


@dataclass
class Command:
    doc: str  # the file, relative to the repository
    line: int  # 1-based line of the command's first line
    text: str  # the command as written (continuations joined)
    module: str
    args: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def fenced_lines(text: str):
    """(line number, line) of every line inside a shell fenced code block."""
    fence = None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if fence is None:
                fence = stripped[3:].strip().lower()
            else:
                fence = None
            continue
        if fence is not None and fence in SHELL_FENCES:
            yield n, line


def logical_lines(text: str):
    """(first line number, text) with ``\\`` continuations joined."""
    buf, start = [], None
    for n, line in fenced_lines(text):
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        yield start, " ".join(part.strip() for part in buf)
        buf, start = [], None
    if buf:
        yield start, " ".join(part.strip() for part in buf)


def tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: a prose line, not a command
        return []


def segments(toks: list[str]):
    """The simple commands of a chain (split at ``&&``, ``;``, ``|``), redirections cut off."""
    seg: list[str] = []
    for t in toks:
        if t in SEPARATORS:
            if seg:
                yield seg
            seg = []
        else:
            seg.append(t)
    if seg:
        yield seg


def python_m(seg: list[str]) -> tuple[str, list[str]] | None:
    """(module, arguments) when ``seg`` is ``[VAR=value ...] python -m MODULE ARGS``."""
    i = 0
    while i < len(seg) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", seg[i]):
        i += 1
    if len(seg) < i + 3 or not PYTHON.match(seg[i]) or seg[i + 1] != "-m":
        return None
    args = []
    for t in seg[i + 3 :]:
        if t in REDIRECTS or t[:1] in "<>":
            break
        args.append(t)
    return seg[i + 2], args


def collect() -> list[Command]:
    found = []
    for path in DOC_FILES:
        rel = path.relative_to(REPO).as_posix()
        for line, text in logical_lines(path.read_text(encoding="utf-8")):
            for seg in segments(tokens(text)):
                hit = python_m(seg)
                if hit:
                    found.append(Command(rel, line, text.strip(), hit[0], hit[1]))
    return found


COMMANDS = collect()


def test_the_docs_document_commands():
    """The extraction itself works: the README's demo and test commands are found."""
    assert any(c.doc == "README.md" and c.module == "hyper_sapiens_jax.main" for c in COMMANDS)
    assert any(c.doc == "README.md" and c.module == "pytest" for c in COMMANDS)


def command_id(c: Command) -> str:
    return f"{c.doc}:{c.line}:{c.module}"


def _ids(commands: list[Command]) -> list[str]:
    ids, seen = [], {}
    for c in commands:
        base = command_id(c)
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


@functools.cache
def help_text(module: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of ``python -m module --help``, once per module."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    r = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return r.returncode, r.stdout + r.stderr


def strip_brackets(arg: str) -> str:
    """``[--flag`` / ``VALUE]`` / ``...]`` (usage-style optional parts) -> the bare text."""
    return arg.strip("[]")


def is_placeholder(value: str) -> bool:
    """A value written for the reader to fill in: ``...``, ``$VAR``, ``<...>``, ``FIELD`` / ``VALUE``."""
    return value in ("", "...") or "$" in value or value.startswith("<") or value.isupper()


def split_args(args: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(the --flags used, the --config spec or None, the --config.FIELD=VALUE overrides)."""
    flags, spec, overrides = [], None, []
    it = iter(strip_brackets(a) for a in args)
    for a in it:
        if a.startswith("--config."):
            if "=" not in a:  # --config.FIELD VALUE
                a = f"{a}={next(it, '')}"
            overrides.append(a)
        elif a == "--config" or a.startswith("--config="):
            flags.append("--config")
            spec = a.split("=", 1)[1] if "=" in a else next(it, None)
        elif a.startswith("--"):
            flags.append(a.split("=", 1)[0])
    return flags, spec, overrides


def has_field(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return False
    return True


@pytest.mark.parametrize("cmd", COMMANDS, ids=_ids(COMMANDS))
def test_documented_command_parses(cmd: Command, monkeypatch):
    where = cmd.where
    assert importlib.util.find_spec(cmd.module) is not None, f"{where}\n  no module {cmd.module!r}"

    rc, text = help_text(cmd.module)
    assert rc == 0, f"{where}\n  `python -m {cmd.module} --help` exited {rc}:\n{text[-2000:]}"
    offered = set(FLAG.findall(text))
    flags, spec, overrides = split_args(cmd.args)
    unknown = [f for f in flags if f not in offered]
    assert not unknown, f"{where}\n  flags not in `python -m {cmd.module} --help`: {unknown}"

    if spec is None or not spec.split(":", 1)[0].endswith(".py"):
        return  # no config, or a placeholder such as CONFIG[:ARCH]
    from hyper_sapiens_jax.cli import load_config

    settable, unset = [], []
    for o in overrides:
        name, value = o[len("--config.") :].split("=", 1)
        if is_placeholder(name.split(".")[-1]):
            continue  # --config.FIELD=VALUE in a usage line
        (unset if is_placeholder(value) else settable).append((name, o))
    monkeypatch.chdir(REPO)
    try:
        config = load_config(spec, [o for _, o in settable])
    except ValueError as e:
        pytest.fail(f"{where}\n  the config does not load: {e}")
    missing = [name for name, _ in unset if not has_field(config, name)]
    assert not missing, f"{where}\n  no such config fields: {missing}"
