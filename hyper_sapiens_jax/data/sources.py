"""Random-access data sources (Grain ``RandomAccessDataSource`` protocol: ``len`` and ``[i]``).

  CocoKeypointSource(ann_file, image_root)   SyRIP or any COCO keypoint set: one record per
                                             non-crowd person annotation with keypoints.
  MiniRgbdSource(root, sequences)            MINI-RGBD: RGB, 16-bit depth (mm), fg mask,
                                             joints_2Ddep -> COCO-17; depth and normal targets.
  load_skeletons(path)                       skeleton-only keypoints for the pose prior.

A record is a dict of numpy arrays. Every record carries ``has_pose`` / ``has_depth`` /
``has_normal`` task flags and ``is_real`` (domain), so losses and batch composition can mask per
sample. Bad input raises ``DataError`` naming the file or annotation; with
``skip_bad_records=True`` the record is skipped instead, logged, and listed in ``source.skipped``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from hyper_sapiens_jax.data import coco_schema, geometry
from hyper_sapiens_jax.data.errors import DataError
from hyper_sapiens_jax.data.keypoints import NUM_COCO_KEYPOINTS, smil25_to_coco17

log = logging.getLogger(__name__)
Record = dict[str, Any]
__all__ = ["CocoKeypointSource", "DataError", "MiniRgbdSource", "load_skeletons", "read_gray", "read_image"]


class _Skipper:
    """Raise, or (with skip_bad_records) log and remember, a bad file or annotation."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped: list[dict[str, str]] = []

    def bad(self, where: str | Path, reason: str) -> None:
        if not self.skip:
            raise DataError(where, reason)
        log.warning("skipping %s: %s", where, reason)
        self.skipped.append({"file": str(where), "reason": reason})


class _RecordSource:
    """Random access over ``self.records`` via ``self.load(record)``; a record that fails to load
    raises, or with skip_bad_records is counted and replaced by the next loadable one."""

    name: str
    records: list[dict]
    _skipper: _Skipper

    @property
    def skipped(self) -> list[dict[str, str]]:
        return self._skipper.skipped

    def __len__(self) -> int:
        return len(self.records)

    def load(self, rec: dict) -> Record:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Record:
        return first_loadable(index, len(self.records), lambda i: self.load(self.records[i]), self._skipper, self.name)


def first_loadable(index: int, size: int, load_at, skipper: _Skipper, name: str) -> Record:
    """``load_at(index)``; a record that fails (DataError) raises, or with skip_bad_records is
    logged, counted in ``skipper`` and replaced by the next loadable one (up to 16 further on)."""
    for step in range(min(size, 16)):
        try:
            return load_at((index + step) % size)
        except DataError as e:
            skipper.bad(e.where, e.reason or "unreadable")
    raise DataError(name, f"no loadable record near index {index}")


_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")  # PIL's 16- and 32-bit greyscale modes


