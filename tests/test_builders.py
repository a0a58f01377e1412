"""Data-source selection: config.data.source is explicit, and missing paths are named."""

from __future__ import annotations

import pytest

from conftest import REPO, point_at_testbed
from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.data import builders
from hyper_sapiens_jax.data.builders import ConfigError


def test_a_sapiens_stage_with_no_paths_names_every_missing_field():
    config = load_config_file(REPO / "configs/stage2.py", "sapiens_0.3b")
    assert config.data.source == "files"
    with pytest.raises(ConfigError) as e:
        builders.build_train_mix(config, ["val"])
    msg = str(e.value)
    for field in ("syrip_syn_ann", "syrip_syn_images", "mini_rgbd_root", "syrip_real_ann", "syrip_real_images",
                  "val_ann", "val_images"):
        assert f"config.data.{field}" in msg
    assert "config.data.skeletons" not in msg          # the stage does not read skeletons


def test_files_source_names_only_what_is_missing(testbed):
    config = point_at_testbed(load_config_file(REPO / "configs/stage2.py", "tiny"), testbed)
    config.data.syrip_real_images = ""
    with pytest.raises(ConfigError, match=r"config.data.syrip_real_images is not set \(needed by the "
                                          r"'syrip_real' source\)") as e:
        builders.build_train_mix(config)
    assert "syrip_syn" not in str(e.value) and "val_ann" not in str(e.value)


def test_cpu_presets_default_to_the_testbed_and_refuse_ignored_paths():
    config = load_config_file(REPO / "configs/stage1.py", "tiny")
    assert config.data.source == "testbed"
    config.data.val_ann = "/data/val.json"
    with pytest.raises(ConfigError, match=r"config.data.val_ann set but config.data.source='testbed'"):
        builders.resolved_paths(config.data)


def test_unknown_source_is_refused():
    config = load_config_file(REPO / "configs/stage1.py", "tiny")
    config.data.source = "internet"
    with pytest.raises(ConfigError, match=r"config.data.source='internet' is not one of \('testbed', 'files'\)"):
        builders.resolved_paths(config.data)
