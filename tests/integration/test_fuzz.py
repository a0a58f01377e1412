"""Property-based fuzzing (Hypothesis) of the readers of hostile input: the COCO keypoint reader and
the unlabelled-box reader on generated JSON documents and records (wrong types, missing keys,
extreme numbers, odd strings, paths that leave the image folder), and the config override parser.

The property: the only outcomes are records that satisfy the schema (``_assert_valid_record``), or
``DataError`` / ``ConfigError``; anything else (a bare TypeError, KeyError, RecursionError, an
invalid record) is a bug.

CI runs a bounded, derandomized number of examples (``FUZZ_EXAMPLES``, default below; about 30 s
on 2 cores). A longer run by hand, random and reporting its seed and a reproduction blob on
failure::

    FUZZ_EXAMPLES=5000 python -m pytest -q tests/integration/test_fuzz.py -p no:xdist --hypothesis-show-statistics
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from hyper_sapiens_jax import cli
from hyper_sapiens_jax.config import ConfigError, check_values, load_config_file
from hyper_sapiens_jax.data import coco_schema
from hyper_sapiens_jax.data.sources import CocoKeypointSource, DataError
from hyper_sapiens_jax.data.unlabeled import UnlabeledSource
from tests.helpers import REPO

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 250,
    derandomize=not EXAMPLES,  # CI: the same examples every run; by hand: random, seed printed on failure
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
IMAGE_W, IMAGE_H = 40, 30
NAMES = [
    "a.png",
    "b.png",
    "c.jpg",
    "missing.png",
    "../outside.png",
    "/etc/hostname",
    "link.png",
    "dir.png",
    "",
    "a.png/",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An image folder: three decodable images (40x30), a symlink leading outside, a directory."""
    base = tmp_path_factory.mktemp("fuzz")
    folder = base / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.jpg"):
        Image.new("RGB", (IMAGE_W, IMAGE_H), (90, 120, 30)).save(folder / name)
    Image.new("RGB", (IMAGE_W, IMAGE_H)).save(base / "outside.png")
    (folder / "link.png").symlink_to(base / "outside.png")
    (folder / "dir.png").mkdir()
    return folder


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------
odd_text = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", " ", "0", "1", "nan", "1e400", "..", "/", "\x00", "é", "\ud7ff", "a" * 300]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, -1, 1e30, -1e30, 1e-300, 2**63, 2**64]),
    odd_text,
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=8
)


def _maybe(good):
    """Mostly a well-formed value, sometimes anything JSON can hold."""
    return st.one_of(good, good, good, json_values)


coords = st.one_of(st.floats(-5, IMAGE_W + 5), st.sampled_from([0.0, 1e30, -1e30, math.nan, math.inf, 1e9]))
keypoint = st.tuples(coords, coords, st.sampled_from([0, 1, 2, 2, 2, 3, -1, 1.5, True]))
keypoints = st.one_of(
    st.lists(keypoint, min_size=17, max_size=17).map(lambda ps: [v for p in ps for v in p]),
    st.lists(keypoint, min_size=0, max_size=18).map(lambda ps: [v for p in ps for v in p]),
    json_values,
)
bbox = _maybe(st.lists(st.one_of(st.floats(-10, 60), coords), min_size=4, max_size=4))
ids = st.one_of(st.integers(0, 6), st.sampled_from([1.0, 2.5, "1", "x", 2**64, -3]), json_values)

image_entry = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "file_name": _maybe(st.sampled_from(NAMES)),
        "width": _maybe(st.sampled_from([IMAGE_W, IMAGE_H, 1, 0, 4000, 2**70, 10**400])),
        "height": _maybe(st.sampled_from([IMAGE_H, IMAGE_W, 1, 0, 4000, 2**70, 10**400])),
        "is_synthetic": _maybe(st.sampled_from([0, 1, True, False])),
    },
)
annotation_entry = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "image_id": ids,
        "keypoints": keypoints,
        "bbox": bbox,
        "num_keypoints": _maybe(st.one_of(st.integers(-1, 18), st.sampled_from([2**63, 2**70, 10**400]))),
        "iscrowd": _maybe(st.sampled_from([0, 1, True, False, "0", 2])),
        "category_id": _maybe(st.just(1)),
        "score": _maybe(st.floats(0, 1)),
    },
)
category_entry = st.fixed_dictionaries(
    {"id": ids}, optional={"name": _maybe(st.just("person")), "keypoints": _maybe(st.lists(odd_text, max_size=18))}
)


