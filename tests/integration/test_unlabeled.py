"""Semi-supervised data: unlabelled person boxes, the weak/strong view pair and its affine, the
testbed's unlabelled split, the jobs' 'unlabeled' source (jobs/inputs.py), and the batched, zipped pipeline."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import ml_collections
import numpy as np
import pytest

from hyper_sapiens_jax.config import ConfigError, load_config_file
from hyper_sapiens_jax.data import codec, geometry
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import flip_permutation
from hyper_sapiens_jax.data.pipeline import MixEntry, train_dataset, train_iterator
from hyper_sapiens_jax.data.sources import CocoKeypointSource, DataError
from hyper_sapiens_jax.data.topdown import SampleConfig
from hyper_sapiens_jax.data.unlabeled import (
    WEAK_VIEW,
    UnlabeledSource,
    ViewPairTransform,
    unlabeled_dataset,
    view_pair_crops,
    view_pair_sample,
    weak_to_strong_keypoints,
    weak_view_params,
    zip_labeled_unlabeled,
)
from hyper_sapiens_jax.jobs import inputs
from hyper_sapiens_jax.testbed import unlabeled_split as tb_unlabeled
from hyper_sapiens_jax.testbed.writer import read_manifest, write_testbed
from tests.helpers import REPO, point_at_testbed

CFG = SampleConfig(input_size=(64, 48))
NO_TEXTURE = T.TextureAugParams(photometric_prob=0, blur_prob=0, median_blur_prob=0, dropout_prob=0)


# ---------------------------------------------------------------------------------------------
# The view pair
# ---------------------------------------------------------------------------------------------
def _warped_keypoints(record, crop, input_wh):
    """The record's keypoints through a crop the way ``random_topdown_crop`` moves labels: flip
    (with the left/right swap) in the source image, then the crop's UDP warp."""
    kpts, vis = record["keypoints"][:, :2], (record["keypoints"][:, 2] > 0).astype(np.float32)
    if crop["flipped"]:
        kpts, vis = T.flip_keypoints(kpts, vis, record["image"].shape[1])
    return T.warp_keypoints(kpts, vis, crop["warp_matrix"], input_wh)


