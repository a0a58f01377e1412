"""Top-down pose prediction on image files: COCO keypoint results + one overlay PNG per image.

  python -m hyper_sapiens_jax.predict --ckpt DIR --images DIR_OR_FILES [--boxes COCO_JSON] --out DIR

``--ckpt``: a converted checkpoint (``convert_weights.torch_to_flax``), a training workdir (its
latest EMA weights) or a configs/demo.py workdir (its final stage). ``--boxes``: a COCO keypoint or
detection file: a dataset dict (``images`` with ``file_name`` + ``annotations`` with ``bbox``) or a
results list (``image_id``, ``bbox``, optional ``score``; ids matched to numeric file stems, COCO
style). Without it each image is one box, the whole image. Every box is cropped like the
validation pass (padding 1.25, the model's aspect), flip-tested, decoded (argmax + DARK-UDP) and
mapped back to image pixels. ``--out`` gets ``keypoints_results.json`` (one entry per box, COCO
results format) and ``<image stem>.png``: the image with the skeletons, and, when the model has
them, the first box's depth and normal maps beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.sources import DataError, read_image
from hyper_sapiens_jax.data.visualize import colorize_depth, colorize_normals, draw_skeleton
from hyper_sapiens_jax.evaluation.evaluate import predict_keypoints
from hyper_sapiens_jax.evaluation.metrics import keypoint_results
from hyper_sapiens_jax.inference import Predictor, load_predictor
from hyper_sapiens_jax.logs import progress
from hyper_sapiens_jax.models.weights import WeightsError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
RESULTS_FILE = "keypoints_results.json"


def list_images(inputs: list[str]) -> list[Path]:
    """Files and folders (their images, sorted) -> image paths; errors name what is missing."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(p, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(p, "no such image file or folder")
    return paths


def boxes_for(images: list[Path], boxes_file: str | None) -> dict[Path, list[dict[str, Any]]]:
    """Per image: [{'bbox': [x, y, w, h], 'score', 'image_id'}]; the whole image without a file."""
    if boxes_file is None:  # bbox None: the whole image, filled in once it is read
        return {
            path: [{"bbox": None, "score": 1.0, "image_id": int(path.stem) if path.stem.isdigit() else i}]
            for i, path in enumerate(images)
        }
    try:
        data = json.loads(Path(boxes_file).read_text())
    except (OSError, ValueError) as e:
        raise DataError(boxes_file, f"unreadable boxes file ({e})") from None
    by_name = {p.name: p for p in images}
    by_stem = {int(p.stem): p for p in images if p.stem.isdigit()}
    out: dict[Path, list] = {p: [] for p in images}
    if isinstance(data, dict):
        if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
            raise DataError(boxes_file, "a dict boxes file needs 'images' and 'annotations' lists (COCO)")
        id_to_path = {}
        for img in data["images"]:
            name = Path(str(img.get("file_name", ""))).name
            if name in by_name:
                id_to_path[img["id"]] = by_name[name]
        entries = data["annotations"]
    elif isinstance(data, list):
        id_to_path, entries = by_stem, data
    else:
        raise DataError(boxes_file, "expected a COCO dataset dict or a list of detections")
    used = 0
    for k, ann in enumerate(entries):
        if "bbox" not in ann or "image_id" not in ann or len(ann["bbox"]) != 4:
            raise DataError(boxes_file, f"entry {k} lacks 'image_id' or a 4-number 'bbox'")
        path = id_to_path.get(ann["image_id"])
        if path is None:
            continue  # a box for an image not asked for
        out[path].append(
            {
                "bbox": [float(v) for v in ann["bbox"]],
                "score": float(ann.get("score", 1.0)),
                "image_id": int(ann["image_id"]),
            }
        )
        used += 1
    if used == 0:
        raise DataError(
            boxes_file,
            f"none of its boxes belongs to the {len(images)} given images "
            f"(matched by file_name, or by numeric file stem for detection lists)",
        )
    return out


