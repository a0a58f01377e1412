"""Top-down pose prediction on image files: COCO keypoint results + one overlay PNG per image.

  python -m hyper_sapiens_jax.predict --ckpt DIR --images DIR_OR_FILES [--boxes COCO_JSON] --out DIR

``--ckpt``: a converted checkpoint (``convert_weights.torch_to_flax``), a training workdir (its
latest EMA weights) or a configs/demo.py workdir (its final stage). ``--boxes``: a COCO keypoint or
detection file: a dataset dict (``images`` with ``file_name`` + ``annotations`` with ``bbox``) or a
results list (``image_id``, ``bbox``, optional ``score``; ids matched to numeric file stems, COCO
style). Without it each image is one box, the whole image. Every box is cropped like the
validation pass (padding 1.25, the model's aspect), flip-tested, decoded (argmax + DARK-UDP) and
mapped back to image pixels. ``--out`` gets ``keypoints_results.json`` (one entry per box, COCO
results format, strict JSON), ``<image stem>.png``: the image with the skeletons, and, when the
model has them, the first box's depth and normal maps beside it, and ``image_ids.json``: each
input's file, image id and overlay.

Every input gets a distinct image id (a numeric stem is kept unless another input has it; the
others get fresh ids above them) and a distinct overlay (``7.jpg`` and ``7.png`` give ``7_jpg.png``
and ``7_png.png``). A folder is read for every format PIL decodes (``IMAGE_SUFFIXES``); its other
files are listed as left out, with the reason. A model that predicts NaN stops with an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hyper_sapiens_jax.data import coco_schema
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.sources import DataError, read_image
from hyper_sapiens_jax.data.visualize import colorize_depth, colorize_normals, draw_skeleton
from hyper_sapiens_jax.evaluation.evaluate import predict_keypoints
from hyper_sapiens_jax.evaluation.metrics import keypoint_results
from hyper_sapiens_jax.inference import Predictor, load_predictor
from hyper_sapiens_jax.logs import progress
from hyper_sapiens_jax.models.weights import WeightsError

# Formats PIL registers but cannot decode by itself (stubs, or an external program).
_UNDECODABLE = {"BUFR", "GRIB", "HDF5", "WMF", "EPS", "MPEG"}
IMAGE_SUFFIXES = tuple(
    sorted(e for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN and fmt not in _UNDECODABLE)
)
RESULTS_FILE = "keypoints_results.json"
IDS_FILE = "image_ids.json"


def list_images(inputs: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files and folders (their images, sorted) -> (image paths, [(file left out, why)]): a folder
    gives every file of a format PIL decodes (``IMAGE_SUFFIXES``); its other files and its
    sub-folders are left out, and a file given twice is read once. Errors name what is missing."""
    paths: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for f in sorted(p.iterdir()):
                if f.is_dir():
                    left_out.append((f, "a folder (folders are not searched recursively)"))
                elif f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(f)
                else:
                    left_out.append((f, f"not an image format PIL decodes ({f.suffix or 'no suffix'})"))
            if not found:
                raise DataError(p, "no images (of any format PIL decodes) in this folder")
        elif p.is_file():
            found = [p]
        else:
            raise DataError(p, "no such image file or folder")
        for f in found:
            if f.resolve() in seen:
                left_out.append((f, "given twice (read once)"))
                continue
            seen.add(f.resolve())
            paths.append(f)
    return paths, left_out


def image_ids(images: list[Path]) -> dict[Path, int]:
    """A distinct image id per input: its numeric stem unless an earlier input has that number;
    every other input a fresh id above all numeric stems, in input order."""
    out: dict[Path, int] = {}
    taken: set[int] = set()
    for path in images:
        if path.stem.isdigit() and int(path.stem) not in taken:
            out[path] = int(path.stem)
            taken.add(out[path])
    nxt = max(taken, default=-1) + 1
    for path in images:
        if path not in out:
            out[path], nxt = nxt, nxt + 1
    return out


def overlay_names(images: list[Path]) -> dict[Path, str]:
    """A distinct overlay file name per input: ``STEM.png``; ``STEM_SUFFIX.png`` where two inputs
    share a stem; with ``_N`` added where they share a name too (two folders)."""
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    out, used = {}, set()
    for i, p in enumerate(images):
        name = f"{p.stem}.png" if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.') or 'none'}.png"
        if name in used:
            name = f"{name[:-4]}_{i}.png"
        used.add(name)
        out[p] = name
    return out