def test_view_affine_carries_weak_keypoints_and_heatmaps_onto_the_strong_view(testbed):
    import jax.numpy as jnp

    from hyper_sapiens_jax.data.codec import encode_udp_heatmaps_device

    cfg = SampleConfig(input_size=(128, 96), heatmap_sigma=2.0, texture=NO_TEXTURE)
    records = [CocoKeypointSource(testbed.val_json, testbed.val_images)[i] for i in range(3)]
    mapped, strong, weights_mapped, weights_strong = [], [], [], []
    flips = rotated_flips = rotations = 0
    for seed in range(60):
        record = records[seed % 3]
        weak_crop, strong_crop = view_pair_crops(record, np.random.default_rng(seed), cfg)
        sample = view_pair_sample(record, np.random.default_rng(seed), cfg)
        assert np.array_equal(sample["weak"], weak_crop["image"])  # the crops the sample made
        assert np.array_equal(sample["strong"], strong_crop["image"])  # (no texture change here)
        assert not weak_crop["flipped"] and weak_crop["rotation"] == 0
        assert sample["view_flipped"] == float(strong_crop["flipped"])
        flips += bool(strong_crop["flipped"])
        rotations += strong_crop["rotation"] != 0
        rotated_flips += bool(strong_crop["flipped"]) and strong_crop["rotation"] != 0

        weak_kp, _ = _warped_keypoints(record, weak_crop, cfg.input_wh)
        strong_kp, strong_vis = _warped_keypoints(record, strong_crop, cfg.input_wh)
        got = weak_to_strong_keypoints(weak_kp, sample["view_affine"].astype(np.float64), sample["view_flipped"])
        np.testing.assert_allclose(got, strong_kp, atol=1e-3, err_msg=f"seed {seed}")
        # By hand as well: strong channel j is weak channel perm[j] when the views are mirrored.
        by_hand = T.apply_affine(weak_kp, sample["view_affine"].astype(np.float64))
        if sample["view_flipped"]:
            by_hand = by_hand[flip_permutation()]
        np.testing.assert_allclose(by_hand, strong_kp, atol=1e-3)

        vis = (record["keypoints"][:, 2] > 0).astype(np.float32)
        vis = vis[flip_permutation()] if strong_crop["flipped"] else vis
        _, mapped_vis = T.warp_keypoints(got, vis, np.eye(2, 3), cfg.input_wh)  # inside-the-crop rule
        for out, kp, v in ((weights_mapped, got, mapped_vis), (weights_strong, strong_kp, strong_vis)):
            out.append(codec.udp_target_weights(kp, v, input_wh=cfg.input_wh, heatmap_wh=cfg.heatmap_wh, sigma=2.0))
        mapped.append(got)
        strong.append(strong_kp)
        np.testing.assert_allclose(
            sample["intrinsics"],
            geometry.crop_intrinsics(
                geometry.default_intrinsics(*record["image"].shape[:2]),
                strong_crop["warp_matrix"],
                strong_crop["flipped"],
                record["image"].shape[1],
            ),
            rtol=1e-6,
        )
    assert flips >= 10 and 60 - flips >= 10 and rotations >= 15 and rotated_flips >= 5

    np.testing.assert_array_equal(np.stack(weights_mapped), np.stack(weights_strong))
    assert np.stack(weights_strong).sum() > 100  # most joints land inside the crops
    heat = [
        np.asarray(
            encode_udp_heatmaps_device(
                jnp.asarray(np.stack(k), jnp.float32), np.stack(w), cfg.input_wh, cfg.heatmap_wh, 2.0
            )
        )
        for k, w in ((mapped, weights_strong), (strong, weights_strong))
    ]
    assert heat[1].max() > 0.99
    np.testing.assert_allclose(heat[0], heat[1], atol=1e-5)


def test_view_pair_sample_schema_and_weak_view(testbed):
    source = UnlabeledSource(testbed.val_images, testbed.val_json)
    record = source[0]
    sample = view_pair_sample(record, np.random.default_rng(0), CFG)
    expected = {
        "weak": ((64, 48, 3), np.uint8),
        "strong": ((64, 48, 3), np.uint8),
        "view_affine": ((2, 3), np.float32),
        "view_flipped": ((), np.float32),
        "intrinsics": ((3, 3), np.float32),
        "has_intrinsics": ((), np.float32),
        "valid": ((), np.float32),
        "is_real": ((), np.float32),
        "image_id": ((), np.int32),
        "ann_id": ((), np.int32),
    }
    assert {k: (np.shape(v), np.asarray(v).dtype) for k, v in sample.items()} == expected
    assert sample["valid"] == 1 and sample["is_real"] == 1 and sample["has_intrinsics"] == 0
    # The strong view's texture changes it; the weak one is the plain crop.
    assert not np.array_equal(sample["strong"], view_pair_crops(record, np.random.default_rng(0), CFG)[1]["image"])
    assert WEAK_VIEW.flip_prob == 0 and WEAK_VIEW.rotate_prob == 0 and WEAK_VIEW.half_body_prob == 0
    assert weak_view_params(T.GeometryAugParams(bbox_padding=1.5)).bbox_padding == 1.5
    config = load_config_file(REPO / "configs/stage2.py", "tiny")
    overrides = config.get("semisup", {}).get("weak_view") or {"shift_prob": 0.5, "scale_range": [0.8, 1.2]}
    weak = ViewPairTransform.weak_params(ml_collections.ConfigDict(dict(overrides)))
    assert weak.flip_prob == 0 and weak.rotate_prob == 0 and isinstance(weak.scale_range, tuple)
    assert ViewPairTransform.weak_params(None) == WEAK_VIEW
    with pytest.raises(ValueError, match=r"unknown weak-view geometry fields \['spin'\]"):
        ViewPairTransform.weak_params({"spin": 1.0})
    # A record with intrinsics: the strong crop's camera is built from them.
    k = geometry.intrinsics_matrix(300.0, 310.0, 320.0, 240.0)
    with_k = view_pair_sample({**record, "intrinsics": k}, np.random.default_rng(0), CFG)
    assert with_k["has_intrinsics"] == 1 and not np.allclose(with_k["intrinsics"], sample["intrinsics"])


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
def _image(path: Path, h: int, w: int, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def files(tmp_path):
    """Three images (two sizes, one in a sub-folder), a COCO image list and a detection list."""
    root = tmp_path / "images"
    _image(root / "a.jpg", 40, 30)
    _image(root / "sub" / "b.png", 50, 60)
    _image(root / "c.jpeg", 40, 30)
    (root / "notes.txt").write_text("not an image")
    listing = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 30, "height": 40},
            {"id": 2, "file_name": "sub/b.png", "width": 60, "height": 50},
            {"id": 7, "file_name": "c.jpeg", "width": 30, "height": 40},
        ]
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "score": 0.9},
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 30], "score": 0.3},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.99},  # a car
        {"image_id": 7, "category_id": 1, "bbox": [0.5, 1.5, 8, 9], "score": 0.7, "id": 42},
    ]
    return root, _json(tmp_path / "images.json", listing), _json(tmp_path / "dets.json", dets), listing, dets


