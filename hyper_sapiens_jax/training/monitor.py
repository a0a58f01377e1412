"""What every training job (fine-tuning, MAE pretraining, the prior) shares around its loop: the
workdir lock, the metrics writer, the preemption (SIGTERM) flag, and the interval means with the
non-finite guard."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


LOCK_FILE = ".lock"


class WorkdirInUseError(RuntimeError):
    """Another job holds the workdir; the message names it (pid, host, start time, command)."""


class WorkdirError(RuntimeError):
    """The workdir cannot be used: it (or a folder above it) is a file, or it cannot be written.
    The message names the path."""


def _open_lock(workdir: Path) -> int:
    """Create ``workdir`` (and its parents) and open its lock file; ``WorkdirError`` naming the
    path when a file stands in the way or the folder cannot be written."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if not os.access(workdir, os.W_OK | os.X_OK):
            raise PermissionError
        return os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [workdir, *workdir.parents] if p.exists() and not p.is_dir()), workdir)
        raise WorkdirError(
            f"--workdir {workdir}: {blocker} is a file, not a folder; choose another --workdir"
        ) from None
    except PermissionError:
        raise WorkdirError(
            f"--workdir {workdir}: cannot be written (permission denied); choose another --workdir"
        ) from None
    except OSError as e:
        raise WorkdirError(f"--workdir {workdir}: cannot be used ({e.strerror or e})") from None


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[None]:
    """Hold ``WORKDIR/.lock`` (an exclusive ``flock``) for the duration of a job, so that a second job
    pointed at the same workdir refuses to start, naming the first, instead of both writing the
    same checkpoints. The kernel releases the lock when the holder exits in any way (SIGKILL
    included), so a killed run's workdir resumes at once. Process 0 takes it in a multi-process job.
    A workdir that is a file, or that cannot be written, is a ``WorkdirError`` naming it."""
    if jax.process_index() != 0:
        yield
        return
    path = Path(workdir).absolute() / LOCK_FILE
    fd = _open_lock(path.parent)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "unknown"
            raise WorkdirInUseError(
                f"{path.parent} is in use by another job ({holder}); wait for it to finish, stop it, "
                "or choose another --workdir"
            ) from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}: {' '.join(sys.argv)}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


class MetricsWriter:
    """Appends rows to JSON-lines files in ``workdir`` (``metrics.jsonl``, ``train_log.jsonl``) and,
    with ``tensorboard``, their numbers to TensorBoard events in ``workdir/tensorboard``. Process 0
    writes; the others are no-ops."""

    def __init__(self, workdir: Path, tensorboard: bool = True):
        self.workdir, self.main = Path(workdir), jax.process_index() == 0
        self.tb = None
        if self.main and tensorboard:
            from tensorboardX import SummaryWriter  # lazy: it imports torch when torch is installed

            self.tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def row(self, filename: str, row: dict[str, Any], prefix: str = "") -> None:
        """Append ``row`` (JSON-able, with a ``step``) to ``filename``; numbers go to TensorBoard as
        ``prefix/key``."""
        if not self.main:
            return
        with open(self.workdir / filename, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and np.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}" if prefix else k, v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class StopFlag:
    """SIGTERM (preemption notice) -> finish the step, save, exit cleanly. ``restore()`` puts the
    previous handler back."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        log.warning("SIGTERM: saving a checkpoint after this step, then exiting")
        self.requested = True

    def agreed(self) -> bool:
        """Whether any process was asked to stop (a collective: call it at the same steps everywhere)."""
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested))
        return bool(np.any(flags))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class IntervalClock:
    """Seconds per step over each log interval, from step ``first_step`` on; ``restart()`` after
    work that is not step time (evaluation, saves)."""

    def __init__(self, step: int):
        self.first_step, self._t = step, time.perf_counter()

    def lap(self, step: int) -> float:
        """Seconds per step since the last lap (or the start); the next interval starts at ``step``."""
        now = time.perf_counter()
        dt = (now - self._t) / max(step - self.first_step, 1)
        self.first_step, self._t = step, now
        return dt

    def restart(self) -> None:
        self._t = time.perf_counter()


def interval_means(
    pending: list[dict[str, Any]], first_step: int, step: int, last_saved: int | None, error: type[Exception]
) -> dict[str, float]:
    """Means of the per-step metrics of steps ``first_step``..``step`` (device arrays, fetched here),
    without their ``nonfinite`` flag; raises ``error`` naming the steps and the last checkpoint when
    any step's loss was not finite (so the caller never saves after it)."""
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(pending))
    means = {k: float(np.mean(v)) for k, v in stacked.items()}
    if means.pop("nonfinite", 0.0) > 0:
        raise error(
            f"non-finite loss between steps {first_step} and {step} ({means}); "
            f"no checkpoint written after step {last_saved}"
        )
    return means