def _unique(keys: dict[Path, Any], boxes_file: str, how: str) -> dict[Any, Path]:
    """key -> input, refusing two inputs with one key (their boxes could not be told apart)."""
    out: dict[Any, Path] = {}
    for path, key in keys.items():
        if key in out:
            raise DataError(boxes_file, f"its boxes are matched {how}, and {out[key]} and {path} both match {key!r}")
        out[key] = path
    return out


def boxes_for(images: list[Path], boxes_file: str | None) -> dict[Path, list[dict[str, Any]]]:
    """Per image: [{'bbox': [x, y, w, h], 'score', 'image_id'}]; the whole image without a file.
    A boxes file is checked by ``coco_schema`` (the readers' validation layer): a bad entry is a
    ``DataError`` naming it and its field."""
    if boxes_file is None:  # bbox None: the whole image, filled in once it is read
        return {path: [{"bbox": None, "score": 1.0, "image_id": i}] for path, i in image_ids(images).items()}
    data = coco_schema.read_json(boxes_file, "boxes file")
    out: dict[Path, list] = {p: [] for p in images}
    if isinstance(data, dict):
        if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
            raise DataError(boxes_file, "a dict boxes file needs 'images' and 'annotations' lists (COCO)")
        by_name = _unique({p: p.name for p in images}, boxes_file, "by file name")
        good, bad = coco_schema.validate("image", data["images"])
        if bad:
            raise DataError(bad[0].where(boxes_file, "image"), bad[0].message())
        names = {img["id"]: Path(img["file_name"]).name for _, img in good}
        id_to_path = {image_id: by_name[name] for image_id, name in names.items() if name in by_name}
        entries, kind = data["annotations"], "annotation"
    elif isinstance(data, list):
        id_to_path = _unique({p: int(p.stem) for p in images if p.stem.isdigit()}, boxes_file, "by numeric file stem")
        entries, kind = data, "detection"
    else:
        raise DataError(boxes_file, "expected a COCO dataset dict or a list of detections")
    good, bad = coco_schema.validate("detection", entries)
    if bad:
        raise DataError(f"{boxes_file} {kind} {bad[0].index}", bad[0].message())
    ids = coco_schema.IdMap(id_to_path)
    used = 0
    for _, ann in good:
        path = id_to_path.get(ann["image_id"])
        if path is None:
            continue  # a box for an image not asked for
        out[path].append({"bbox": list(ann["bbox"]), "score": ann.get("score", 1.0), "image_id": ids(ann["image_id"])})
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
        images, left_out = list_images(args.images)
        boxes = boxes_for(images, args.boxes)
        predictor = load_predictor(args.ckpt, flip_test=not args.no_flip)
        if "pose" not in predictor.config.heads:
            raise WeightsError(f"{args.ckpt}: the model has no pose head (heads {list(predictor.config.heads)})")
    except (DataError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path, why in left_out:
        print(f"left out {path}: {why}", file=sys.stderr)
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, no permission
        print(f"error: --out {out_dir}: cannot be used as the output folder ({e.strerror or e})", file=sys.stderr)
        return 1
    overlays = overlay_names(images)
    table = [  # an image without boxes gets no id and no overlay
        {
            "file": str(p),
            "image_id": boxes[p][0]["image_id"] if boxes[p] else None,
            "overlay": overlays[p] if boxes[p] else None,
        }
        for p in images
    ]
    (out_dir / IDS_FILE).write_text(json.dumps(table, indent=1) + "\n")
    results, written = [], 0
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
        if not (np.isfinite(kps).all() and np.isfinite(scores).all()):
            print(
                f"error: {path}: the model predicts NaN or infinite keypoints (do the weights of {args.ckpt} "
                "hold NaN or inf? convert_weights refuses such tensors unless --allow-nonfinite)",
                file=sys.stderr,
            )
            return 1
        results += keypoint_results(
            np.array([b["image_id"] for b in image_boxes]), kps, scores, np.array([b["score"] for b in image_boxes])
        )
        Image.fromarray(overlay(image, kps, scores, dense, crop)).save(out_dir / overlays[path])
        written += 1
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, allow_nan=False))  # strict JSON
    left = f"; left out {len(left_out)} files (listed above)" if left_out else ""
    print(
        f"wrote {len(results)} results to {out_dir / RESULTS_FILE}, {written} overlays and {IDS_FILE}{left}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