def read_image(path: str | Path | BinaryIO, where: str | None = None) -> np.ndarray:
    """An image file (or file object, named ``where`` in errors) -> uint8 (H, W, 3) RGB, read the way
    mmcv's ``cv2.imread`` reads it (what Sapiens was trained on):

    * the EXIF orientation is applied (a phone photo comes out upright, as annotators saw it);
    * greyscale and palette images become RGB; an alpha channel is dropped (not composited);
    * 16-bit images keep their high byte (a 16-bit grey PNG is not clipped to white).

    Unreadable, truncated, empty or missing files raise ``DataError`` naming the file.
    """
    where = where or path
    try:
        with Image.open(path) as img:
            img.load()  # decodes fully: truncated files raise here instead of giving grey rows
            ImageOps.exif_transpose(img, in_place=True)  # no copy when there is no orientation tag
            if img.mode in _WIDE_GREY_MODES:  # keep the high byte
                grey = (np.clip(np.asarray(img, np.int64), 0, 65535) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=-1)
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise DataError(where, "missing image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(where, f"unreadable or truncated image ({e})") from None


def read_gray(
    path: str | Path | BinaryIO, dtype=None, where: str | None = None, *, sixteen_bit: bool = False
) -> np.ndarray:
    """A single-channel PNG (8- or 16-bit) file or file object -> (H, W) array, errors naming it.
    ``sixteen_bit``: refuse anything else (MINI-RGBD depth is 16-bit millimetres; an 8-bit or RGB
    file read as millimetres would give silently wrong depth)."""
    where = where or path
    try:
        with Image.open(path) as img:
            img.load()
            mode, arr = img.mode, np.asarray(img)
    except FileNotFoundError:
        raise DataError(where, "missing file") from None
    except (OSError, ValueError) as e:
        raise DataError(where, f"unreadable or truncated image ({e})") from None
    if sixteen_bit and mode not in _WIDE_GREY_MODES:
        raise DataError(where, f"expected a 16-bit depth PNG (millimetres), got image mode {mode!r}")
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr if dtype is None else arr.astype(dtype)


def _load_json(path: Path, *, object_only: bool = True) -> Any:
    """A JSON file's content (``coco_schema.read_json``: every way the read can fail is a DataError
    naming the file), and with ``object_only`` (COCO annotation files) refused unless an object."""
    data = coco_schema.read_json(path)
    if object_only and not isinstance(data, dict):
        raise DataError(path, f"not a COCO file (a JSON object expected, got {type(data).__name__})")
    return data


class CocoKeypointSource(_RecordSource):
    """One record per non-crowd person annotation with keypoints in a COCO keypoint file.

    Args:
      ann_file: COCO JSON (images, annotations with 17x3 keypoints and an [x, y, w, h] bbox).
      image_root: folder the images' ``file_name`` is relative to.
      domain: 'synthetic' or 'real' for images without an ``is_synthetic`` field.
      skip_bad_records: skip (and list in ``skipped``) bad annotations/files instead of failing.
      name: label used in messages and batch counts.
    Record fields: image uint8 (H, W, 3); keypoints (K, 3) [x, y, visibility 0/1/2]; bbox (4,)
    xywh; image_id, ann_id; is_real; has_pose = 1, has_depth = has_normal = 0.

    The file is checked once, when read, by ``coco_schema``: every image, annotation and category
    against its schema (types, ranges), each annotation for consistency (3K keypoint numbers,
    visibility 0/1/2, ``num_keypoints`` equal to the labelled points, a positive box; box and
    labelled keypoints inside the declared image size, and inside the decoded size when an image
    turns out to have another), image paths resolved (symlinks included) inside ``image_root``.
    Each finding raises ``DataError`` naming the file, the record and the field, or with
    ``skip_bad_records`` is skipped and listed in ``skipped``. Crowd annotations and annotations
    without labelled keypoints are not records: they are counted in ``dropped``. Ids may be any
    JSON scalar (``coco_schema.IdMap``); ids that are not int64 integers are mapped to fresh ints,
    listed in ``id_maps``.
    """

    dense_targets = ()  # the dense targets its records carry (training.batch): none

    def __init__(
        self,
        ann_file: str | Path,
        image_root: str | Path,
        *,
        domain: str = "real",
        skip_bad_records: bool = False,
        name: str | None = None,
        num_keypoints: int = NUM_COCO_KEYPOINTS,
    ):
        if domain not in ("synthetic", "real"):
            raise ValueError(f"domain must be 'synthetic' or 'real', got {domain!r}")
        self.ann_file, self.image_root = Path(ann_file), Path(image_root)
        self.name = name or self.ann_file.stem
        self.num_keypoints = num_keypoints
        self._skipper = _Skipper(skip_bad_records)
        self.dropped = {"crowd": 0, "no_keypoints": 0}  # not records, and not errors
        data = _load_json(self.ann_file)
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise DataError(self.ann_file, f"not a COCO file (no {key!r} list)")
        if data.get("categories") is not None:
            self._check_categories(data["categories"])
        images, unusable = self._images(data["images"])
        self.records = self._annotations(data["annotations"], images, unusable, domain)
        if not self.records:
            raise DataError(self.ann_file, "no usable person annotations with keypoints")
        if any(self.dropped.values()):
            log.info(
                "%s: %s annotations are not person records (%s)",
                self.ann_file,
                sum(self.dropped.values()),
                ", ".join(f"{k}: {v}" for k, v in self.dropped.items()),
            )

    def _bad(self, finding: coco_schema.Finding, kind: str) -> None:
        self._skipper.bad(finding.where(self.ann_file, kind), finding.message())

    def _check_categories(self, categories: Any) -> None:
        """'categories', when given: a list of category objects with a keypoint list of K names."""
        if not isinstance(categories, list):
            raise DataError(self.ann_file, f"'categories' is not a list (got {type(categories).__name__})")
        good, bad = coco_schema.validate("category", categories)
        for f in bad:
            self._bad(f, "category")
        for i, cat in good:
            names = cat.get("keypoints")
            if names and len(names) != self.num_keypoints:
                reason = f"names {len(names)} keypoints, not {self.num_keypoints}"
                self._bad(coco_schema.Finding(i, cat["id"], "'keypoints'", reason), "category")

    def _images(self, entries: list) -> tuple[dict, set]:
        """id -> checked image entry; and the ids of entries that are refused (their annotations
        are not reported again)."""
        good, bad = coco_schema.validate("image", entries)
        unusable = set()
        for f in bad:
            self._bad(f, "image")
            with contextlib.suppress(ValueError, AttributeError):  # no usable id: nothing to remember
                unusable.add(coco_schema.canonical_id(entries[f.index].get("id")))
        images = {}
        for _, img in good:
            if img["id"] in images:  # which file its annotations belong to is unknowable
                self._skipper.bad(self.ann_file, f"image id {img['id']!r} appears more than once in 'images'")
                unusable.add(img["id"])
            images[img["id"]] = img
        for image_id in unusable:
            images.pop(image_id, None)
        self.id_maps = {"image": coco_schema.IdMap(images).mapped}
        return images, unusable

    def _annotations(self, entries: list, images: dict, unusable: set, domain: str) -> list[dict]:
        """The person records of the checked annotations (module docstring of ``coco_schema``)."""
        good, bad = coco_schema.validate("annotation", entries)
        for f in bad:
            self._bad(f, "annotation")
        kept, seen = [], set()
        for _, ann in good:
            where = f"{self.ann_file} annotation {ann['id']!r}"
            if ann["id"] in seen:
                self._skipper.bad(where, "duplicate annotation id")
                continue
            seen.add(ann["id"])
            if ann.get("iscrowd"):
                self.dropped["crowd"] += 1
                continue
            if ann["image_id"] not in images:
                if ann["image_id"] not in unusable:  # those are reported once, with the image entry
                    self._skipper.bad(where, f"field 'image_id': {ann['image_id']!r} is not in 'images'")
                continue
            kept.append(ann)
        sizes = [coco_schema.declared_size(images[a["image_id"]]) for a in kept]
        findings = coco_schema.annotation_findings_bulk(kept, self.num_keypoints, sizes)
        image_ids, ann_ids = coco_schema.IdMap(images), coco_schema.IdMap(a["id"] for a in kept)
        self.id_maps["annotation"] = ann_ids.mapped
        paths: dict[Any, tuple[Path, str | None]] = {}
        real_dirs: dict[str, str] = {}  # resolved folders, shared by every image_path call
        records = []
        for i, ann in enumerate(kept):
            where = f"{self.ann_file} annotation {ann['id']!r}"
            if i in findings:
                self._skipper.bad(where, "field {}: {}".format(*findings[i]))
                continue
            if not any(v > 0 for v in ann["keypoints"][2::3]):
                self.dropped["no_keypoints"] += 1
                continue
            kpts = np.asarray(ann["keypoints"], np.float32).reshape(self.num_keypoints, 3)
            img = images[ann["image_id"]]
            if ann["image_id"] not in paths:
                paths[ann["image_id"]] = coco_schema.image_path(self.image_root, img["file_name"], real_dirs)
            path, problem = paths[ann["image_id"]]
            if problem is not None:
                if problem.startswith("file_name"):  # a problem of the annotation file
                    self._skipper.bad(where, problem)
                else:  # a problem of the image file
                    self._skipper.bad(path, f"{problem} (annotation {ann['id']!r})")
                continue
            synthetic = img.get("is_synthetic")
            records.append(
                {
                    "path": str(path),
                    "ann_id": ann_ids(ann["id"]),
                    "image_id": image_ids(ann["image_id"]),
                    "keypoints": kpts,
                    "bbox": np.asarray(ann["bbox"], np.float32),
                    "is_real": (domain == "real") if synthetic is None else not synthetic,
                    "size": coco_schema.declared_size(img),
                    "where": where,
                }
            )
        return records

    def load(self, rec: dict) -> Record:
        """The record of parsed annotation ``rec``. When the decoded image's size differs from the
        declared one (or none was declared), box and keypoints are checked against the decoded
        size: a finding raises ``DataError`` (``__getitem__`` skips it with skip_bad_records)."""
        image = read_image(rec["path"])
        h, w = image.shape[:2]
        if rec.get("size") != (w, h):
            found = coco_schema.geometry_finding(
                rec["bbox"].tolist(), rec["keypoints"].ravel().tolist(), float(w), float(h)
            )
            if found is not None:
                declared = f"declared {rec['size'][0]}x{rec['size'][1]}" if rec.get("size") else "no size declared"
                raise DataError(
                    rec.get("where", rec["path"]),
                    f"field {found[0]}: {found[1]} (the decoded image {rec['path']}; {declared})",
                )
        return coco_record(image, rec)

    def __repr__(self) -> str:
        return f"CocoKeypointSource({self.name}: {len(self)} persons from {self.ann_file})"


def coco_record(image: np.ndarray, rec: dict) -> Record:
    """A COCO person record from its decoded image (H, W, 3) and parsed annotation ``rec``."""
    return {
        "image": image,
        "keypoints": np.array(rec["keypoints"], np.float32),
        "bbox": np.array(rec["bbox"], np.float32),
        "image_id": np.int64(rec["image_id"]),
        "ann_id": np.int64(rec["ann_id"]),
        "is_real": np.float32(rec["is_real"]),
        "has_pose": np.float32(1),
        "has_depth": np.float32(0),
        "has_normal": np.float32(0),
    }


def parse_sequences(spec: str | list | tuple) -> list[str]:
    """Sequence numbers or names (a tuple such as (1, 2, 3) or ('01', '02')) -> ['01', '02', ...];
    the string forms '01-08' and '01,03,11-12' work too, also inside a tuple."""
    if isinstance(spec, (list, tuple)):
        return [name for s in spec for name in (parse_sequences(s) if isinstance(s, str) else [str(s).zfill(2)])]
    out = []
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            out += [f"{i:02d}" for i in range(a, b + 1)]
        elif part:
            out.append(part.zfill(2) if part.isdigit() else part)
    if not out:
        raise ValueError(f"no MINI-RGBD sequences in {spec!r}")
    return out


def read_joints_2ddep(path: str | Path) -> np.ndarray:
    """A ``syn_joints_2Ddep_XXXXX.txt`` file -> (25, 3) [x, y, depth_mm], rows ordered by joint id."""
    try:
        rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataError(path, "missing joints file") from None
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable joints file ({e})") from None
    if rows.shape != (25, 4):
        raise DataError(path, f"expected 25 lines 'x y depth_mm joint_id', got shape {rows.shape}")
    ids = rows[:, 3].astype(int)
    if sorted(ids.tolist()) != list(range(25)):
        raise DataError(path, "joint ids must be 0..24 once each")
    if not np.isfinite(rows).all():
        raise DataError(path, "NaN or infinite joint values")
    out = np.empty((25, 3))
    out[ids] = rows[:, :3]
    return out


class MiniRgbdSource(_RecordSource):
    """MINI-RGBD frames as top-down person records with pose, depth and normal targets.

    Args:
      root: folder holding the sequence folders ``01`` ... ``12``.
      sequences: '01-08', '09,10', or a list.
      intrinsics: (fx, fy, cx, cy) of the 640x480 frames (the dataset's own by default).
      skip_bad_records: skip bad frames instead of failing.
    Record fields: as ``CocoKeypointSource`` plus depth (H, W) float32 metres (-1 where invalid or
    not the person), normal (H, W, 3) float32 (0 = invalid), mask (H, W) uint8, intrinsics (3, 3)
    float32 at the frame's size; 13 COCO points
    (eyes and ears have visibility 0); has_pose = has_depth = has_normal = 1; is_real = 0.
    """

    dense_targets = ("depth", "normal")  # the dense targets its records carry (training.batch)

    def __init__(
        self,
        root: str | Path,
        sequences: str | list = "01-12",
        *,
        intrinsics: tuple[float, float, float, float] = geometry.MINI_RGBD_INTRINSICS,
        skip_bad_records: bool = False,
        name: str = "mini_rgbd",
    ):
        self.root, self.name, self.intrinsics = Path(root), name, intrinsics
        self._skipper = _Skipper(skip_bad_records)
        if not self.root.is_dir():
            raise DataError(self.root, "MINI-RGBD root is not a directory")
        self.records = []
        for seq in parse_sequences(sequences):
            rgb_dir = self.root / seq / "rgb"
            if not rgb_dir.is_dir():
                raise DataError(rgb_dir, "missing MINI-RGBD sequence folder")
            for rgb in sorted(rgb_dir.glob("syn_*.png")):
                frame = rgb.stem.removeprefix("syn_")
                files = {
                    "rgb": rgb,
                    "depth": self.root / seq / "depth" / f"syn_{frame}_depth.png",
                    "mask": self.root / seq / "fg_mask" / f"mask_{frame}.png",
                    "joints": self.root / seq / "joints_2Ddep" / f"syn_joints_2Ddep_{frame}.txt",
                }
                lost = [p for p in files.values() if not p.is_file()]
                if lost:
                    self._skipper.bad(lost[0], "missing file")
                    continue
                image_id = int(seq) * 100_000 + int(frame) if seq.isdigit() and frame.isdigit() else len(self.records)
                self.records.append({**{k: str(v) for k, v in files.items()}, "image_id": image_id})
        if not self.records:
            raise DataError(self.root, f"no MINI-RGBD frames in sequences {sequences!r}")

    def load(self, rec: dict) -> Record:
        return mini_rgbd_record(
            read_image(rec["rgb"]),
            read_gray(rec["depth"], np.float32, sixteen_bit=True),
            read_gray(rec["mask"]),
            read_joints_2ddep(rec["joints"]),
            rec["image_id"],
            self.intrinsics,
            where=rec["depth"],
        )

    def __repr__(self) -> str:
        return f"MiniRgbdSource({len(self)} frames from {self.root})"


def mini_rgbd_record(
    image: np.ndarray,
    depth_mm: np.ndarray,
    mask: np.ndarray,
    joints: np.ndarray,
    image_id: int,
    intrinsics: tuple[float, float, float, float] = geometry.MINI_RGBD_INTRINSICS,
    where: str | Path = "MINI-RGBD frame",
    normal: np.ndarray | None = None,
) -> Record:
    """A MINI-RGBD record from decoded arrays: image (H, W, 3) uint8, depth_mm (H, W), mask (H, W)
    (non-zero = infant), joints (25, 3) [x, y, depth_mm] by SMIL id; ``intrinsics`` given at 640x480.
    ``normal`` (H, W, 3) float32: the normals already computed from this depth with these intrinsics
    (a TFDS build stores them); None computes them (the costly part of a read)."""
    mask = mask > 0
    if depth_mm.shape != image.shape[:2] or mask.shape != image.shape[:2]:
        raise DataError(
            where, f"depth/mask size {depth_mm.shape}/{mask.shape} differs from the image's {image.shape[:2]}"
        )
    kpts, visible = smil25_to_coco17(joints[:, :2])
    h, w = mask.shape
    inside = (kpts[:, 0] >= 0) & (kpts[:, 0] <= w - 1) & (kpts[:, 1] >= 0) & (kpts[:, 1] <= h - 1)
    vis = np.where((visible > 0) & inside, 2.0, 0.0)
    depth_m = depth_mm.astype(np.float32) / 1000.0
    person = mask & (depth_m > 0)
    bbox = _bbox_from(kpts[vis > 0], mask)
    if bbox is None:
        raise DataError(where, "no visible joints and an empty mask")
    fx, fy, cx, cy = intrinsics  # given for 640x480: scale to this frame's size
    sy, sx = h / geometry.MINI_RGBD_SIZE[0], w / geometry.MINI_RGBD_SIZE[1]
    scaled = (fx * sx, fy * sy, cx * sx, cy * sy)
    if normal is None:
        normal = _normals_in_window(depth_m, person, scaled)
    elif normal.shape != image.shape:
        raise DataError(where, f"stored normals of size {normal.shape} for a {image.shape} frame")
    return {
        "image": image,
        "keypoints": np.concatenate([kpts, vis[:, None]], 1).astype(np.float32),
        "intrinsics": geometry.intrinsics_matrix(*scaled).astype(np.float32),
        "bbox": bbox,
        "image_id": np.int64(image_id),
        "ann_id": np.int64(image_id),
        "depth": np.where(person, depth_m, -1.0).astype(np.float32),
        "normal": normal,
        "mask": mask.astype(np.uint8),
        "is_real": np.float32(0),
        "has_pose": np.float32(1),
        "has_depth": np.float32(1),
        "has_normal": np.float32(1),
    }


def _normals_in_window(depth: np.ndarray, person: np.ndarray, intrinsics, margin: int = 8) -> np.ndarray:
    """``geometry.normals_from_depth`` computed only in the person's bounding window (+ margin):
    the same values at a fraction of the cost (the infant covers a small part of the frame)."""
    normal = np.zeros(depth.shape + (3,), np.float32)
    if not person.any():
        return normal
    rows, cols = np.nonzero(person.any(1))[0], np.nonzero(person.any(0))[0]
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, depth.shape[0])
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, depth.shape[1])
    fx, fy, cx, cy = intrinsics
    normal[y0:y1, x0:x1] = geometry.normals_from_depth(
        depth[y0:y1, x0:x1], person[y0:y1, x0:x1], (fx, fy, cx - x0, cy - y0)
    )
    return normal


