"""Data-source selection: config.data.source is explicit, and missing paths are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyper_sapiens_jax.config import ConfigError, load_config_file
from hyper_sapiens_jax.jobs import inputs
from tests.helpers import REPO, point_at_testbed


def test_a_sapiens_stage_with_no_paths_names_every_missing_field():
    config = load_config_file(REPO / "configs/stage2.py", "sapiens_0.3b")
    assert config.data.source == "files"
    with pytest.raises(ConfigError) as e:
        inputs.build_train_mix(config, ["val"])
    msg = str(e.value)
    for field in (
        "syrip_syn_ann",
        "syrip_syn_images",
        "mini_rgbd_root",
        "syrip_real_ann",
        "syrip_real_images",
        "val_ann",
        "val_images",
    ):
        assert f"config.data.{field}" in msg
    assert "config.data.skeletons" not in msg  # the stage does not read skeletons


def test_files_source_names_only_what_is_missing(testbed):
    config = point_at_testbed(load_config_file(REPO / "configs/stage2.py", "tiny"), testbed)
    config.data.syrip_real_images = ""
    with pytest.raises(
        ConfigError,
        match=r"config.data.syrip_real_images is not set \(needed by the "
        r"'syrip_real' source\)",
    ) as e:
        inputs.build_train_mix(config)
    assert "syrip_syn" not in str(e.value) and "val_ann" not in str(e.value)


def test_cpu_presets_default_to_the_testbed_and_refuse_ignored_paths():
    config = load_config_file(REPO / "configs/stage1.py", "tiny")
    assert config.data.source == "testbed"
    config.data.val_ann = "/data/val.json"
    with pytest.raises(ConfigError, match=r"config.data.val_ann set but config.data.source='testbed'"):
        inputs.resolved_paths(config.data)


def test_unknown_source_is_refused():
    config = load_config_file(REPO / "configs/stage1.py", "tiny")
    config.data.source = "internet"
    with pytest.raises(ConfigError, match=r"config.data.source='internet' is not one of \('testbed', 'files'\)"):
        inputs.resolved_paths(config.data)


def test_tuning_split_holds_real_training_images_out_and_evaluates_on_them(testbed, tmp_path):
    """tuning_images=N: N real training images leave the training set, whole (every person of an
    image), and become the validation split; the split is deterministic and never touches val."""
    import json

    config = point_at_testbed(load_config_file(REPO / "configs/stage2.py", "tiny"), testbed)
    base = inputs.resolved_paths(config.data, ["syrip_real", "val"])
    config.data.tuning_images, config.data.tuning_dir = 3, str(tmp_path / "tuning")
    mix, paths = inputs.build_train_mix(config, ["val"])
    full, train, tune = (
        json.loads(Path(p).read_text()) for p in (base["syrip_real_ann"], paths["syrip_real_ann"], paths["val_ann"])
    )
    tune_ids = {im["id"] for im in tune["images"]}
    assert len(tune_ids) == 3 and not tune_ids & {im["id"] for im in train["images"]}
    assert len(train["images"]) + 3 == len(full["images"])
    assert sorted(a["id"] for a in train["annotations"] + tune["annotations"]) == sorted(
        a["id"] for a in full["annotations"]
    )
    assert all(a["image_id"] in tune_ids for a in tune["annotations"])
    assert paths["val_images"] == base["syrip_real_images"] and paths["val_ann"] != base["val_ann"]
    real = next(e.source for e in mix if e.name == "syrip_real")
    assert {r["image_id"] for r in real.records}.isdisjoint(tune_ids)
    assert len(inputs.build_source("val", paths)) == len(tune["annotations"])
    again = inputs.resolved_paths(config.data, ["syrip_real", "val"])
    assert again["val_ann"] == paths["val_ann"]  # reused, same draw
    config.data.tuning_seed = 1
    other = json.loads(Path(inputs.resolved_paths(config.data)["val_ann"]).read_text())
    assert {im["id"] for im in other["images"]} != tune_ids
    config.data.tuning_images = 10_000
    with pytest.raises(ValueError, match=r"tuning_images=10000 but the file has \d+ annotated images"):
        inputs.resolved_paths(config.data)
