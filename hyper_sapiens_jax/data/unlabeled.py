"""Unlabelled images for MAE pretraining: a folder source, the MAE crop, and the Grain pipeline.

  ImageFolderSource(folder)       every .jpg / .jpeg / .png under ``folder`` (recursive, sorted),
                                  records ``{"image": uint8 (H, W, 3) RGB}``
  CropParams / mae_sample         random-resized square crop (human-centred when the record has a
                                  ``bbox``), horizontal flip, Sapiens normalisation
  MaeTransform                    the Grain ``RandomMap`` around ``mae_sample``
  pretrain_dataset                shuffled, repeated, augmented, sliced per JAX process, batched
                                  (iterate it with ``data.pipeline.train_iterator``: its state
                                  checkpoints with ``grain.checkpoint``)

The crop follows torchvision's ``RandomResizedCrop`` (area fraction in ``scale_range``, log-uniform
aspect ratio in ``ratio_range``, resized to the square output) when a record has no box. A record
with ``bbox`` (x, y, w, h) — a person box, as Sapiens pretrains on human-centric crops — is cropped
around the box centre instead: side = max(w, h) x ``bbox_padding`` x U(``bbox_scale_range``), with the
same aspect jitter; parts outside the image are black (0, as the top-down crops). Large shrinks are
pre-filtered with ``cv2.INTER_AREA`` so small inputs (the tiny model) do not alias.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import cv2
import grain
import numpy as np

from hyper_sapiens_jax.data.sources import DataError, read_image
from hyper_sapiens_jax.data.transforms import normalize_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
Record = dict[str, Any]


class ImageFolderSource:
    """Grain random-access source over the images under a folder.

    Args:
      folder: a directory; every file under it (recursively) ending in .jpg, .jpeg or .png (any
        case) is one record, in sorted order of the relative path.
    Records: ``{"image": uint8 (H, W, 3) RGB}`` (grey / RGBA / palette images converted).
    Raises ``DataError`` for a missing folder, a folder without images, and (on access) an
    unreadable image, the message naming the file.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DataError(self.folder, "no such image folder")
        self.paths = sorted(
            (p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(self.folder).as_posix(),
        )
        if not self.paths:
            raise DataError(self.folder, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Record:
        return {"image": read_image(self.paths[int(index)])}

    def __repr__(self) -> str:
        return f"ImageFolderSource({str(self.folder)!r}, {len(self)} images)"


# =============================================================================================
# The MAE crop
# =============================================================================================
@dataclasses.dataclass(frozen=True)
class CropParams:
    """MAE input augmentation.

    Attributes:
      image_size: output side S (the crop is resized to S x S).
      scale_range: area fraction of the image for whole-image crops (MAE: (0.2, 1.0)).
      ratio_range: crop aspect ratio w/h, sampled log-uniformly (MAE: (3/4, 4/3)).
      bbox_padding: person-box crops start from a square of max(w, h) x bbox_padding ...
      bbox_scale_range: ... whose side is scaled by U(bbox_scale_range).
      flip_prob: horizontal flip probability.
    """

    image_size: int
    scale_range: tuple[float, float] = (0.2, 1.0)
    ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    bbox_padding: float = 1.25
    bbox_scale_range: tuple[float, float] = (0.8, 1.2)
    flip_prob: float = 0.5


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def random_resized_box(
    rng: np.random.Generator, width: int, height: int, params: CropParams
) -> tuple[float, float, float, float]:
    """torchvision ``RandomResizedCrop.get_params`` (10 tries, then a central crop): (x0, y0, w, h)
    in pixel-edge coordinates (the image spans [0, width] x [0, height])."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*params.scale_range)
        ratio = _log_uniform(rng, *params.ratio_range)
        w, h = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if 0 < w <= width and 0 < h <= height:
            return float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h
    ratio = width / height
    if ratio < params.ratio_range[0]:
        w, h = float(width), width / params.ratio_range[0]
    elif ratio > params.ratio_range[1]:
        w, h = height * params.ratio_range[1], float(height)
    else:
        w, h = float(width), float(height)
    return (width - w) / 2, (height - h) / 2, w, h


def person_box(
    rng: np.random.Generator, bbox_xywh: np.ndarray, params: CropParams
) -> tuple[float, float, float, float]:
    """A crop (x0, y0, w, h) centred on a person box with scale and aspect jitter (module docstring)."""
    x, y, bw, bh = (float(v) for v in np.asarray(bbox_xywh, np.float64).reshape(4))
    if not (bw > 0 and bh > 0 and np.isfinite([x, y, bw, bh]).all()):
        raise ValueError(f"bbox {[x, y, bw, bh]} must have a positive, finite size")
    side = max(bw, bh) * params.bbox_padding * rng.uniform(*params.bbox_scale_range)
    ratio = _log_uniform(rng, *params.ratio_range)
    w, h = side * math.sqrt(ratio), side / math.sqrt(ratio)
    cx, cy = x + bw / 2, y + bh / 2
    return cx - w / 2, cy - h / 2, w, h


def crop_resize(image: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """The region ``box`` (x0, y0, w, h in pixel-edge coordinates) of ``image`` resized to (size,
    size) bilinearly; outside the image is 0. Shrinks by more than 2x are pre-filtered (INTER_AREA)."""
    x0, y0, w, h = box
    sx, sy = size / w, size / h
    shrink = max(sx, sy)
    if shrink < 0.5:  # area-average first so the bilinear warp never skips more than every other pixel
        f = 2.0 * shrink
        small = cv2.resize(
            image, (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))), interpolation=cv2.INTER_AREA
        )
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        image, x0, y0, sx, sy = small, x0 * fx, y0 * fy, sx / fx, sy / fy
    # Pixel centres: source pixel i sits at edge coordinate i + 0.5, output pixel j at j + 0.5.
    matrix = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]], np.float64)
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def mae_sample(record: Record, rng: np.random.Generator, params: CropParams) -> dict[str, np.ndarray]:
    """One training input: ``{"image": float32 (S, S, 3)}`` Sapiens-normalised RGB.

    A random-resized crop of the whole image, or around ``record["bbox"]`` when present, resized to
    S x S, flipped horizontally with ``flip_prob``, then ``transforms.normalize_image``.
    """
    image = np.asarray(record["image"])
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    box = (
        person_box(rng, record["bbox"], params)
        if record.get("bbox") is not None
        else random_resized_box(rng, w, h, params)
    )
    out = crop_resize(image, box, params.image_size)
    if rng.uniform() < params.flip_prob:
        out = out[:, ::-1]
    return {"image": normalize_image(np.ascontiguousarray(out))}


class MaeTransform(grain.transforms.RandomMap):
    """Grain random map wrapping ``mae_sample`` (the Grain-provided rng is seeded per element)."""

    def __init__(self, params: CropParams):
        self.params = params

    def random_map(self, element: Record, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return mae_sample(element, rng, self.params)


def crop_params(image_size: int | tuple[int, int], aug: Any) -> CropParams:
    """``CropParams`` from a square model input size and a config's ``data.aug`` (dict-like)."""
    if not isinstance(image_size, int):
        h, w = image_size
        if h != w:
            raise ValueError(f"MAE pretraining uses square inputs, got image_size {tuple(image_size)}")
        image_size = h
    get = aug.get if hasattr(aug, "get") else (lambda k, d: getattr(aug, k, d))
    defaults = CropParams(int(image_size))
    return CropParams(
        image_size=int(image_size),
        scale_range=tuple(get("scale_range", defaults.scale_range)),
        ratio_range=tuple(get("ratio_range", defaults.ratio_range)),
        bbox_padding=float(get("bbox_padding", defaults.bbox_padding)),
        bbox_scale_range=tuple(get("bbox_scale_range", defaults.bbox_scale_range)),
        flip_prob=float(get("flip_prob", defaults.flip_prob)),
    )


# =============================================================================================
# The Grain pipeline
# =============================================================================================
def pretrain_dataset(
    source: Any, params: CropParams, *, seed: int, global_batch: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """This process's infinite stream of MAE batches ``{"image": float32 (b, S, S, 3)}``.

    ``MapDataset.source(source).seed(seed).shuffle().repeat().random_map(MaeTransform)`` is one
    global sequence (a fresh shuffle per epoch, the same on every process); process ``p`` takes
    every ``process_count``-th element from ``p`` and batches ``b = global_batch / process_count``
    of them, so the global batches do not depend on the number of processes (as ``data.pipeline``).
    """
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} does not split over {process_count} processes")
    if len(source) == 0:
        raise ValueError(f"{source}: the source is empty")
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat().random_map(MaeTransform(params))
    return ds[process_index::process_count].batch(global_batch // process_count, drop_remainder=True)
