"""The lean batch: device-side heatmaps and normalisation against the host references."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hyper_sapiens_jax.data import codec
from hyper_sapiens_jax.data.catalog import Subset
from hyper_sapiens_jax.data.sources import CocoKeypointSource, MiniRgbdSource
from hyper_sapiens_jax.data.transforms import normalize_image
from hyper_sapiens_jax.training.batch import (
    STEP_KEYS,
    complete_batch,
    dense_plan,
    normalize_images,
    step_inputs,
)


def test_complete_batch_normalises_and_renders():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(2, 64, 48, 3), dtype=np.uint8)
    keypoints = rng.uniform(0, 47, size=(2, 17, 2)).astype(np.float32)
    weights = np.ones((2, 17), np.float32)
    out = complete_batch({"image": jnp.asarray(image), "keypoints": keypoints, "target_weight": weights}, 2.0)
    np.testing.assert_allclose(np.asarray(out["image"]), normalize_image(image), rtol=1e-6, atol=1e-6)
    host = codec.encode_udp_heatmaps(keypoints[1], weights[1], input_wh=(48, 64), heatmap_wh=(12, 16), sigma=2.0)
    np.testing.assert_allclose(np.asarray(out["heatmaps"][1]), host[0], atol=1e-6)
    # Float images are taken as normalised, host heatmaps as given.
    given = {"image": jnp.ones((1, 16, 16, 3)), "heatmaps": jnp.zeros((1, 4, 4, 17))}
    again = complete_batch(given, 2.0)
    assert again["image"] is given["image"] and again["heatmaps"] is given["heatmaps"]
    assert normalize_images(given["image"]) is given["image"]


def test_only_the_step_keys_travel():
    sample = {k: np.zeros(1) for k in (*STEP_KEYS, "center", "scale", "bbox", "image_id", "source_id")}
    assert set(step_inputs(sample)) == set(STEP_KEYS)
    del sample["normal"]
    assert "normal" not in step_inputs(sample)


def mixed_host_batch(rng, n_coco=3, n_mini=2, h=16, w=12):
    """A host batch as the pipeline builds it: COCO rows (placeholders) then MINI-RGBD rows."""
    n = n_coco + n_mini
    has = np.r_[np.zeros(n_coco), np.ones(n_mini)].astype(np.float32)
    depth = np.full((n, h, w, 1), -1.0, np.float32)
    depth[n_coco:] = rng.uniform(0, 1, (n_mini, h, w, 1))
    normal = np.zeros((n, h // 2, w // 2, 3), np.float32)
    normal[n_coco:] = rng.normal(size=(n_mini, h // 2, w // 2, 3))
    return {
        "image": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        "keypoints": rng.uniform(0, w - 1, (n, 17, 2)).astype(np.float32),
        "target_weight": np.ones((n, 17), np.float32),
        "depth": depth,
        "normal": normal,
        "has_depth": has,
        "has_normal": has,
        "valid": np.ones(n, np.float32),
        "source_id": np.r_[np.zeros(n_coco), np.ones(n_mini)].astype(np.int32),
    }


def test_dense_targets_travel_only_for_the_sources_that_carry_them():
    plan = dense_plan([CocoKeypointSource, MiniRgbdSource, object()])  # a source that says nothing: all
    assert plan == {"depth": (1, 2), "normal": (1, 2)}
    few_labels = Subset(type("Coco", (list,), {"dense_targets": ()})([{}] * 5), 2)  # num_labeled
    assert dense_plan([few_labels, Subset([{}] * 5, 2)]) == {"depth": (1,), "normal": (1,)}
    host = mixed_host_batch(np.random.default_rng(0))
    sent = step_inputs(host, plan=plan, row_offset=10, multiple=4, names=("syrip", "mini_rgbd", "other"))
    # Two MINI-RGBD rows, padded to the process's 4 devices; numbered in the global batch.
    assert sent["depth"].shape == (4, 16, 12, 1) and sent["depth"].dtype == np.float16
    assert sent["normal"].shape == (4, 8, 6, 3)
    np.testing.assert_array_equal(sent["depth_rows"][:2], [13, 14])
    assert (sent["depth_rows"][2:] > 2**30).all()
    bytes_sent = sum(v.nbytes for k, v in sent.items() if k in ("depth", "normal"))
    assert bytes_sent < (host["depth"].nbytes + host["normal"].nbytes) / 2
    # On the device: the full float32 targets, placeholders where a source has none.
    local = step_inputs(host, plan=plan, multiple=4)  # this process's rows are the batch's first
    out = complete_batch({k: jnp.asarray(v) for k, v in local.items()}, 2.0)
    for key in ("depth", "normal"):
        assert key + "_rows" not in out and out[key].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out[key]), host[key], rtol=1e-3, atol=1e-3)  # float16 transport
        np.testing.assert_array_equal(np.asarray(out[key])[:3], host[key][:3])  # placeholders exact
    # A sample flagged with a target its source does not list would lose it: refused, naming the source.
    host["has_depth"][0] = 1
    with pytest.raises(ValueError, match="syrip: a sample has has_depth = 1.*'depth'"):
        step_inputs(host, plan=plan, names=("syrip", "mini_rgbd", "other"))
