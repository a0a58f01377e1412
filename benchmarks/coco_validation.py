"""The cost of validating a COCO keypoint file once, when it is read (``data/coco_schema.py``).

Writes a synthetic COCO keypoint file of ``--annotations`` person annotations (17 keypoints, 3 per
image, COCO-sized 640x480 images, a segmentation polygon each, as real files carry) and times, as
medians of ``--repeats``:

  json        ``json.loads`` of the file (what any reader pays)
  schema      the pydantic v2 schemas of every image and annotation (``coco_schema.validate``)
  consistency keypoint count, visibility, num_keypoints, box and keypoints inside the image
              (``coco_schema.annotation_findings_bulk``)
  reader      the whole ``CocoKeypointSource`` construction (read, validate, resolve image paths,
              build the records); the image files exist but are not decoded

  python benchmarks/coco_validation.py --annotations 150000 --repeats 3 [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hyper_sapiens_jax.data import coco_schema
from hyper_sapiens_jax.data.sources import CocoKeypointSource


def synthetic_coco(num_annotations: int, per_image: int = 3, seed: int = 0) -> dict:
    """A valid COCO keypoint file: images of 640x480 named img_XXXXXX.jpg, ``per_image`` persons each."""
    rng = np.random.default_rng(seed)
    num_images = -(-num_annotations // per_image)
    images = [{"id": i, "file_name": f"img_{i % 100:06d}.jpg", "width": 640, "height": 480} for i in range(num_images)]
    xy = rng.uniform([0, 0], [639, 479], size=(num_annotations, 17, 2)).round(2)
    vis = rng.choice([0, 1, 2], size=(num_annotations, 17, 1), p=[0.1, 0.2, 0.7])
    vis[:, 0] = 2  # at least one labelled point
    kpts = np.concatenate([np.where(vis > 0, xy, 0.0), vis], -1).reshape(num_annotations, 51)
    annotations = [
        {
            "id": j,
            "image_id": j // per_image,
            "category_id": 1,
            "keypoints": [float(v) if k % 3 < 2 else int(v) for k, v in enumerate(kpts[j])],
            "num_keypoints": int((vis[j] > 0).sum()),
            "bbox": [0.0, 0.0, 639.0, 479.0],
            "area": 1000.0,
            "iscrowd": 0,
            "segmentation": [[10.0, 10.0, 50.0, 10.0, 50.0, 80.0, 10.0, 80.0]],
        }
        for j in range(num_annotations)
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(num_annotations: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        for i in range(100):
            (root / f"img_{i:06d}.jpg").write_bytes(b"")
        ann_file = Path(tmp) / "ann.json"
        ann_file.write_text(json.dumps(synthetic_coco(num_annotations)))
        data = json.loads(ann_file.read_text())
        anns = [a for _, a in coco_schema.validate("annotation", data["annotations"])[0]]
        sizes = [(640, 480)] * len(anns)
        result = {
            "annotations": num_annotations,
            "file_mb": round(ann_file.stat().st_size / 2**20, 1),
            "json_s": _median_time(lambda: json.loads(ann_file.read_text()), repeats),
            "schema_s": _median_time(
                lambda: (
                    coco_schema.validate("image", data["images"]),
                    coco_schema.validate("annotation", data["annotations"]),
                ),
                repeats,
            ),
            "consistency_s": _median_time(lambda: coco_schema.annotation_findings_bulk(anns, 17, sizes), repeats),
            "reader_s": _median_time(lambda: CocoKeypointSource(ann_file, root), repeats),
        }
        assert len(CocoKeypointSource(ann_file, root)) == num_annotations  # every record valid
    result["validation_s"] = result["schema_s"] + result["consistency_s"]
    result["validation_us_per_annotation"] = 1e6 * result["validation_s"] / num_annotations
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", type=int, default=150_000, help="person annotations in the file")
    p.add_argument("--repeats", type=int, default=3, help="timings per figure (the median is reported)")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    result = run(args.annotations, args.repeats)
    for key, value in result.items():
        print(f"{key:>30}: {value:.3f}" if isinstance(value, float) else f"{key:>30}: {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