@st.composite
def near_valid_documents(draw):
    """A valid COCO keypoint file on the fixture's images (40x30), then 0-4 mutations: a field
    replaced by an odd value or by any JSON value, a field deleted, one keypoint number replaced."""
    files = ["a.png", "b.png", "c.jpg"]
    images = [
        {"id": i, "file_name": files[i], "width": IMAGE_W, "height": IMAGE_H} for i in range(draw(st.integers(1, 3)))
    ]
    annotations = []
    for j in range(draw(st.integers(1, 4))):
        points = draw(
            st.lists(
                st.tuples(st.floats(0, IMAGE_W - 1), st.floats(0, IMAGE_H - 1), st.sampled_from([0, 1, 2, 2])),
                min_size=17,
                max_size=17,
            )
        )
        annotations.append(
            {
                "id": j,
                "image_id": draw(st.integers(0, len(images) - 1)),
                "keypoints": [v for p in points for v in p],
                "bbox": [1.0, 1.0, IMAGE_W - 5.0, IMAGE_H - 5.0],
                "num_keypoints": sum(p[2] > 0 for p in points),
                "iscrowd": 0,
                "category_id": 1,
                "score": 0.9,
            }
        )
    huge = st.sampled_from([0, 1, 2**63, 2**70, 10**400, 1e308])
    odd = {
        "id": ids,
        "image_id": ids,
        "file_name": st.sampled_from(NAMES),
        "bbox": bbox,
        "keypoints": keypoints,
        "num_keypoints": huge,
        "width": huge,
        "height": huge,
    }
    for _ in range(draw(st.integers(0, 4))):
        entry = draw(st.sampled_from(images + annotations))
        key = draw(st.sampled_from([*sorted(entry), "extra"]))
        action = draw(st.sampled_from(["odd", "any", "delete", "element"]))
        if action == "delete":
            entry.pop(key, None)
        elif action == "element" and isinstance(entry.get("keypoints"), list) and entry["keypoints"]:
            k = draw(st.integers(0, len(entry["keypoints"]) - 1))
            entry["keypoints"][k] = draw(st.one_of(coords, scalars))
        else:
            entry[key] = draw(odd.get(key, scalars) if action == "odd" else json_values)
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


coco_documents = st.one_of(
    near_valid_documents(),
    near_valid_documents(),
    near_valid_documents(),
    json_values,
    st.fixed_dictionaries(
        {
            "images": _maybe(st.lists(st.one_of(image_entry, image_entry, json_values), max_size=5)),
            "annotations": _maybe(st.lists(st.one_of(annotation_entry, annotation_entry, json_values), max_size=6)),
        },
        optional={"categories": _maybe(st.lists(category_entry, max_size=2))},
    ),
)


def _write(path: Path, doc, raw: str | None) -> None:
    """The document as JSON (Python's, which writes NaN / Infinity tokens), or a raw variant."""
    path.write_text(raw if raw is not None else json.dumps(doc), encoding="utf-8", errors="surrogatepass")


raw_texts = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from(["", "{", "[" * 5000, '{"images": [], "annotations": [' + "[" * 3000, "\ufeff{}", "{}" * 2]),
)


# ---------------------------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------------------------
def _assert_valid_record(rec: dict, root: Path) -> None:
    """What every parsed COCO record must satisfy (the schema's guarantees)."""
    kpts, box = rec["keypoints"], rec["bbox"]
    assert kpts.shape == (17, 3) and kpts.dtype == np.float32 and np.isfinite(kpts).all()
    assert set(np.unique(kpts[:, 2])) <= {0.0, 1.0, 2.0} and (kpts[:, 2] > 0).any()
    assert box.shape == (4,) and np.isfinite(box).all() and box[2] > 0 and box[3] > 0
    assert Path(rec["path"]).resolve().is_relative_to(root.resolve()) and Path(rec["path"]).is_file()
    for key in ("image_id", "ann_id"):
        assert isinstance(rec[key], int) and not isinstance(rec[key], bool) and -(2**63) <= rec[key] < 2**63
    if rec["size"] is not None:
        assert coco_schema.geometry_finding(box.tolist(), kpts.ravel().tolist(), *rec["size"]) is None


