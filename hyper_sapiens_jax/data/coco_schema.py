"""The one validation layer of COCO-style records: keypoint files, image lists and detection files.

Every file the data readers take (``sources.CocoKeypointSource``, ``unlabeled.UnlabeledSource``) is
checked here once, when it is read:

  read_json(path)                  the file's JSON; every way it can fail to read (missing, a
                                   directory, too large, not UTF-8, not JSON, nested too deep, a
                                   number too long) is a ``DataError`` naming the file
  IMAGE / ANNOTATION / DETECTION / CATEGORY
                                   pydantic v2 schemas (types and ranges) of one record of each kind
  validate(kind, entries, ...)     each entry -> its checked fields, or a ``Finding`` naming the
                                   record and the field (the caller raises it or skips it)
  annotation_findings(ann, K, size) consistency: keypoint count, visibility flags, ``num_keypoints``
                                   against the visible points, a positive box, and the box and the
                                   labelled keypoints inside the image (``geometry_finding``)
  IdMap                            ids of any JSON scalar type (int, integral or not float, string)
                                   -> int64, consistently: 7 and 7.0 are one id, "7" another
  image_path(root, file_name)      the image's path, refused when it resolves (symlinks included)
                                   outside ``root`` or is a directory

Ids are canonical keys: an integer, or an integral float, is that int; any other finite float
stays a float; a non-empty string stays a string; booleans, null, lists and objects are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NotRequired

import numpy as np
from pydantic import ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from hyper_sapiens_jax.data.errors import DataError

# Files above this size are refused before reading (a 150k-annotation COCO file is ~0.5 GB).
MAX_JSON_BYTES = 4 << 30
# A box or a labelled keypoint may overhang its image by this fraction of the image's side (boxes
# padded by annotators); farther out it is a finding.
GEOMETRY_MARGIN = 0.1
# No pixel coordinate of any image lies farther out (and float32 records hold it exactly enough).
MAX_COORD = 1e7
INT64 = (-(2**63), 2**63 - 1)


def read_json(path: str | Path, what: str = "annotation file") -> Any:
    """The JSON content of ``path``; ``DataError`` naming it for every way the read can fail."""
    path = Path(path)
    try:
        if path.is_dir():
            raise DataError(path, f"is a directory, not a JSON {what}")
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise DataError(path, f"{what} of {size} bytes is larger than the {MAX_JSON_BYTES}-byte limit")
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(path, f"missing {what}") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"unreadable {what}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise DataError(path, f"unreadable {what}: JSON nested too deeply") from None
    except MemoryError:
        raise DataError(path, f"unreadable {what}: too large to hold in memory") from None
    except (OSError, ValueError) as e:  # JSONDecodeError, a number with too many digits
        raise DataError(path, f"unreadable {what} ({e})") from None


# ---------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------
def canonical_id(value: Any) -> int | float | str:
    """A JSON scalar id -> its canonical key (module docstring); ValueError for anything else."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not an id (an integer, a number or a non-empty string)")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not an id (not finite)")
        return int(value) if value.is_integer() else value
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"{value!r:.40} is not an id (an integer, a number or a non-empty string)")


def _flag(value: Any) -> bool:
    """``iscrowd`` / ``is_synthetic``: 0, 1, false or true (not "0", not 2)."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{value!r:.40} is not 0, 1, false or true")


Id = Annotated[Any, PlainValidator(canonical_id)]
Flag = Annotated[Any, PlainValidator(_flag)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # int or float, finite; not bool or str
MAX_INT = 2**31 - 1  # no count or image side is larger (PNG's limit); larger ones overflow numpy
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_INT)]
Side = Annotated[int, Field(strict=True, gt=0, le=MAX_INT)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Box = Annotated[list[Number], Field(min_length=4, max_length=4)]
_CONFIG = ConfigDict(extra="ignore", strict=True)


@with_config(_CONFIG)
class Image(TypedDict):
    id: Id
    file_name: Name
    width: NotRequired[Side | None]
    height: NotRequired[Side | None]
    is_synthetic: NotRequired[Flag | None]


@with_config(_CONFIG)
class Annotation(TypedDict):
    id: Id
    image_id: Id
    keypoints: list[Number]
    bbox: Box
    num_keypoints: NotRequired[Count | None]
    iscrowd: NotRequired[Flag]
    category_id: NotRequired[Id]


@with_config(_CONFIG)
class Detection(TypedDict):
    image_id: Id
    bbox: Box
    id: NotRequired[Id]
    score: NotRequired[Number]
    iscrowd: NotRequired[Flag]
    category_id: NotRequired[Id]


@with_config(_CONFIG)
class Category(TypedDict):
    id: Id
    name: NotRequired[str]
    keypoints: NotRequired[list[Name]]
    skeleton: NotRequired[list[Annotated[list[Count], Field(min_length=2, max_length=2)]]]


SCHEMAS = {"image": Image, "annotation": Annotation, "detection": Detection, "category": Category}
_ADAPTERS = {kind: TypeAdapter(list[schema]) for kind, schema in SCHEMAS.items()}
_ONE = {kind: TypeAdapter(schema) for kind, schema in SCHEMAS.items()}


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One bad record: ``index`` in its list, its id as written (or '?'), the field and the reason."""

    index: int
    record_id: Any
    field: str
    reason: str

    def where(self, path: str | Path, kind: str) -> str:
        """'FILE annotation ID' (or 'FILE detection INDEX' when the record has no usable id)."""
        rid = self.record_id if self.record_id not in (None, "?") else f"#{self.index}"
        return f"{path} {kind} {rid}"

    def message(self) -> str:
        return f"field {self.field}: {self.reason}" if self.field else self.reason