def test_folder_without_boxes_is_one_whole_image_box_per_image(files):
    root = files[0]
    src = UnlabeledSource(root)
    assert [Path(r["path"]).relative_to(root).as_posix() for r in src.records] == ["a.jpg", "c.jpeg", "sub/b.png"]
    rec = src[2]
    assert rec["image"].shape == (50, 60, 3) and rec["image"].dtype == np.uint8
    assert rec["bbox"].dtype == np.float32 and rec["bbox"].tolist() == [0, 0, 60, 50]
    assert (int(rec["image_id"]), int(rec["ann_id"])) == (2, 2) and src[0]["bbox"].tolist() == [0, 0, 30, 40]


def test_detections_with_an_image_list_keep_persons_above_min_score(files):
    root, listing, dets, *_ = files
    src = UnlabeledSource(root, dets, listing, min_score=0.5)
    assert [(r["image_id"], r["ann_id"]) for r in src.records] == [(1, 0), (7, 42)]
    assert src.dropped == {"category": 1, "score": 1, "crowd": 0}
    rec = src[1]
    assert rec["bbox"].tolist() == [0.5, 1.5, 8, 9] and rec["image"].shape == (40, 30, 3)
    assert len(UnlabeledSource(root, dets, listing)) == 3  # min_score 0: the car only is dropped
    with pytest.raises(DataError, match=r"dets.json: no usable person boxes \(3 below min_score=0.95\)"):
        UnlabeledSource(root, dets, listing, min_score=0.95)


def test_coco_image_lists_with_and_without_boxes(files, tmp_path):
    root, listing_path, _, listing, _ = files
    anns = [
        {"id": 5, "image_id": 2, "bbox": [1, 1, 30, 40], "category_id": 1, "iscrowd": 0},
        {"id": 6, "image_id": 2, "bbox": [0, 0, 60, 50], "category_id": 1, "iscrowd": 1},  # crowd
        {"id": 8, "image_id": 1, "bbox": [2, 2, 10, 10]},  # no category, no score
        {"id": 9, "image_id": 7, "bbox": [2, 2, 10, 10], "score": 0.1},
    ]
    boxes = _json(tmp_path / "boxes.json", {**listing, "annotations": anns})
    src = UnlabeledSource(root, boxes, min_score=0.2)
    assert [(r["image_id"], r["ann_id"], r["bbox"]) for r in src.records] == [
        (2, 5, [1, 1, 30, 40]),
        (1, 8, [2, 2, 10, 10]),
    ]
    assert src.dropped == {"category": 0, "score": 1, "crowd": 1}
    # "images" and no "annotations": whole images; an image list alone: the same.
    for whole in (UnlabeledSource(root, listing_path), UnlabeledSource(root, image_list=listing_path)):
        assert [r["image_id"] for r in whole.records] == [1, 2, 7]
        assert whole[1]["bbox"].tolist() == [0, 0, 60, 50]


