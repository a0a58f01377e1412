"""The named data sources of a run, from resolved dataset paths: 'syrip_syn', 'syrip_real', 'val'
(COCO keypoint sets), 'mini_rgbd' and 'unlabeled' (person boxes on unlabelled images), their domains
(which decide a mix's synthetic:real counts), and a seeded subset of a source for few-label runs.

The paths come from the job (``jobs/inputs.py`` resolves ``config.data``: the configured files or
the generated testbed); this module reads no config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hyper_sapiens_jax.data.sources import CocoKeypointSource, DataError, MiniRgbdSource
from hyper_sapiens_jax.data.unlabeled import UnlabeledSource

# Source name -> domain. Domains decide the synthetic:real batch counts.
# 'humans' is the testbed's human corpus (adults and children; testbed/humans.py), on which the
# testbed foundation is fine-tuned.
SOURCE_DOMAINS = {"syrip_syn": "synthetic", "mini_rgbd": "synthetic", "syrip_real": "real", "humans": "real"}


def build_source(name: str, paths: dict[str, Any], skip_bad_records: bool = False):
    """One named source ('syrip_syn', 'syrip_real', 'mini_rgbd', 'val', 'unlabeled') from resolved
    paths ('unlabeled': a ``data.unlabeled.UnlabeledSource``); a DataError names a missing path."""
    if name == "unlabeled":
        if not paths.get("unlabeled_images"):
            raise DataError("config.data.unlabeled_images is not set but the run uses the 'unlabeled' source")
        return UnlabeledSource(
            paths["unlabeled_images"],
            paths.get("unlabeled_boxes") or None,
            paths.get("unlabeled_image_list") or None,
            min_score=float(paths.get("unlabeled_min_score", 0.0) or 0.0),
            skip_bad_records=skip_bad_records,
        )
    if name == "mini_rgbd":
        if not paths.get("mini_rgbd_root"):
            raise DataError("config.data.mini_rgbd_root is not set but the mix uses 'mini_rgbd'")
        return MiniRgbdSource(paths["mini_rgbd_root"], paths["mini_rgbd_sequences"], skip_bad_records=skip_bad_records)
    prefix = {"syrip_syn": "syrip_syn", "syrip_real": "syrip_real", "val": "val"}[name]
    ann, images = paths.get(f"{prefix}_ann"), paths.get(f"{prefix}_images")
    if not ann or not images:
        raise DataError(
            f"config.data.{prefix}_ann and config.data.{prefix}_images must both be set for the '{name}' source"
        )
    domain = "synthetic" if name == "syrip_syn" else "real"
    return CocoKeypointSource(ann, images, domain=domain, skip_bad_records=skip_bad_records, name=name)


class Subset:
    """A seeded random subset of ``size`` records of a source (all of them when it holds fewer), for
    training on a few labels (``config.data.num_labeled``); the order of the kept records is the
    source's. Indexes like the source; ``skipped`` is the source's."""

    def __init__(self, source, size: int, seed: int = 0):
        n = len(source)
        chosen = np.random.default_rng(seed).permutation(n)[: min(size, n)]
        self.source, self.indices = source, np.sort(chosen)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[int(self.indices[int(index)])]

    @property
    def skipped(self) -> list[dict[str, str]]:
        return getattr(self.source, "skipped", [])

    @property
    def dense_targets(self) -> tuple[str, ...]:
        """The source's (``training.batch.dense_plan``); an AttributeError, as for the source, when
        the source does not say, so that the plan's default applies."""
        return self.source.dense_targets

    def __repr__(self) -> str:
        return f"Subset({self.source!r}, {len(self)} of {len(self.source)})"


def skipped_records(sources) -> list[dict[str, str]]:
    """Every record the given sources skipped (with skip_bad_records)."""
    return [s for src in sources for s in getattr(src, "skipped", [])]


def describe_paths(paths: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in paths.items() if isinstance(v, (str, Path))}