def _bbox_from(points: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Tight xywh box around the given points (N, 2) and the mask's pixels; None if both empty."""
    xs, ys = [points[:, 0]], [points[:, 1]]
    if mask.any():
        rows, cols = np.nonzero(mask)
        xs.append(cols.astype(np.float64))
        ys.append(rows.astype(np.float64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.size == 0:
        return None
    x0, y0, x1, y1 = x.min(), y.min(), x.max() + 1, y.max() + 1
    return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)


def load_skeletons(path: str | Path, num_keypoints: int = NUM_COCO_KEYPOINTS) -> np.ndarray:
    """Skeleton-only keypoints for the prior -> (N, K, 3) float32 [x, y, visibility].

    ``path``: an ``.npz`` with ``keypoints`` [N, K, 2|3] (visibility 1 when absent), a COCO keypoint
    JSON (one skeleton per annotation with keypoints), or a MINI-RGBD root (every frame's joints).
    """
    path = Path(path)
    if path.is_dir():
        src = MiniRgbdSource(path, sorted(p.name for p in path.iterdir() if (p / "rgb").is_dir()))
        skel = []
        for rec in src.records:
            kpts, visible = smil25_to_coco17(read_joints_2ddep(rec["joints"])[:, :2])
            skel.append(np.concatenate([kpts, visible[:, None]], 1))
        out = np.stack(skel)
    elif path.suffix == ".json":
        out = _coco_skeletons(path, num_keypoints)
    elif path.suffix == ".npz":
        try:
            with np.load(path) as f:
                if "keypoints" not in f:
                    raise DataError(path, f"no 'keypoints' array (found {sorted(f.files)})")
                out = np.asarray(f["keypoints"], np.float64)
        except FileNotFoundError:
            raise DataError(path, "missing skeleton file") from None
        if out.ndim != 3 or out.shape[1] != num_keypoints or out.shape[2] not in (2, 3):
            raise DataError(path, f"'keypoints' must be [N, {num_keypoints}, 2|3], got {list(out.shape)}")
        if out.shape[2] == 2:
            out = np.concatenate([out, np.ones(out.shape[:2] + (1,))], -1)
    else:
        raise DataError(path, "skeletons must be an .npz, a COCO .json or a MINI-RGBD folder")
    if not np.isfinite(out).all():
        bad = int(np.nonzero(~np.isfinite(out).all(axis=(1, 2)))[0][0])
        raise DataError(path, f"skeleton {bad} has NaN or infinite values")
    out[..., 2] = (out[..., 2] > 0).astype(np.float64)
    return out.astype(np.float32)


def _coco_skeletons(path: Path, num_keypoints: int) -> np.ndarray:
    """(N, K, 3) keypoints of a COCO file's non-crowd annotations with keypoints, every annotation
    checked by ``coco_schema`` (the first finding raises ``DataError`` naming it)."""
    data = _load_json(path)
    if not isinstance(data.get("annotations"), list):
        raise DataError(path, "not a COCO file (no 'annotations' list)")
    good, bad = coco_schema.validate("annotation", data["annotations"])
    if bad:
        raise DataError(bad[0].where(path, "annotation"), bad[0].message())
    anns = [a for _, a in good if a["keypoints"] and not a.get("iscrowd")]
    if not anns:
        raise DataError(path, "no annotations with keypoints")
    findings = coco_schema.annotation_findings_bulk(anns, num_keypoints, [None] * len(anns))
    if findings:
        i, (field, reason) = next(iter(sorted(findings.items())))
        raise DataError(f"{path} annotation {anns[i]['id']!r}", f"field {field}: {reason}")
    return np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), num_keypoints, 3)