def _bad_cases(tmp_path, root, listing, dets, dets_path):
    """name -> (args, expected message regex, (entries skipped, records left) with
    skip_bad_records, or None: it raises even then)."""
    lst = _json(tmp_path / "list.json", listing)
    two_images = listing["images"][:2]

    def dets_with(i, **change):
        entries = [dict(d) for d in dets]
        entries[i] = {k: v for k, v in {**entries[i], **change}.items() if v is not None}
        return _json(tmp_path / f"dets_{len(list(tmp_path.glob('dets_*')))}.json", entries)

    (tmp_path / "broken.json").write_text('[{"image_id": 1,')
    return {
        "missing folder": ((tmp_path / "nowhere",), r"nowhere: no such image folder", None),
        "missing boxes file": ((root, tmp_path / "absent.json", lst), r"absent.json: missing annotation", None),
        "missing image list": ((root, dets_with(0), tmp_path / "absent.json"), r"absent.json: missing", None),
        "malformed json": ((root, tmp_path / "broken.json", lst), r"broken.json: unreadable annotation", None),
        "not coco": ((root, _json(tmp_path / "odd.json", {"x": 1})), r"odd.json: neither a COCO", None),
        "detections without list": ((root, dets_with(0)), r"dets_\d.json: a COCO detection-results list", None),
        "no bbox": (
            (root, dets_with(1, bbox=None), lst),
            r"dets_\d.json detection 1: field 'bbox': missing",
            (1, 2),
        ),
        "no image_id": ((root, dets_with(0, image_id=None), lst), r"detection 0: field 'image_id': missing", (1, 2)),
        "unknown image": (
            (root, dets_with(3, image_id=99), lst),
            r"detection 3: field 'image_id': 99 is not in .*list",
            (1, 2),
        ),
        "zero width": (
            (root, dets_with(0, bbox=[1, 1, 0, 5]), lst),
            r"detection 0: field 'bbox': box .* w or h <= 0",
            (1, 2),
        ),
        "negative height": ((root, dets_with(0, bbox=[1, 1, 5, -2]), lst), r"detection 0: .*w or h <= 0", (1, 2)),
        "nan box": (
            (root, dets_with(0, bbox=[1, float("nan"), 5, 5]), lst),
            r"detection 0: field 'bbox'\[1\]: input should be a finite number",
            (1, 2),
        ),
        "infinite box": (
            (root, dets_with(0, bbox=[1, 1, float("inf"), 5]), lst),
            r"field 'bbox'\[2\]: input should be a finite number",
            (1, 2),
        ),
        "short box": (
            (root, dets_with(0, bbox=[1, 2, 3]), lst),
            r"detection 0: field 'bbox': list should have at least 4 items",
            (1, 2),
        ),
        "bad score": (
            (root, dets_with(0, score="high"), lst),
            r"detection 0: field 'score': input should be a valid number \(got 'high'\)",
            (1, 2),
        ),
        "missing image file": (
            (
                root,
                dets_path,
                _json(tmp_path / "list2.json", {"images": [*listing["images"][:2], {"id": 7, "file_name": "x.jpg"}]}),
            ),
            r"x.jpg: missing image file \(detection 3 of .*dets.json\)",
            (1, 2),
        ),
        "image entry without file_name": (
            (root, dets_path, _json(tmp_path / "list3.json", {"images": [*two_images, {"id": 7}]})),
            r"list3.json image 7: field 'file_name': missing",
            (2, 2),  # the entry, then the detection of image 7 it leaves unknown
        ),
    }


