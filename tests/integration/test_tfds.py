"""TFDS ArrayRecord builders: built from the testbed, read back through Grain without TensorFlow,
record-for-record identical to the file readers (and so are the augmented training samples)."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
import sys
from pathlib import Path

import grain
import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")  # the optional `tfds` extra
pytest.importorskip("array_record")

from hyper_sapiens_jax.data import tfds_builders
from hyper_sapiens_jax.data.sources import CocoKeypointSource, DataError, MiniRgbdSource
from hyper_sapiens_jax.data.topdown import SampleConfig, TrainTransform, train_sample

TF_INSTALLED = importlib.util.find_spec("tensorflow") is not None
MINI_SPLITS = {"train": "01", "val": "02"}  # the testbed has sequences 01-02 only
CFG = SampleConfig(input_size=(64, 48), heatmap_sigma=2.0)


@pytest.fixture(scope="module")
def built(testbed, tmp_path_factory):
    """Both datasets built from the testbed into one data_dir: {'syrip': builder, 'mini_rgbd': builder}."""
    data_dir = tmp_path_factory.mktemp("tfds")
    return {
        "syrip": tfds_builders.build_dataset("syrip", testbed.syrip, data_dir),
        "mini_rgbd": tfds_builders.build_dataset("mini_rgbd", testbed.mini_rgbd, data_dir, splits=MINI_SPLITS),
        "data_dir": data_dir,
    }


def direct_syrip(testbed, split: str) -> CocoKeypointSource:
    ann, images = testbed.coco_sets()[split]
    return CocoKeypointSource(ann, images, domain=tfds_builders.SYRIP_SPLITS[split].domain)


def assert_same_record(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys(), where
    for k, value in want.items():
        assert type(got[k]) is type(value), (where, k, type(got[k]), type(value))
        assert got[k].dtype == value.dtype and got[k].shape == value.shape, (where, k)
        assert np.array_equal(got[k], value), (where, k)


def assert_tf_absent() -> None:
    if not TF_INSTALLED:
        assert "tensorflow" not in sys.modules


def test_layout_on_disk(built):
    version_dir = built["data_dir"] / "syrip" / "default" / str(tfds_builders.VERSION)
    names = sorted(p.name for p in version_dir.iterdir())
    assert "dataset_info.json" in names and "features.json" in names
    for split in ("train_syn", "train_real", "validate"):
        assert f"syrip-{split}.array_record-00000-of-00001" in names
    info = json.loads((version_dir / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record" and info["disableShuffling"]
    custom = list(
        (built["data_dir"] / "mini_rgbd").glob(f"custom_*/{tfds_builders.VERSION}/mini_rgbd-val.array_record-*")
    )
    assert len(custom) == 1  # a custom split spec builds beside, never over, the default config


@pytest.mark.parametrize("split", ["train_syn", "train_real", "validate"])
def test_syrip_records_equal_file_reader(built, testbed, split):
    ds = grain.MapDataset.source(tfds_builders.TfdsRecordSource(built["syrip"], split))
    direct = direct_syrip(testbed, split)
    assert len(ds) == len(direct) > 0
    for i in range(len(direct)):
        assert_same_record(ds[i], direct[i], f"{split}[{i}]")
    assert_tf_absent()


@pytest.mark.parametrize("split", ["train", "val"])
def test_mini_rgbd_records_equal_file_reader(built, testbed, split):
    # opened from the data_dir root this time (kind + config name), not from the builder
    config = built["mini_rgbd"].builder_config.name
    ds = grain.MapDataset.source(tfds_builders.TfdsRecordSource(built["data_dir"], split, "mini_rgbd", config=config))
    direct = MiniRgbdSource(testbed.mini_rgbd, MINI_SPLITS[split])
    assert len(ds) == len(direct) == 6
    for i in range(len(direct)):
        assert_same_record(ds[i], direct[i], f"{split}[{i}]")
    assert_tf_absent()


def test_mini_rgbd_normals_are_read_not_recomputed(built, testbed, monkeypatch):
    from hyper_sapiens_jax.data import sources

    src = tfds_builders.TfdsRecordSource(built["mini_rgbd"], "train")
    raw = src._data_source()[1]
    assert raw["normal_window"][1] > raw["normal_window"][0] and len(raw["normal"]) > 0
    want = MiniRgbdSource(testbed.mini_rgbd, "01")[1]
    monkeypatch.setattr(sources, "_normals_in_window", lambda *a: pytest.fail("normals recomputed"))
    assert_same_record(src[1], want, "stored normals")
    monkeypatch.undo()
    # Other intrinsics than the build's: the reader computes its own, as the file reader does.
    other = (500.0, 500.0, 320.0, 240.0)
    assert_same_record(
        tfds_builders.TfdsRecordSource(built["mini_rgbd"], "train", intrinsics=other)[1],
        MiniRgbdSource(testbed.mini_rgbd, "01", intrinsics=other)[1],
        "other intrinsics",
    )
    with pytest.raises(DataError, match=r"\[train\]\[1\].*stored normals are damaged"):
        tfds_builders.mini_rgbd_record({**raw, "normal": b"not zlib"}, f"{src.version_dir}[train][1]")


def test_train_samples_identical(built, testbed):
    """Same seed -> same shuffle order and the same augmented samples from either source."""
    pairs = [
        (tfds_builders.TfdsRecordSource(built["syrip"], "train_real"), direct_syrip(testbed, "train_real")),
        (tfds_builders.TfdsRecordSource(built["mini_rgbd"], "train"), MiniRgbdSource(testbed.mini_rgbd, "01")),
    ]
    for tfds_src, file_src in pairs:
        a = tfds_src[2]
        assert_same_record(
            train_sample(a, np.random.default_rng(7), CFG),
            train_sample(file_src[2], np.random.default_rng(7), CFG),
            tfds_src.name,
        )
        pipes = [
            grain.MapDataset.source(s).seed(3).shuffle().random_map(TrainTransform(CFG)) for s in (tfds_src, file_src)
        ]
        for i in range(4):
            assert_same_record(pipes[0][i], pipes[1][i], f"{tfds_src.name} pipeline[{i}]")
    assert_tf_absent()


def test_source_pickles_for_grain_workers(built):
    src = tfds_builders.TfdsRecordSource(built["mini_rgbd"], "val")
    src[0]  # opens the reader; pickling must drop it (it is reopened per worker)
    clone = pickle.loads(pickle.dumps(src))
    assert clone._source is None
    assert_same_record(clone[1], src[1], "pickled")


def test_manual_dir_without_annotations_is_refused(testbed, tmp_path):
    manual = tmp_path / "syrip"
    shutil.copytree(testbed.syrip / "images", manual / "images")  # images only, no annotations/
    with pytest.raises(DataError, match=r"annotations/person_keypoints_train_syn\.json: missing annotation file"):
        tfds_builders.build_dataset("syrip", manual, tmp_path / "out")
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'}: manual directory does not exist"):
        tfds_builders.build_dataset("syrip", tmp_path / "nowhere", tmp_path / "out")


def test_reader_errors_name_the_path(built, tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no built 'syrip' dataset"):
        tfds_builders.TfdsRecordSource(tmp_path, "train_syn", "syrip")
    with pytest.raises(DataError, match=r"no split 'test' \(has \['train', 'val'\]\)"):
        tfds_builders.TfdsRecordSource(built["mini_rgbd"], "test")


def test_truncated_image_error_names_the_record(testbed, tmp_path):
    """A truncated file builds (bytes are stored as-is) but fails on read, naming record and file."""
    manual = tmp_path / "syrip"
    ann, images = testbed.coco_sets()["validate"]
    shutil.copytree(images, manual / "images" / "validate")
    (manual / "annotations").mkdir()
    shutil.copy(ann, manual / "annotations" / ann.name)
    first = CocoKeypointSource(ann, images).records[0]["path"].rsplit("/", 1)[-1]
    bad = manual / "images" / "validate" / first
    bad.write_bytes(bad.read_bytes()[:200])
    builder = tfds_builders.build_dataset(
        "syrip", manual, tmp_path / "out", splits={"validate": ("annotations/" + ann.name, "images/validate")}
    )
    with pytest.raises(DataError, match=rf"\[validate\]\[0\] \(images/validate/{first}\) image: unreadable"):
        tfds_builders.TfdsRecordSource(builder, "validate")[0]
    # skip_bad_records: the file readers' semantics, the record counted and replaced by the next one.
    source = tfds_builders.TfdsRecordSource(builder, "validate", skip_bad_records=True)
    assert source[0]["ann_id"] == source[1]["ann_id"]  # record 0 replaced by record 1
    assert len(source.skipped) == 1 and f"(images/validate/{first})" in source.skipped[0]["file"]
    assert "unreadable" in source.skipped[0]["reason"]


def test_a_bad_mini_rgbd_frame_builds_and_fails_on_read(testbed, tmp_path):
    """As for SyRIP: the build stores the bytes (and no normals for that frame); the read names it."""
    manual = tmp_path / "mini"
    shutil.copytree(testbed.mini_rgbd / "01", manual / "01")
    first = MiniRgbdSource(manual, "01").records[0]["depth"]
    Path(first).write_bytes(Path(first).read_bytes()[:100])
    builder = tfds_builders.build_dataset("mini_rgbd", manual, tmp_path / "out", splits={"train": "01"})
    source = tfds_builders.TfdsRecordSource(builder, "train")
    assert source._data_source()[0]["normal"] == b"" and len(source._data_source()[1]["normal"]) > 0
    with pytest.raises(DataError, match=r"\[train\]\[0\] \(01/rgb/.*depth"):
        source[0]
    assert_same_record(source[1], MiniRgbdSource(manual, "01")[1], "the next frame")


def test_cli(testbed, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tfds_builders.main(["--help"])
    assert e.value.code == 0 and "--manual-dir" in capsys.readouterr().out
    rc = tfds_builders.main(
        [
            "--dataset",
            "mini_rgbd",
            "--manual-dir",
            str(testbed.mini_rgbd),
            "--data-dir",
            str(tmp_path),
            "--split",
            "train=01-02",
            "--config-name",
            "both",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "mini_rgbd/both" in out and "train" in out and "12 examples" in out
    version = str(tfds_builders.VERSION)
    assert (tmp_path / "mini_rgbd" / "both" / version / "mini_rgbd-train.array_record-00000-of-00001").is_file()
    assert (
        tfds_builders.main(["--dataset", "syrip", "--manual-dir", str(tmp_path / "none"), "--data-dir", str(tmp_path)])
        == 1
    )
    assert "manual directory does not exist" in capsys.readouterr().err