def predict_image(predictor: Predictor, image: np.ndarray, boxes: list[dict], batch: int = 8):
    """Keypoints (N, K, 2), scores (N, K) in image pixels and the first box's dense maps."""
    input_wh = predictor.image_size[::-1]
    crops = [T.topdown_crop(np.asarray(b["bbox"], np.float32), input_wh=input_wh, image=image) for b in boxes]
    kps, scores, dense = [], [], {}
    for i in range(0, len(crops), batch):
        part = crops[i : i + batch]
        out = predictor.forward(np.stack([T.normalize_image(c["image"]) for c in part]))
        k, s = predict_keypoints(
            out["pose"],
            np.stack([c["center"] for c in part]),
            np.stack([c["scale"] for c in part]),
            np.zeros(len(part)),
            input_wh,
        )
        kps.append(k)
        scores.append(s)
        if i == 0:
            dense = {name: out[name][0] for name in ("depth", "normal") if name in out}
    return np.concatenate(kps), np.concatenate(scores), dense, crops[0]["image"]


def overlay(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    dense: dict,
    crop: np.ndarray,
    score_threshold: float = 0.2,
) -> np.ndarray:
    """The image with every skeleton, then (first box) crop / depth / normal panels at image height."""
    canvas = image
    for k, s in zip(keypoints, scores):
        canvas = draw_skeleton(canvas, k, (s > score_threshold).astype(np.float32))
    panels = [canvas]
    if dense:
        h = image.shape[0]
        for arr in [crop] + [
            colorize_depth(dense["depth"]) if "depth" in dense else None,
            colorize_normals(dense["normal"]) if "normal" in dense else None,
        ]:
            if arr is None:
                continue
            w = max(1, round(arr.shape[1] * h / arr.shape[0]))
            panels.append(np.asarray(Image.fromarray(arr).resize((w, h), Image.NEAREST)))
    return np.concatenate(panels, axis=1)


def main(argv: list[str] | None = None) -> int:
    """The ``hyper-sapiens-predict`` console script (``python -m hyper_sapiens_jax.predict``);
    ``--help`` lists the flags."""
    parser = argparse.ArgumentParser(
        prog="python -m hyper_sapiens_jax.predict",
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the formats.",
    )
    parser.add_argument("--ckpt", required=True, help="converted checkpoint, training workdir or demo workdir")
    parser.add_argument("--images", required=True, nargs="+", help="image files and/or folders")
    parser.add_argument("--boxes", help="COCO ground-truth or detection JSON (default: whole images)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test")
    parser.add_argument("--batch", type=int, default=8, help="crops per forward pass")
    args = parser.parse_args(argv)
    try:
        images = list_images(args.images)
        boxes = boxes_for(images, args.boxes)
        predictor = load_predictor(args.ckpt, flip_test=not args.no_flip)
        if "pose" not in predictor.config.heads:
            raise WeightsError(f"{args.ckpt}: the model has no pose head (heads {list(predictor.config.heads)})")
    except (DataError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for n, path in enumerate(progress(images, "predict", len(images), unit="image"), 1):
        try:
            image = read_image(path)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        image_boxes = [
            {**b, "bbox": b["bbox"] or [0.0, 0.0, float(image.shape[1]), float(image.shape[0])]} for b in boxes[path]
        ]
        if not image_boxes:
            print(f"[{n}/{len(images)}] {path.name}: no boxes", file=sys.stderr)
            continue
        kps, scores, dense, crop = predict_image(predictor, image, image_boxes, args.batch)
        results += keypoint_results(
            np.array([b["image_id"] for b in image_boxes]), kps, scores, np.array([b["score"] for b in image_boxes])
        )
        Image.fromarray(overlay(image, kps, scores, dense, crop)).save(out_dir / f"{path.stem}.png")
    (out_dir / RESULTS_FILE).write_text(json.dumps(results))
    print(f"wrote {len(results)} results to {out_dir / RESULTS_FILE} and {len(images)} overlays", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