def test_bad_input_raises_naming_the_file_or_is_skipped(files, tmp_path):
    root, _, dets_path, listing, dets = files
    for name, (args, pattern, skipped) in _bad_cases(tmp_path, root, listing, dets, dets_path).items():
        with pytest.raises(DataError, match=pattern):
            UnlabeledSource(*args)
        if skipped is None:
            with pytest.raises(DataError, match=pattern):
                UnlabeledSource(*args, skip_bad_records=True)
            continue
        src = UnlabeledSource(*args, skip_bad_records=True)
        assert (len(src.skipped), len(src)) == skipped, name


def test_unreadable_image_raises_on_access_or_is_replaced(files, tmp_path):
    root = files[0]
    (root / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    src = UnlabeledSource(root)
    with pytest.raises(DataError, match=r"a.jpg: unreadable or truncated image"):
        src[0]
    skipping = UnlabeledSource(root, skip_bad_records=True)
    rec = skipping[0]  # replaced by the next loadable record
    assert int(rec["image_id"]) == 1 and rec["bbox"].tolist() == [0, 0, 30, 40]
    assert [s["file"] for s in skipping.skipped] == [str(root / "a.jpg")]


# ---------------------------------------------------------------------------------------------
# The testbed's unlabelled split
# ---------------------------------------------------------------------------------------------
def test_testbed_split_is_deterministic_and_cached(tmp_path):
    a = tb_unlabeled.write_unlabeled(tmp_path / "a", num_images=3, seed=1, image_size=(96, 128), workers=1)
    b = tb_unlabeled.write_unlabeled(tmp_path / "b", num_images=3, seed=1, image_size=(96, 128), workers=1)
    assert a.count == 3 and a.images == tmp_path / "a" / "images" and a.boxes == tmp_path / "a" / "boxes.json"
    names = sorted(p.name for p in a.images.iterdir())
    assert names == ["unl_00000.jpg", "unl_00001.jpg", "unl_00002.jpg"]
    for name in names:
        assert (a.images / name).read_bytes() == (b.images / name).read_bytes()
    assert a.boxes.read_bytes() == b.boxes.read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in a.root.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert tb_unlabeled.write_unlabeled(tmp_path / "a", num_images=3, seed=1, image_size=(96, 128)) == a
    assert time.perf_counter() - start < 0.2
    assert {p: p.stat().st_mtime_ns for p in a.root.rglob("*") if p.is_file()} == stamps
    other = tb_unlabeled.write_unlabeled(tmp_path / "a", num_images=3, seed=2, image_size=(96, 128))
    assert (other.images / names[0]).read_bytes() != (b.images / names[0]).read_bytes()
    coco = json.loads(a.boxes.read_text())
    assert all("keypoints" not in ann for ann in coco["annotations"])
    assert len(UnlabeledSource(a.images, a.boxes)) == 3


def _testbed_config(testbed):
    """A tiny stage-2 config whose testbed is the session's (same parameters: it is reused)."""
    config = load_config_file(REPO / "configs/stage2.py", "tiny")
    params = {k: v for k, v in read_manifest(testbed.root)["params"].items() if k != "format_version"}
    config.data.source, config.data.testbed_dir = "testbed", str(testbed.root)
    config.data.testbed = ml_collections.ConfigDict(params)
    config.data.num_unlabeled = 4
    return config


def test_builders_testbed_unlabeled_split_beside_an_untouched_testbed(testbed):
    config = _testbed_config(testbed)
    manifest, stamp = testbed.manifest.read_bytes(), testbed.manifest.stat().st_mtime_ns
    paths = inputs.resolved_paths(config.data, ["unlabeled"])
    assert paths["unlabeled_images"] == testbed.root / "unlabeled" / "images"
    assert paths["unlabeled_image_list"] is None and paths["unlabeled_min_score"] == 0.0
    source = inputs.build_source("unlabeled", paths)
    assert isinstance(source, UnlabeledSource) and len(source) == 4
    assert testbed.manifest.read_bytes() == manifest and testbed.manifest.stat().st_mtime_ns == stamp
    start = time.perf_counter()  # the testbed, asked again, is still the cached one
    write_testbed(testbed.root, **config.data.testbed.to_dict())
    assert time.perf_counter() - start < 0.5 and testbed.manifest.stat().st_mtime_ns == stamp
    assert (testbed.root / "unlabeled" / "unlabeled.json").is_file()

    val = [cv2.imread(str(p)).astype(np.int16) for p in sorted(testbed.val_images.iterdir())]
    for i in range(len(source)):
        rec = source[i]
        h, w = rec["image"].shape[:2]
        assert (h, w) == val[0].shape[:2]  # the testbed's image size
        x, y, bw, bh = rec["bbox"]
        assert x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w and y + bh <= h and bw * bh < 0.9 * w * h
        image = rec["image"][..., ::-1].astype(np.int16)
        assert min(np.abs(image - v).mean() for v in val) > 10  # no validation image again


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def test_builders_files_fields_and_checks(files, testbed):
    root, listing, dets, *_ = files
    config = point_at_testbed(load_config_file(REPO / "configs/stage2.py", "tiny"), testbed)
    with pytest.raises(
        ConfigError, match=r"config.data.unlabeled_images is not set \(needed by the 'unlabeled' source\)"
    ):
        inputs.resolved_paths(config.data, ["unlabeled"])
    config.data.unlabeled_images, config.data.unlabeled_boxes = str(root), str(dets)
    config.data.unlabeled_image_list, config.data.unlabeled_min_score = str(listing), 0.5
    paths = inputs.resolved_paths(config.data, ["unlabeled", "val"])
    source = inputs.build_source("unlabeled", paths)
    assert isinstance(source, UnlabeledSource) and len(source) == 2  # the min_score filter applies
    assert "unlabeled" not in inputs.SOURCE_DOMAINS
    config.data.mix = ml_collections.ConfigDict({"syrip_real": 1, "unlabeled": 1})
    with pytest.raises(ValueError, match=r"unknown sources \['unlabeled'\] in config.data.mix"):
        inputs.build_train_mix(config)
    tb = load_config_file(REPO / "configs/stage2.py", "tiny")
    tb.data.unlabeled_boxes = str(dets)
    with pytest.raises(ConfigError, match=r"config.data.unlabeled_boxes set but config.data.source='testbed'"):
        inputs.resolved_paths(tb.data, ["unlabeled"])


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def _rows(batch, prefix=""):
    return sorted(
        (int(a), batch[prefix + "weak"][j].tobytes(), batch[prefix + "strong"][j].tobytes())
        for j, a in enumerate(batch[prefix + "ann_id"])
    )


def test_unlabeled_batches_split_over_processes(testbed):
    source = UnlabeledSource(testbed.val_images, testbed.val_json)  # 7 persons: batches span epochs
    single = list(train_iterator(unlabeled_dataset(source, CFG, seed=0, count=4, num_batches=3)))
    halves = [
        list(
            train_iterator(
                unlabeled_dataset(source, CFG, seed=0, count=4, num_batches=3, process_index=p, process_count=2)
            )
        )
        for p in range(2)
    ]
    assert len(single) == 3 and all(len(h) == 3 for h in halves)
    for b in range(3):
        assert single[b]["weak"].shape == (4, 64, 48, 3) and single[b]["view_affine"].shape == (4, 2, 3)
        assert all(len(h[b]["ann_id"]) == 2 for h in halves)
        both = {k: np.concatenate([halves[0][b][k], halves[1][b][k]]) for k in single[b]}
        assert _rows(both) == _rows(single[b])
    epoch = [int(a) for b in single for a in b["ann_id"]][:7]
    assert sorted(epoch) == sorted(r["ann_id"] for r in source.records)  # a shuffled epoch first
    with pytest.raises(ValueError, match="do not split over 3 processes"):
        unlabeled_dataset(source, CFG, seed=0, count=4, num_batches=3, process_count=3)


def test_zip_adds_prefixed_unlabeled_keys_and_resumes_exactly(testbed):
    labeled = CocoKeypointSource(testbed.train_real_json, testbed.train_real_images, name="syrip_real")
    unlabeled = UnlabeledSource(testbed.val_images, testbed.val_json)

    def dataset():
        return zip_labeled_unlabeled(
            train_dataset([MixEntry("syrip_real", labeled, 2)], CFG, seed=3, num_batches=4),
            unlabeled_dataset(unlabeled, CFG, seed=3, count=3, num_batches=5),
        )

    ds = dataset()
    assert len(ds) == 4
    it = train_iterator(ds)
    first = next(it)
    expected_u = {
        "u_weak": ((3, 64, 48, 3), np.uint8),
        "u_strong": ((3, 64, 48, 3), np.uint8),
        "u_view_affine": ((3, 2, 3), np.float32),
        "u_view_flipped": ((3,), np.float32),
        "u_intrinsics": ((3, 3, 3), np.float32),
        "u_has_intrinsics": ((3,), np.float32),
        "u_valid": ((3,), np.float32),
        "u_is_real": ((3,), np.float32),
        "u_image_id": ((3,), np.int32),
        "u_ann_id": ((3,), np.int32),
    }
    assert {k: (v.shape, v.dtype) for k, v in first.items() if k.startswith("u_")} == expected_u
    assert first["image"].shape == (2, 64, 48, 3) and "weak" not in first and "keypoints" in first
    next(it)
    state = it.get_state()
    expected = next(it)
    fresh = train_iterator(dataset())
    fresh.set_state(state)
    got = next(fresh)
    assert set(got) == set(expected)
    for k in expected:
        assert np.array_equal(got[k], expected[k]), k


def test_unlabeled_records_carry_no_pose_and_pass_the_labelled_transform(tmp_path):
    """has_pose = 0: through the labelled top-down transform every joint's target weight is 0."""
    from hyper_sapiens_jax.data.topdown import SampleConfig, train_sample

    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 30, 3), 128, np.uint8))
    record = UnlabeledSource(tmp_path)[0]
    assert record["has_pose"] == 0 and record["keypoints"].shape == (17, 3)
    sample = train_sample(record, np.random.default_rng(0), SampleConfig(input_size=(64, 48)))
    assert sample["has_pose"] == 0 and float(sample["target_weight"].sum()) == 0.0


