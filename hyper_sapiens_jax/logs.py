"""Console logging for the command-line tools: our messages at INFO, library chatter at WARNING."""

from __future__ import annotations

import logging

_OURS = ("hyper_sapiens_jax", "convert_weights")


def setup_logging(level: int = logging.INFO) -> None:
    """Plain ``message`` lines for this project's loggers; Orbax/absl/JAX INFO logs silenced."""
    # force=True: absl (imported by Orbax) installs its own root handler first.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
    for name in _OURS:
        logging.getLogger(name).setLevel(level)
    for noisy in ("absl", "orbax", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:  # pragma: no cover
        pass