def _field_name(loc: tuple) -> str:
    """A pydantic error location (without the list index) -> "'bbox'[2]" / "'width'" / ''."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"'{part}'"
    return out


def _reason(err: dict) -> str:
    if err["type"] == "missing":
        return "missing"
    if err["type"] == "value_error":  # our validators' own words
        return str(err["ctx"]["error"])
    got = err.get("input")
    return f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got!r:.40})"


def _record_id(entry: Any) -> Any:
    return entry.get("id", "?") if isinstance(entry, dict) else "?"


def validate(kind: str, entries: list) -> tuple[list[tuple[int, dict]], list[Finding]]:
    """Check every entry of a list of ``kind`` records against its schema: ([(index, checked
    fields)], [Finding]). All entries are validated in one pydantic call when they are all good;
    otherwise each bad entry gives one finding (its first bad field)."""
    try:
        return list(enumerate(_ADAPTERS[kind].validate_python(entries))), []
    except ValidationError as e:
        bad: dict[int, Finding] = {}
        for err in e.errors(include_url=False):
            index, loc = err["loc"][0], err["loc"][1:]
            if index in bad:
                continue
            entry = entries[index]
            if not isinstance(entry, dict):
                bad[index] = Finding(index, "?", "", f"not a JSON object ({entry!r:.40})")
            else:
                bad[index] = Finding(index, _record_id(entry), _field_name(loc), _reason(err))
    good = [(i, _ONE[kind].validate_python(entry)) for i, entry in enumerate(entries) if i not in bad]
    return good, sorted(bad.values(), key=lambda f: f.index)


def coordinate_finding(bbox: list[float], keypoints: list[float] | None = None) -> tuple[str, str] | None:
    """(field, reason) for the first box or keypoint number beyond ``MAX_COORD`` pixels."""
    for field, values in (("'bbox'", bbox), ("'keypoints'", keypoints or ())):
        for i, v in enumerate(values):
            if abs(v) > MAX_COORD:
                return f"{field}[{i}]", f"{v} is no pixel coordinate (|value| > {MAX_COORD:g})"
    return None


def geometry_finding(
    bbox: list[float], keypoints: list[float] | None, width: float, height: float
) -> tuple[str, str] | None:
    """(field, reason) when the box or a labelled keypoint lies outside a ``width`` x ``height``
    image (beyond ``GEOMETRY_MARGIN`` of its side); None when they fit."""
    mx, my = GEOMETRY_MARGIN * width, GEOMETRY_MARGIN * height
    x, y, w, h = bbox
    if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
        return "'bbox'", f"box {list(bbox)} lies outside its {width}x{height} image"
    if x < -mx or y < -my or x + w > width + mx or y + h > height + my:
        return "'bbox'", f"box {list(bbox)} reaches far outside its {width}x{height} image"
    for k in range(len(keypoints or ()) // 3):
        px, py, v = keypoints[3 * k : 3 * k + 3]
        if v > 0 and not (-mx <= px <= width + mx and -my <= py <= height + my):
            where = f"labelled keypoint {k} at ({px}, {py})"
            return f"'keypoints'[{3 * k}]", f"{where} lies outside its {width}x{height} image"
    return None


def annotation_findings(ann: dict, num_keypoints: int, size: tuple[int, int] | None) -> tuple[str, str] | None:
    """(field, reason) of the first inconsistency of a schema-checked annotation: 3K keypoint
    numbers, visibility 0/1/2, ``num_keypoints`` equal to the labelled points, a box of positive
    size, and (``size`` (width, height) declared) box and labelled points inside the image."""
    kpts, bbox = ann["keypoints"], ann["bbox"]
    if len(kpts) != 3 * num_keypoints:
        return "'keypoints'", f"must hold {3 * num_keypoints} numbers, got {len(kpts)}"
    flags = kpts[2::3]
    odd = sorted({v for v in flags if v not in (0, 1, 2)})
    if odd:
        return "'keypoints'", f"visibility flags must be 0, 1 or 2, got {odd[:5]}"
    far = coordinate_finding(bbox, kpts)
    if far is not None:
        return far
    labelled = sum(v > 0 for v in flags)
    if ann.get("num_keypoints") is not None and ann["num_keypoints"] != labelled:
        return "'num_keypoints'", f"{ann['num_keypoints']} contradicts the {labelled} labelled keypoints"
    if bbox[2] <= 0 or bbox[3] <= 0:
        return "'bbox'", f"box {bbox} has a zero or negative width or height"
    if size is not None:
        return geometry_finding(bbox, kpts, *size)
    return None


def declared_size(image: dict) -> tuple[int, int] | None:
    """(width, height) when the image entry declares both, else None."""
    w, h = image.get("width"), image.get("height")
    return (w, h) if w and h else None


class IdMap:
    """Canonical ids -> int64: an int in int64's range is itself; any other id (a string, a
    non-integral float, a huge int) gets a fresh int above the largest such int, in order of
    first appearance. ``mapped`` lists those {original: int} (what the records carry instead)."""

    def __init__(self, keys: Iterable[Any]):
        keys = list(dict.fromkeys(keys))
        ints = [k for k in keys if isinstance(k, int) and INT64[0] <= k <= INT64[1]]
        nxt = max(ints, default=-1) + 1
        self.mapped: dict[Any, int] = {}
        for k in keys:
            if not (isinstance(k, int) and INT64[0] <= k <= INT64[1]):
                self.mapped[k] = nxt
                nxt += 1

    def __call__(self, key: Any) -> int:
        return self.mapped.get(key, key)


def image_path(root: Path, file_name: str, _real_dirs: dict | None = None) -> tuple[Path, str | None]:
    """(root / file_name, None), or (that path, the reason it is refused): it leads outside
    ``root`` (absolute, '..', or a symlink whose target is outside, checked on the resolved path),
    it is a directory, or it is missing. ``_real_dirs``: a cache of resolved folders the caller
    keeps across calls (a file that is not itself a link then costs two system calls)."""
    root_str = str(root)
    path_str = os.path.join(root_str, file_name)
    path = Path(path_str)
    if "\x00" in file_name:
        return path, f"file_name {file_name!r} holds a NUL character"
    if os.path.isabs(file_name) or ".." in file_name.split("/"):
        return path, f"file_name {file_name!r} leads outside the image root {root}; give it relative to that folder"
    cache = {} if _real_dirs is None else _real_dirs
    try:
        folder = os.path.dirname(path_str)
        for f in (root_str, folder):
            if f not in cache:
                cache[f] = os.path.realpath(f)
        real = os.path.realpath(path_str) if os.path.islink(path_str) else os.path.join(cache[folder], path.name)
    except (OSError, ValueError) as e:  # a symlink loop, an unencodable name
        return path, f"file_name {file_name!r} does not resolve ({e})"
    real_root = cache[root_str]
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return path, f"file_name {file_name!r} leads outside the image root {root} (through a symlink to {real})"
    if os.path.isdir(real):
        return path, "is a directory, not an image file"
    if not os.path.isfile(real):
        return path, "missing image file"
    return path, None


def annotation_findings_bulk(
    anns: list[dict], num_keypoints: int, sizes: list[tuple[int, int] | None]
) -> dict[int, tuple[str, str]]:
    """``annotation_findings`` of many annotations at once: {position in ``anns``: (field,
    reason)}. The checks run vectorised; only flagged annotations are re-checked one by one (for
    the message), so a clean 150k-annotation file costs a few numpy passes."""
    n3 = 3 * num_keypoints
    rows = [i for i, a in enumerate(anns) if len(a["keypoints"]) == n3]
    flagged = set(range(len(anns))) - set(rows)
    if rows:
        kp = np.array([anns[i]["keypoints"] for i in rows], np.float64).reshape(len(rows), num_keypoints, 3)
        box = np.array([anns[i]["bbox"] for i in rows], np.float64)
        wh = np.array([sizes[i] or (np.nan, np.nan) for i in rows], np.float64)
        flags = kp[..., 2]
        labelled = (flags > 0).sum(1).tolist()
        bad = ~np.isin(flags, (0, 1, 2)).all(1)
        declared = (anns[i].get("num_keypoints") for i in rows)  # Python ints: no overflow however large
        bad |= np.array([v is not None and v != n for v, n in zip(declared, labelled)], bool)
        bad |= (box[:, 2] <= 0) | (box[:, 3] <= 0)
        bad |= (np.abs(box) > MAX_COORD).any(1) | (np.abs(kp) > MAX_COORD).any((1, 2))
        w, h = wh[:, 0], wh[:, 1]
        mx, my = GEOMETRY_MARGIN * w, GEOMETRY_MARGIN * h
        x0, y0, x1, y1 = box[:, 0], box[:, 1], box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]
        with np.errstate(invalid="ignore"):
            bad |= (x0 < -mx) | (y0 < -my) | (x1 > w + mx) | (y1 > h + my) | (x0 >= w) | (y0 >= h)
            px, py = kp[..., 0], kp[..., 1]
            off = (px < -mx[:, None]) | (px > (w + mx)[:, None]) | (py < -my[:, None]) | (py > (h + my)[:, None])
            bad |= ((flags > 0) & off).any(1)
        flagged |= {rows[j] for j in np.nonzero(bad)[0]}
    out = {}
    for i in sorted(flagged):
        found = annotation_findings(anns[i], num_keypoints, sizes[i])
        if found is not None:
            out[i] = found
    return out
