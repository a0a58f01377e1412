"""Unlabelled images: MAE pretraining crops, and the two-view person samples of semi-supervised training.

MAE pretraining (whole images or person boxes, no labels):

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

Semi-supervised (NK-Sapiens) training: unlabelled person crops seen twice, a weak and a strong view,
whose predictions are aligned through the known affine between the views:

  UnlabeledSource(images, boxes, image_list)   person boxes on unlabelled images: a folder (each
                                  image one whole-image box), a COCO detection-results list (+ the
                                  COCO image list naming the files), or a COCO image list with
                                  boxes; records ``{"image" (H, W, 3) uint8, "bbox" (4,) f32 xywh,
                                  "image_id", "ann_id"}``
  WEAK_VIEW / weak_view_params    the weak view's geometry (no flip, no rotation, small jitter;
                                  ``ViewPairTransform.weak_params`` applies a config's overrides)
  view_pair_crops                 the two top-down crops of a record (their warp matrices, flips)
  view_affine                     (2, 3) weak-crop pixels -> strong-crop pixels
  view_pair_sample                ``{"weak", "strong" (H, W, 3) uint8, "view_affine" (2, 3),
                                  "view_flipped", "intrinsics" (3, 3), ...}``
  weak_to_strong_keypoints        weak-view keypoints (K, 2) -> the strong view's
  ViewPairTransform               the Grain ``RandomMap`` around ``view_pair_sample``
  unlabeled_dataset               batches of view pairs with ``data.pipeline.train_dataset``'s
                                  global-sequence / per-process slicing
  zip_labeled_unlabeled           labelled batch + the unlabelled one under ``u_``-prefixed keys

A weak-view point ``p`` (crop pixels, the pixel-centre convention of ``data.transforms``) of joint
``k`` is at ``apply_affine(p, view_affine)`` in the strong view, as joint ``k`` — or, when
``view_flipped`` is 1 (the strong view is mirrored relative to the weak one), as joint
``flip_permutation()[k]``: strong channel ``j`` then pairs with weak channel ``flip_permutation()[j]``
(``weak_to_strong_keypoints``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import cv2
import grain
import numpy as np

from hyper_sapiens_jax.data import coco_schema
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import NUM_COCO_KEYPOINTS, flip_permutation
from hyper_sapiens_jax.data.pipeline import source_batches
from hyper_sapiens_jax.data.sources import DataError, _load_json, _RecordSource, _Skipper, read_image
from hyper_sapiens_jax.data.topdown import SampleConfig, crop_camera
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
# Person boxes on unlabelled images (semi-supervised training)
# =============================================================================================
PERSON_CATEGORY = 1  # COCO's person category id


class UnlabeledSource(_RecordSource):
    """Grain random-access source of person boxes on unlabelled images (no keypoints).

    Args:
      images: the image folder; the file names of ``boxes`` / ``image_list`` are relative to it.
      boxes: None (each image one whole-image box), or a JSON file that is either
        * a COCO detection-results list ``[{"image_id", "category_id", "bbox", "score"}, ...]``
          (which needs ``image_list`` to name the files), or
        * a COCO image list with boxes: ``{"images": [{"id", "file_name"}, ...], "annotations":
          [{"image_id", "bbox", "category_id"?, "score"?, "iscrowd"?}, ...]}`` (crowd boxes are
          dropped); without an ``"annotations"`` key, each listed image is one whole-image box.
        Only person boxes (``category_id`` 1, or no category) with ``score`` >= ``min_score``
        (no score: kept) are records.
      image_list: a COCO JSON whose ``"images"`` name the files of ``boxes``' ``image_id``s (it
        takes precedence over ``boxes``' own ``"images"``). Without ``boxes``: the listed images,
        each one whole-image box.
      min_score: detections scoring below it are dropped.
      skip_bad_records: skip (log, and list in ``skipped``) bad entries and missing or unreadable
        images instead of raising; an unreadable image found at access is replaced by the next
        loadable record (``_RecordSource``).
      name: label used in messages.

    Without ``boxes`` and ``image_list``, every .jpg / .jpeg / .png under ``images`` (recursive,
    sorted by relative path) is one record, ``image_id`` = ``ann_id`` = its index.

    Records (after load): ``{"image": uint8 (H, W, 3) RGB, "bbox": float32 (4,) xywh (a
    whole-image box is [0, 0, W, H]), "image_id": int64, "ann_id": int64, "keypoints": zeros
    (17, 3), "has_pose": 0, "is_real": 1}`` (a detection without an ``"id"`` gets its index in the
    list as ``ann_id``; through the labelled top-down transform such a record has every pose term
    masked out).

    Every entry is checked by ``coco_schema``, the layer ``CocoKeypointSource`` uses: image entries
    and detections against their schemas (ids of any JSON scalar type, mapped to int64 as there),
    boxes against the declared image size (and the decoded size at access when it differs), image
    paths resolved (symlinks included) inside ``images``.

    Raises ``DataError`` naming the file (and entry and field) at fault: a missing folder or JSON
    file, malformed JSON, a file that is neither a detection list nor a COCO image list, a detection
    list without ``image_list``, and — unless ``skip_bad_records`` — an entry without ``bbox`` /
    ``image_id`` (or an image entry without ``id`` / ``file_name``), a field of the wrong type, an
    ``image_id`` not in the image list, a box that is not 4 finite numbers with w, h > 0 or lies
    outside its image, a missing image file, an unreadable image (at access); always when no record
    is left.
    """

    def __init__(
        self,
        images: str | Path,
        boxes: str | Path | None = None,
        image_list: str | Path | None = None,
        *,
        min_score: float = 0.0,
        skip_bad_records: bool = False,
        name: str = "unlabeled",
    ):
        self.images = Path(images).expanduser()
        self.boxes = Path(boxes).expanduser() if boxes else None
        self.image_list = Path(image_list).expanduser() if image_list else None
        self.min_score, self.name = float(min_score), name
        self._skipper = _Skipper(skip_bad_records)
        self._checked: dict[Path, bool] = {}
        self.dropped = {"category": 0, "score": 0, "crowd": 0}  # filtered out (not errors)
        if not self.images.is_dir():
            raise DataError(self.images, "no such image folder")
        if self.boxes is None and self.image_list is None:
            folder = ImageFolderSource(self.images)  # raises for a folder without images
            self.records = [
                {"path": str(p), "bbox": None, "image_id": i, "ann_id": i} for i, p in enumerate(folder.paths)
            ]
            return
        # Detection results are a JSON list; the other layouts are COCO objects (checked below).
        data = _load_json(self.boxes, object_only=False) if self.boxes is not None else None
        listing = _load_json(self.image_list, object_only=False) if self.image_list is not None else None
        self.records = []
        if data is None:  # an image list alone: whole images
            self._whole_images(self.image_list, listing)
        elif isinstance(data, list):
            if listing is None:
                raise DataError(
                    self.boxes,
                    "a COCO detection-results list has no file names: give the COCO image list "
                    "(config.data.unlabeled_image_list) that its image_ids refer to",
                )
            self._boxes(self.boxes, data, self.image_list, listing, "detection")
        elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
            src, table = (self.image_list, listing) if listing is not None else (self.boxes, data)
            self._boxes(self.boxes, data["annotations"], src, table, "annotation")
        elif isinstance(data, dict) and "annotations" in data:
            raise DataError(self.boxes, "'annotations' is not a list")
        elif isinstance(data, dict) and "images" in data:
            self._whole_images(self.boxes, data)
        else:
            raise DataError(
                self.boxes,
                "neither a COCO detection-results list nor a COCO file with 'images' (and 'annotations')",
            )
        self._checked = {}  # only needed while parsing (keeps the pickled source small)
        if not self.records:
            what = self.boxes or self.image_list
            why = f" ({self.dropped['score']} below min_score={self.min_score})" if self.dropped["score"] else ""
            raise DataError(what, f"no usable person boxes{why}")

    # -- parsing ---------------------------------------------------------------------------------
    def _image_table(self, path: Path, data: Any) -> dict[Any, tuple[Path, str | None]]:
        """image id -> (file under ``self.images``, None or why it cannot be read), from a COCO
        file's ``"images"`` list, every entry checked by ``coco_schema`` (ids of any JSON scalar
        type; paths resolved inside the folder)."""
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(path, "not a COCO image list (no 'images' list)")
        good, bad = coco_schema.validate("image", data["images"])
        for f in bad:
            self._skipper.bad(f.where(path, "image"), f.message())
        table, twice, real_dirs = {}, set(), {}
        for _, img in good:
            where = f"{path} image {img['id']!r}"
            if img["id"] in table:
                self._skipper.bad(where, "image id appears more than once in 'images'")
                twice.add(img["id"])
                continue
            file, problem = coco_schema.image_path(self.images, img["file_name"], real_dirs)
            if problem is not None and problem.startswith("file_name"):  # the list's fault
                self._skipper.bad(where, problem.replace("image root", "image folder"))
                continue
            table[img["id"]] = (file, problem, coco_schema.declared_size(img))
        for image_id in twice:
            table.pop(image_id, None)
        self._ids = coco_schema.IdMap(table)
        return table

    def _image_ok(self, entry: tuple, where: str) -> bool:
        """Whether the image of a table entry can be read; a missing file (or a directory) is
        reported once per file."""
        file, problem = entry[:2]
        if problem is not None and file not in self._checked:
            self._checked[file] = False
            self._skipper.bad(file, f"{problem} ({where})")
        return problem is None

    def _whole_images(self, path: Path, data: Any) -> None:
        for image_id, entry in self._image_table(path, data).items():
            if self._image_ok(entry, f"image {image_id!r} of {path}"):
                rec_id = self._ids(image_id)
                self.records.append({"path": str(entry[0]), "bbox": None, "image_id": rec_id, "ann_id": rec_id})

    def _boxes(self, path: Path, entries: list, list_path: Path, listing: Any, kind: str) -> None:
        table = self._image_table(list_path, listing)
        good, bad = coco_schema.validate("detection", entries)
        for f in bad:
            self._skipper.bad(f"{path} {kind} {f.index}", f.message())
        ann_ids = coco_schema.IdMap(entry.get("id", i) for i, entry in good)
        for i, entry in good:
            where = f"{path} {kind} {i}"
            if entry.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
                self.dropped["category"] += 1
                continue
            if entry.get("iscrowd"):
                self.dropped["crowd"] += 1
                continue
            if entry.get("score", 1.0) < self.min_score:
                self.dropped["score"] += 1
                continue
            bbox = entry["bbox"]
            if bbox[2] <= 0 or bbox[3] <= 0:
                self._skipper.bad(where, f"field 'bbox': box {bbox} has w or h <= 0")
                continue
            far = coco_schema.coordinate_finding(bbox)
            if far is not None:
                self._skipper.bad(where, "field {}: {}".format(*far))
                continue
            if entry["image_id"] not in table:
                self._skipper.bad(where, f"field 'image_id': {entry['image_id']!r} is not in {list_path}'s 'images'")
                continue
            file, _, size = table[entry["image_id"]]
            found = coco_schema.geometry_finding(bbox, None, *size) if size else None
            if found is not None:
                self._skipper.bad(where, "field {}: {}".format(*found))
                continue
            if not self._image_ok(table[entry["image_id"]], f"{kind} {i} of {path}"):
                continue
            self.records.append(
                {
                    "path": str(file),
                    "bbox": bbox,
                    "image_id": self._ids(entry["image_id"]),
                    "ann_id": ann_ids(entry.get("id", i)),
                    "size": size,
                    "where": where,
                }
            )

    # -- access ----------------------------------------------------------------------------------
    def load(self, rec: dict) -> Record:
        """The record of parsed entry ``rec``: the decoded image and its box (the whole image when
        the entry has none). An unreadable image raises ``DataError`` naming the file."""
        image = read_image(rec["path"])
        h, w = image.shape[:2]
        bbox = rec["bbox"] if rec["bbox"] is not None else [0.0, 0.0, float(w), float(h)]
        if rec["bbox"] is not None and rec.get("size") != (w, h):  # check the box against the decoded size
            found = coco_schema.geometry_finding(bbox, None, float(w), float(h))
            if found is not None:
                raise DataError(rec.get("where", rec["path"]), f"field {found[0]}: {found[1]} (decoded {rec['path']})")
        return {
            "image": image,
            "bbox": np.asarray(bbox, np.float32),
            "image_id": np.int64(rec["image_id"]),
            "ann_id": np.int64(rec["ann_id"]),
            # No labels: the top-down transform masks every pose term out (target weights 0).
            "keypoints": np.zeros((NUM_COCO_KEYPOINTS, 3), np.float32),
            "has_pose": 0,
            "is_real": 1,
        }

    def __repr__(self) -> str:
        given = self.boxes or self.image_list or self.images
        return f"UnlabeledSource({self.name}: {len(self)} person boxes from {given})"


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


# =============================================================================================
# Two views of an unlabelled person (semi-supervised training)
# =============================================================================================
def weak_view_params(
    geometry: T.GeometryAugParams | None = None,
    *,
    shift_factor: float = 0.05,
    shift_prob: float = 1.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> T.GeometryAugParams:
    """The weak view's geometry: the box padding of ``geometry`` (the strong view's; default
    ``GeometryAugParams()``), no flip, no half-body, no rotation, and a small truncated-normal
    shift (``shift_factor`` of the box, with ``shift_prob``) and rescale (over ``scale_range``)."""
    padding = (geometry or T.GeometryAugParams()).bbox_padding
    return T.GeometryAugParams(
        bbox_padding=padding,
        flip_prob=0.0,
        half_body_prob=0.0,
        shift_factor=shift_factor,
        shift_prob=shift_prob,
        scale_range=tuple(scale_range),
        scale_prob=1.0,
        rotate_factor=0.0,
        rotate_prob=0.0,
    )


# The default weak view: padding 1.25, no flip / rotation, shift <= 5% of the box, scale x U~(0.9, 1.1).
WEAK_VIEW = weak_view_params()


def _source_to_crop(matrix: np.ndarray, flipped: bool, image_width: int) -> np.ndarray:
    """(3, 3) from source-image pixels to crop pixels: the crop's warp after its flip (the flip
    mirrors the source image first, ``x -> W - 1 - x``, as ``transforms.random_topdown_crop``)."""
    m = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    if flipped:
        m = m @ np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return m


def view_affine(
    weak_matrix: np.ndarray, weak_flipped: bool, strong_matrix: np.ndarray, strong_flipped: bool, image_width: int
) -> np.ndarray:
    """(2, 3) float64 affine from weak-crop pixels to strong-crop pixels.

    ``*_matrix`` (2, 3) are the crops' UDP warps (``warp_matrix``), applied after their flips
    (``*_flipped``) of the source image of width ``image_width``.
    """
    weak = _source_to_crop(weak_matrix, weak_flipped, image_width)
    strong = _source_to_crop(strong_matrix, strong_flipped, image_width)
    return (strong @ np.linalg.inv(weak))[:2]


def weak_to_strong_keypoints(keypoints: np.ndarray, affine: np.ndarray, flipped: float | bool) -> np.ndarray:
    """Weak-view keypoints (K, 2) -> the strong view's (K, 2): mapped by ``affine`` (2, 3), and the
    left/right channels swapped (``keypoints.flip_permutation``) when ``flipped``."""
    mapped = T.apply_affine(keypoints, np.asarray(affine, np.float64))
    return mapped[flip_permutation(len(mapped))] if flipped else mapped


def view_pair_crops(
    record: Record, rng: np.random.Generator, cfg: SampleConfig, weak: T.GeometryAugParams = WEAK_VIEW
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weak and the strong top-down crops of ``record["bbox"]`` (before any texture change).

    Draws, in this order from ``rng``: the weak crop (``weak`` geometry) then the strong one
    (``cfg.geometry``: flip, shift, scale, rotation; no half-body, there are no keypoints). Each is
    ``transforms.random_topdown_crop``'s dict: ``image`` (H, W, 3) uint8, ``warp_matrix`` (2, 3),
    ``center``, ``scale``, ``rotation``, ``flipped``. ``view_pair_sample`` with an rng in the same
    state makes exactly these crops.
    """
    image = np.asarray(record["image"])
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    weak_crop = T.random_topdown_crop(record["bbox"], rng, weak, input_wh=cfg.input_wh, image=image)
    strong_crop = T.random_topdown_crop(record["bbox"], rng, cfg.geometry, input_wh=cfg.input_wh, image=image)
    return weak_crop, strong_crop


