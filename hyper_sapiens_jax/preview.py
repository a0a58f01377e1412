r"""See what the model is fed: build a config's training batches and write them out.

  python -m hyper_sapiens_jax.preview --config configs/stage2.py:tiny \
      [--config.data.syrip_real_ann=... --config.data.skip_bad_records=True] --batches 2 --out DIR

Writes ``DIR/summary.json``::

  {"batches": [{"counts": {"synthetic": n, "real": m}, "sources": {...}, "shapes": {...}}, ...],
   "skipped": [{"file": ..., "reason": ...}], "paths": {...}}

and ``DIR/batch_XXX.png``: per sample, the augmented crop with its target keypoints and skeleton,
the depth target and the normal target (grey where the sample has no such target).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.config import check_values
from hyper_sapiens_jax.data import visualize
from hyper_sapiens_jax.data.catalog import describe_paths, skipped_records
from hyper_sapiens_jax.data.pipeline import train_dataset, train_iterator
from hyper_sapiens_jax.data.sources import DataError
from hyper_sapiens_jax.jobs.inputs import build_train_mix, sample_config
from hyper_sapiens_jax.logs import setup_logging


def summarize(batch: dict[str, np.ndarray], names: list[str]) -> dict:
    """Counts per domain and per source, and the array shapes, of one batch."""
    real = int(batch["is_real"].sum())
    per_source = np.bincount(batch["source_id"], minlength=len(names))
    return {
        "counts": {"synthetic": len(batch["is_real"]) - real, "real": real},
        "sources": {n: int(c) for n, c in zip(names, per_source)},
        "shapes": {k: list(v.shape) for k, v in batch.items()},
    }


def run(config, num_batches: int, out: Path, max_panels: int = 8) -> dict:
    """Build ``num_batches`` training batches of ``config``; write the summary and PNG grids to ``out``.
    The config's values are checked first (``config.check_values``, as every job's are)."""
    check_values(config)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(out, f"cannot create the output folder ({e.strerror or e})") from None
    mix, paths = build_train_mix(config)
    names = [e.name for e in mix]
    dataset = train_dataset(mix, sample_config(config), seed=config.seed, num_batches=num_batches)
    summary = {"batches": [], "skipped": [], "paths": describe_paths(paths)}
    for b, batch in enumerate(train_iterator(dataset, worker_count=config.data.worker_count)):
        summary["batches"].append(summarize(batch, names))
        panels = []
        for i in range(min(len(batch["valid"]), max_panels)):
            sample = {k: v[i] for k, v in batch.items()}
            label = f"{names[sample['source_id']]} ({'real' if sample['is_real'] else 'synthetic'})"
            panels.append(visualize.sample_panel(sample, label))
        cv2.imwrite(str(out / f"batch_{b:03d}.png"), visualize.grid(panels)[..., ::-1])
    summary["skipped"] = skipped_records(e.source for e in mix)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """The ``hyper-sapiens-preview`` console script (``python -m hyper_sapiens_jax.preview``);
    ``--help`` lists the flags."""
    p = cli.parser(__doc__, config=True)
    p.add_argument("--batches", type=int, default=2, help="how many training batches to build")
    p.add_argument("--out", required=True, help="output folder for summary.json and the PNG grids")
    p.add_argument("--max-panels", type=int, default=8, help="samples drawn per batch grid")
    args = cli.parse(p, argv)
    setup_logging()
    try:  # a bad config, data file or image (ConfigError, DataError): one line, as main prints it
        summary = run(args.config, args.batches, Path(args.out), args.max_panels)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for i, b in enumerate(summary["batches"]):
        print(f"batch {i}: {b['counts']} {b['sources']}")
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} bad records (listed in summary.json)")
    print(f"wrote {args.out}/summary.json and {len(summary['batches'])} PNG grids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
