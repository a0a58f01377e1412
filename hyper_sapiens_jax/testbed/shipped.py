"""The testbed foundation that ships with the package (``testbed/foundation/``): its file names and
the check of its manifest. ``jobs/foundation.py`` regenerates these files; ``configs/demo.py`` and
the tests read them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# The shipped foundation, read by configs/demo.py.
FOUNDATION_DIR = Path(__file__).parent / "foundation"
MANIFEST_FILE = "manifest.json"
FOUNDATION_FILES = {
    "pose": "sapiens_cpu_humans_pose.safetensors",
    "depth": "sapiens_cpu_humans_depth.safetensors",
    "normal": "sapiens_cpu_humans_normal.safetensors",
}
PRETRAIN_FILE = "sapiens_cpu_humans_pretrain_clean.safetensors"


def sha256(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_manifest(directory: str | Path = FOUNDATION_DIR) -> dict[str, Any]:
    """The manifest of a foundation directory, after checking every listed file's size and sha256.
    Raises ValueError naming the first file that is missing or does not match."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{directory / MANIFEST_FILE}: unreadable foundation manifest: {e}") from None
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ValueError(f"{path}: listed in {MANIFEST_FILE} but missing")
        if path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            raise ValueError(f"{path}: does not match its sha256 / size in {MANIFEST_FILE}")
    return manifest