def view_pair_sample(
    record: Record, rng: np.random.Generator, cfg: SampleConfig, weak: T.GeometryAugParams = WEAK_VIEW
) -> dict[str, np.ndarray]:
    """Two views of an unlabelled person record (``image`` (H0, W0, 3), ``bbox`` xywh, ids).

    For the input size (H, W) = ``cfg.input_size``:
      weak (H, W, 3) uint8         crop with the ``weak`` geometry, no texture change
      strong (H, W, 3) uint8       ``random_topdown_crop`` with ``cfg.geometry``, then
                                   ``random_texture`` with ``cfg.texture``
      view_affine (2, 3) f32       weak-crop pixels -> strong-crop pixels (``view_affine``)
      view_flipped f32             1 when the strong view is mirrored relative to the weak one
                                   (pair strong channel j with weak channel flip_permutation()[j])
      intrinsics (3, 3) f32        the strong crop's camera (``topdown._targets``' rule; the
                                   record's ``intrinsics``, else ``default_intrinsics``)
      has_intrinsics f32           1 when the record carried intrinsics
      valid, is_real f32           1 (``is_real`` from the record when it has one)
      image_id, ann_id int32
    """
    weak_crop, strong_crop = view_pair_crops(record, rng, cfg, weak)
    strong = T.random_texture(strong_crop["image"], rng, cfg.texture)
    img_w = np.asarray(record["image"]).shape[1]
    k_crop, has_intrinsics = crop_camera(record, strong_crop, cfg)
    affine = view_affine(
        weak_crop["warp_matrix"], weak_crop["flipped"], strong_crop["warp_matrix"], strong_crop["flipped"], img_w
    )
    return {
        "weak": np.asarray(weak_crop["image"], np.uint8),
        "strong": np.asarray(strong, np.uint8),
        "view_affine": affine.astype(np.float32),
        "view_flipped": np.float32(bool(weak_crop["flipped"]) != bool(strong_crop["flipped"])),
        "intrinsics": k_crop.astype(np.float32),
        "has_intrinsics": has_intrinsics,
        "valid": np.float32(1),
        "is_real": np.float32(record.get("is_real", 1)),
        "image_id": np.int32(record["image_id"]),
        "ann_id": np.int32(record["ann_id"]),
    }


