"""The data readers' error (``sources`` and ``coco_schema`` both raise it; ``sources`` re-exports it)."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A data file or annotation is unusable. ``where`` names it; the message is "where: reason"."""

    def __init__(self, where: str | Path, reason: str | None = None):
        self.where, self.reason = str(where), reason
        super().__init__(f"{where}: {reason}" if reason else str(where))
