"""The bone-ratio reference (training/reference.py) from the training crops of a testbed mix."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from hyper_sapiens_jax.data.pipeline import train_dataset
from hyper_sapiens_jax.jobs import inputs
from hyper_sapiens_jax.losses import bone_ratio_loss
from hyper_sapiens_jax.losses.geometry import backproject_keypoints
from hyper_sapiens_jax.training import reference
from tests.helpers import tiny_data_config


def test_bone_reference_from_crops_fits_the_truth_better_than_the_joint_files(testbed):
    """The 'crops' reference is taken in the loss's own geometry (GT keypoints + GT relative depth of
    the synthetic crops, back-projected as predictions are): held-out crops of the same mix score a
    lower bone-ratio loss against it than against the MINI-RGBD joint-file reference."""
    config = tiny_data_config(testbed, stage=2)
    mix, _ = inputs.build_train_mix(config)
    cfg = inputs.sample_config(config)
    refs = {}
    for kind in ("crops", "joints"):
        config.loss.bone_reference = kind
        refs[kind] = reference.compute(config, mix, cfg)
    assert "synthetic training crops" in refs["crops"]["origin"] and "MINI-RGBD" in refs["joints"]["origin"]
    batch = next(iter(train_dataset(mix, cfg, seed=123, num_batches=1)))  # other crops than the reference's
    syn = jnp.asarray((batch["has_depth"] > 0) & (batch["is_real"] == 0), jnp.float32)
    assert float(syn.sum()) >= 2
    pts = backproject_keypoints(
        jnp.asarray(batch["keypoints"]),
        jnp.asarray(batch["depth"]),
        jnp.asarray(batch["intrinsics"]),
        near=config.loss.near,
        extent=config.loss.extent,
    )
    seen = jnp.asarray(batch["keypoints_visible"] > 0, jnp.float32)
    loss = {
        k: float(bone_ratio_loss(pts, seen, syn, jnp.asarray(r["mean"]), jnp.asarray(r["std"])))
        for k, r in refs.items()
    }
    assert loss["crops"] < 0.7 * loss["joints"], loss
    config.loss.bone_reference = "both"
    with pytest.raises(ValueError, match="bone_reference must be 'crops' or 'joints'"):
        reference.compute(config, mix, cfg)