class ViewPairTransform(grain.transforms.RandomMap):
    """Grain random map wrapping ``view_pair_sample`` (the Grain-provided rng is seeded per element)."""

    def __init__(self, cfg: SampleConfig, weak: T.GeometryAugParams = WEAK_VIEW):
        self.cfg, self.weak = cfg, weak

    @staticmethod
    def weak_params(overrides: Any = None, geometry: T.GeometryAugParams | None = None) -> T.GeometryAugParams:
        """The weak view's geometry: ``weak_view_params(geometry)`` with the ``GeometryAugParams``
        fields of ``overrides`` (a dict or ConfigDict, e.g. ``config.semisup.weak_view``; None: none)
        replaced. Unknown fields raise ``ValueError``."""
        params = weak_view_params(geometry)
        if not overrides:
            return params
        items = dict(overrides.items())
        known = {f.name for f in dataclasses.fields(T.GeometryAugParams)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"unknown weak-view geometry fields {unknown}; known: {sorted(known)}")
        return dataclasses.replace(params, **{k: tuple(v) if isinstance(v, list) else v for k, v in items.items()})

    def random_map(self, element: Record, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return view_pair_sample(element, rng, self.cfg, self.weak)


# Added to the caller's seed, so a run may pass the seed of its labelled mix (train_dataset seeds
# its sources seed + 7919 i): the unlabelled shuffle and augmentation draw from another stream.
UNLABELED_SEED_OFFSET = 104_729


def unlabeled_dataset(
    source: Any,
    sample_cfg: SampleConfig,
    weak: T.GeometryAugParams = WEAK_VIEW,
    *,
    seed: int,
    count: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """This process's ``num_batches`` batches of ``b = count / process_count`` view pairs.

    Each element is ``view_pair_sample``'s dict stacked over b: weak, strong (b, H, W, 3) uint8,
    view_affine (b, 2, 3), view_flipped (b,), intrinsics (b, 3, 3), has_intrinsics, valid, is_real
    (b,) f32, image_id, ann_id (b,) int32. As ``pipeline.train_dataset``: the source is shuffled
    (seed ``seed + UNLABELED_SEED_OFFSET``), repeated and augmented as one global sequence, global
    batch ``g`` holds its elements ``g * count ... (g + 1) * count - 1``, and process ``p`` takes
    every ``process_count``-th of them from ``p`` — so every global batch holds exactly ``count``
    pairs, the same for any process count, and each process decodes only its own rows.
    """
    return source_batches(
        "unlabeled",
        source,
        ViewPairTransform(sample_cfg, weak),
        seed=seed + UNLABELED_SEED_OFFSET,
        count=count,
        num_batches=num_batches,
        process_index=process_index,
        process_count=process_count,
    )


UNLABELED_PREFIX = "u_"


def _merge_views(pair: tuple[dict, dict]) -> dict[str, np.ndarray]:
    labeled, unlabeled = pair
    clash = [k for k in unlabeled if UNLABELED_PREFIX + k in labeled]
    if clash:
        raise ValueError(f"the labelled batch already has keys {[UNLABELED_PREFIX + k for k in clash]}")
    return {**labeled, **{UNLABELED_PREFIX + k: v for k, v in unlabeled.items()}}


def zip_labeled_unlabeled(labeled_ds: grain.MapDataset, unlabeled_ds: grain.MapDataset) -> grain.MapDataset:
    """Batch ``i`` = labelled batch ``i`` (``pipeline.train_dataset``'s keys) plus unlabelled batch
    ``i`` (``unlabeled_dataset``'s) under ``u_``-prefixed keys: u_weak, u_strong (b, H, W, 3) uint8,
    u_view_affine (b, 2, 3), u_view_flipped (b,), u_intrinsics (b, 3, 3), u_has_intrinsics,
    u_valid, u_is_real (b,) f32, u_image_id, u_ann_id (b,) int32. As long as the shorter of the two;
    iterate it with ``pipeline.train_iterator`` (exact ``get_state`` / ``set_state``)."""
    n = min(len(labeled_ds), len(unlabeled_ds))
    return grain.experimental.ZipMapDataset([labeled_ds[:n], unlabeled_ds[:n]]).map(_merge_views)
