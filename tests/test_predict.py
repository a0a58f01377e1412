"""The predict CLI: COCO results for every box, overlays, whole-image mode, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from hyper_sapiens_jax.evaluation.metrics import coco_keypoint_ap
from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.models.weights import flat_params, save_weights
from hyper_sapiens_jax.predict import RESULTS_FILE, main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    config = ModelConfig(arch="tiny", image_size=(64, 48), heads=("pose", "depth", "normal"))
    return save_weights(
        tmp_path_factory.mktemp("predict") / "ckpt", config, flat_params(Sapiens(config, rngs=nnx.Rngs(0)))
    )


def test_ground_truth_boxes_give_one_result_per_box_and_an_overlay_per_image(testbed, ckpt, tmp_path):
    gt = json.loads(testbed.val_json.read_text())
    out = tmp_path / "out"
    assert (
        main(
            [
                "--ckpt",
                str(ckpt),
                "--images",
                str(testbed.val_images),
                "--boxes",
                str(testbed.val_json),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / RESULTS_FILE).read_text())
    assert len(results) == len(gt["annotations"])
    assert {r["image_id"] for r in results} == {img["id"] for img in gt["images"]}
    assert all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in results)
    assert set(coco_keypoint_ap(testbed.val_json, results)) >= {"ap", "ap50"}  # valid COCO results
    pngs = sorted(p.stem for p in out.glob("*.png"))
    assert pngs == sorted(p.stem for p in testbed.val_images.iterdir())
    from PIL import Image

    first = gt["images"][0]
    with Image.open(out / f"{first['file_name'].rsplit('.', 1)[0]}.png") as im:
        assert im.size[1] == first["height"] and im.size[0] > first["width"]  # depth / normal beside it


def test_whole_images_and_errors(testbed, ckpt, tmp_path):
    files = sorted(testbed.val_images.iterdir())[:2]
    assert main(["--ckpt", str(ckpt), "--images", *map(str, files), "--out", str(tmp_path / "o"), "--no-flip"]) == 0
    results = json.loads((tmp_path / "o" / RESULTS_FILE).read_text())
    assert [r["image_id"] for r in results] == [0, 1]  # non-numeric names: their index
    assert all(np.isfinite(r["keypoints"]).all() for r in results)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    assert main(["--ckpt", str(ckpt), "--images", str(bad), "--out", str(tmp_path / "b")]) == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image_id": 999999, "bbox": [0, 0, 10, 10]}]))
    assert (
        main(["--ckpt", str(ckpt), "--images", str(files[0]), "--boxes", str(other), "--out", str(tmp_path / "c")]) == 1
    )
    assert main(["--ckpt", str(tmp_path), "--images", str(files[0]), "--out", str(tmp_path / "d")]) == 1