def test_unlabelled_lists_share_the_coco_validation_layer(files, tmp_path):
    """String image ids map to int ids; a symlink leading out of the folder, a box outside its
    declared image and a detection of the wrong type are named (entry and field) or skipped."""
    root, _, _, listing, dets = files
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(root / listing["images"][0]["file_name"], outside)
    (root / "link.jpg").symlink_to(outside)
    images = [{**im, "id": f"im{im['id']}"} for im in listing["images"]]
    images.append({"id": "escape", "file_name": "link.jpg"})
    lst = _json(tmp_path / "strlist.json", {"images": images})
    detections = [{**d, "image_id": f"im{d['image_id']}"} for d in dets]
    src = UnlabeledSource(root, _json(tmp_path / "strdets.json", detections), lst, skip_bad_records=True)
    assert len(src) == 3 and len({r["image_id"] for r in src.records}) == 3  # one car; images 1, 2, 7
    assert all(isinstance(r["image_id"], int) for r in src.records)
    assert len(src.skipped) == 1 and "link.jpg' leads outside the image folder" in src.skipped[0]["reason"]
    sized = [{**im, "width": 10, "height": 10} for im in listing["images"]]
    far = [dict(d) for d in dets]
    far[0]["bbox"] = [500.0, 1.0, 5.0, 5.0]
    far[1]["category_id"] = [1]
    args = (root, _json(tmp_path / "far.json", far), _json(tmp_path / "sized.json", {"images": sized}))
    with pytest.raises(DataError, match=r"far.json detection 1: field 'category_id': \[1\] is not an id"):
        UnlabeledSource(*args)  # schema findings come first
    lenient = UnlabeledSource(*args, skip_bad_records=True)
    reasons = [f"{s['file']}: {s['reason']}" for s in lenient.skipped]
    assert (
        len(reasons) == 2
        and "far.json detection 0: field 'bbox': box [500.0, 1.0, 5.0, 5.0] lies outside" in reasons[1]
    )
