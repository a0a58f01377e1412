"""Console logging for the command-line tools: our messages at INFO, library chatter at WARNING."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from absl import logging as absl_logging
from tqdm import tqdm

T = TypeVar("T")

_OURS = ("hyper_sapiens_jax", "convert_weights")


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines for this project's loggers; Orbax/absl/JAX INFO logs silenced."""
    # force=True: absl (imported by Orbax) installs its own root handler first.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    for name in _OURS:
        logging.getLogger(name).setLevel(level)
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)


def progress_enabled() -> bool:
    """Progress bars only on an interactive terminal, and never under CI (``CI`` set) or
    ``HYPER_SAPIENS_NO_PROGRESS=1``."""
    if os.environ.get("CI") or os.environ.get("HYPER_SAPIENS_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """``items`` with a tqdm bar on stderr (see ``progress_enabled``); plain ``items`` otherwise."""
    if not progress_enabled():
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True, leave=False)
