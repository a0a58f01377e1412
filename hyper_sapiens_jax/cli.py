"""The one command-line style of the project's tools: argparse, ``--kebab-case`` flags, the module
docstring as ``--help``, and ``main(argv=None) -> int`` (0 on success, 1 with a one-line error).

Tools that run a config file take ``--config FILE[:ARG]`` and any number of
``--config.FIELD=VALUE`` overrides. Those two go through ml_collections' ``config_flags`` (typed
overrides, a locked config: a misspelt field is an error naming it) on a private flag registry, so
no absl global state is involved and the tools import side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from absl import flags
from ml_collections import config_flags

from hyper_sapiens_jax.config import ConfigError

CONFIG_HELP = (
    "config file, e.g. configs/stage2.py:tiny; override any field with --config.FIELD=VALUE "
    "(e.g. --config.num_steps=100 --config.model.image_size='(128,96)')"
)


def parser(doc: str | None, *, config: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser whose help is ``doc`` (the module docstring) as written; with ``config``,
    the required ``--config FILE[:ARG]`` flag (``parse`` resolves it to a ConfigDict)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if config:
        p.add_argument("--config", required=True, metavar="FILE[:ARG]", help=CONFIG_HELP)
    return p


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the arguments for argparse, the ``--config.FIELD=VALUE`` overrides; ``--config.F VALUE`` too)."""
    rest, overrides = [], []
    args = list(argv)
    while args:
        a = args.pop(0)
        if a.startswith("--config."):
            if "=" not in a and args:
                a = f"{a}={args.pop(0)}"
            overrides.append(a)
        else:
            rest.append(a)
    return rest, overrides


def load_config(spec: str, overrides: Sequence[str] = ()) -> Any:
    """The ConfigDict of ``spec`` ('FILE[:ARG]') with ``overrides`` ('--config.FIELD=VALUE') applied
    by ml_collections (locked: unknown fields are refused). Raises ``ConfigError`` (a ValueError)
    naming the problem."""
    path = Path(spec.split(":", 1)[0])
    if not path.is_file():
        raise ConfigError(f"--config {spec}: no config file {path.absolute()}")
    registry = flags.FlagValues()
    argv = ["prog", f"--config={spec}", *overrides]
    config_flags.DEFINE_config_file("config", None, CONFIG_HELP, flag_values=registry, lock_config=True, sys_argv=argv)
    try:
        registry(argv)
        return registry.config
    except (flags.Error, OSError, AttributeError, KeyError, TypeError, ValueError, SyntaxError, RecursionError) as e:
        raise ConfigError(f"--config {spec}: {e}") from None


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line). A parser made with ``config=True`` returns the
    loaded, overridden ConfigDict as ``args.config``; a bad config or override exits with usage."""
    argv = sys.argv[1:] if argv is None else list(argv)
    has_config = any(a.option_strings == ["--config"] for a in p._actions)
    rest, overrides = _split_overrides(argv) if has_config else (argv, [])
    args = p.parse_args(rest)
    if has_config:
        try:
            args.config = load_config(args.config, overrides)
        except ValueError as e:
            p.error(str(e))
    return args


def comma_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse ``type`` for comma-separated values of ``kind``: '0,1,2' -> [0, 1, 2]."""

    def convert(text: str) -> list[Any]:
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None

    convert.__name__ = f"list of {kind.__name__}"
    return convert


def run_main(fn: Callable[..., int], *args: Any, errors: tuple[type[BaseException], ...] = (ValueError,)) -> int:
    """``fn(*args)``'s return code; 1 with the error printed as one line (no traceback) for the
    expected ``errors`` (bad configs and data, training errors)."""
    try:
        return int(fn(*args) or 0)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
