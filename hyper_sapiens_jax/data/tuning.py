"""A tuning split carved from the real training images, so hyperparameters never see validation.

With ``config.data.tuning_images = N`` (> 0), N images of the real training set (``syrip_real``:
the testbed's, or ``config.data.syrip_real_ann``) are drawn (seeded by ``config.data.tuning_seed``)
and held out: training reads the rest, and every evaluation (the stages', the demo's zero-shot
row, the study's) scores the held-out N instead of the validation split. Sweeps of the loss
weights and schedules run with it set; the reported numbers are then re-measured on validation
with it unset.

The two derived COCO files (``train.json``: the remaining images and their annotations;
``tune.json``: the held-out ones) are written once under ``config.data.tuning_dir``, in a folder
named by the source file's sha256, N and the seed; the images stay where they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

TRAIN_FILE, TUNE_FILE = "train.json", "tune.json"


class TuningSplitError(ValueError):
    """The real training set cannot give the requested tuning split; the message names the file."""


def carve(ann_file: str | Path, count: int, seed: int, out_root: str | Path) -> tuple[Path, Path]:
    """Split the COCO keypoint file ``ann_file`` by image into (train.json, tune.json) paths.

    ``count`` images that have at least one annotation are held out (every annotation of an image
    goes with it, so no person is split across the two). Deterministic in (file contents, count,
    seed); an existing split is reused.
    """
    ann_file = Path(ann_file)
    try:
        raw = ann_file.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise TuningSplitError(
            f"{ann_file}: missing annotation file (config.data.tuning_images needs the real training set)"
        ) from None
    except (OSError, ValueError) as e:  # not JSON, not UTF-8, a number with too many digits
        raise TuningSplitError(f"{ann_file}: unreadable annotation file ({e})") from None
    except RecursionError:
        raise TuningSplitError(f"{ann_file}: unreadable annotation file (JSON nested too deeply)") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise TuningSplitError(f"{ann_file}: not a COCO file (no 'images' / 'annotations' lists)")
    key = hashlib.sha256(raw + f"|{count}|{seed}".encode()).hexdigest()[:16]
    out = Path(out_root).expanduser() / key
    train, tune = out / TRAIN_FILE, out / TUNE_FILE
    if train.is_file() and tune.is_file():
        return train, tune

    annotated = sorted({a["image_id"] for a in data["annotations"] if "image_id" in a})
    if not 0 < count < len(annotated):
        raise TuningSplitError(
            f"{ann_file}: config.data.tuning_images={count} but the file has "
            f"{len(annotated)} annotated images; hold out between 1 and {len(annotated) - 1}"
        )
    held = {int(i) for i in np.random.default_rng(seed).choice(annotated, size=count, replace=False)}

    def subset(keep) -> dict:
        part = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        part["images"] = [im for im in data["images"] if keep(im.get("id"))]
        part["annotations"] = [a for a in data["annotations"] if keep(a.get("image_id"))]
        return part

    out.mkdir(parents=True, exist_ok=True)
    for path, part in ((tune, subset(lambda i: i in held)), (train, subset(lambda i: i not in held))):
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(part, f)
        os.replace(tmp, path)  # atomic: a concurrent or killed writer never leaves half a file
    return train, tune