@FUZZ
@given(doc=coco_documents, raw=raw_texts, skip=st.booleans())
def test_coco_reader_gives_valid_records_or_a_data_error(root, doc, raw, skip):
    path = root.parent / "ann.json"
    _write(path, doc, raw)
    try:
        src = CocoKeypointSource(path, root, skip_bad_records=skip)
    except DataError as e:
        assert str(path) in str(e) or str(root) in str(e)
        event("DataError")
        return
    event(f"records ({'some skipped' if src.skipped else 'none skipped'})")
    ann_ids = [r["ann_id"] for r in src.records]
    assert len(set(ann_ids)) == len(ann_ids)
    for rec in src.records:
        _assert_valid_record(rec, root)
    for i in range(len(src)):
        try:
            sample = src[i]
        except DataError:
            continue
        assert sample["image"].shape == (IMAGE_H, IMAGE_W, 3)
        assert (
            coco_schema.geometry_finding(
                sample["bbox"].tolist(), sample["keypoints"].ravel().tolist(), IMAGE_W, IMAGE_H
            )
            is None
        )


detection_documents = st.one_of(
    near_valid_documents().map(lambda d: d["annotations"]),
    near_valid_documents().map(lambda d: d["annotations"]),
    json_values,
    st.lists(st.one_of(annotation_entry, annotation_entry, json_values), max_size=6),
    st.fixed_dictionaries({"images": _maybe(st.lists(image_entry, max_size=4))}, optional={"annotations": json_values}),
)


@FUZZ
@given(
    boxes=detection_documents,
    listing=st.one_of(near_valid_documents().map(lambda d: d["images"]), st.lists(image_entry, max_size=4)),
    skip=st.booleans(),
)
def test_unlabelled_reader_gives_valid_boxes_or_a_data_error(root, boxes, listing, skip):
    boxes_path, list_path = root.parent / "boxes.json", root.parent / "list.json"
    _write(boxes_path, boxes, None)
    _write(list_path, {"images": listing}, None)
    try:
        src = UnlabeledSource(root, boxes_path, list_path, skip_bad_records=skip)
    except DataError:
        event("DataError")
        return
    event("records")
    for rec in src.records:
        assert Path(rec["path"]).resolve().is_relative_to(root.resolve()) and Path(rec["path"]).is_file()
        assert isinstance(rec["image_id"], int) and isinstance(rec["ann_id"], int)
        if rec["bbox"] is not None:
            assert len(rec["bbox"]) == 4 and all(math.isfinite(v) for v in rec["bbox"])
            assert rec["bbox"][2] > 0 and rec["bbox"][3] > 0


# ---------------------------------------------------------------------------------------------
# The config override parser
# ---------------------------------------------------------------------------------------------
STAGE1 = str(REPO / "configs" / "stage1.py")


def _fields() -> list[str]:
    flat = []

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat.append(f"{prefix}{k}")

    walk(load_config_file(STAGE1, "tiny").to_dict())
    return flat + ["optim", "nope", "optim.nope", "data.aug", "", "optim..lr", "model.image_size.0"]


value_texts = st.one_of(
    odd_text,
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        ["()", "(1,)", "(0, 64)", "(1.5, 0.5)", "[1, 2]", "True", "None", "'all'", "((50, 3),)", "{'a': 1}"]
    ),
    st.sampled_from(["(" * 200, "1" * 5000, "lambda: 0", "__import__('os')", "1e309", "-0.0", "0x10"]),
)


@FUZZ
@given(overrides=st.lists(st.tuples(st.sampled_from(_fields()), value_texts), min_size=1, max_size=3))
def test_config_overrides_give_a_config_or_a_config_error(overrides):
    argv = [f"--config.{field}={value}" for field, value in overrides]
    try:
        config = cli.load_config(f"{STAGE1}:tiny", argv)
        check_values(config)
    except ConfigError:
        event("ConfigError")
        return
    event("config")
