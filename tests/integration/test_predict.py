"""The predict CLI: COCO results for every box, overlays, whole-image mode, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

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


def _images_in_every_format(testbed, folder):
    """7.jpg and 7.png (one stem), a.webp, b.tif, a text file and a sub-folder."""
    from PIL import Image

    folder.mkdir()
    with Image.open(sorted(testbed.val_images.iterdir())[0]) as im:
        rgb = im.convert("RGB")
    for name in ("7.jpg", "7.png", "a.webp", "b.tif"):
        rgb.save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return folder


def test_every_input_gets_a_distinct_id_and_overlay_and_left_out_files_are_named(testbed, ckpt, tmp_path, capsys):
    folder = _images_in_every_format(testbed, tmp_path / "in")
    out = tmp_path / "out"
    assert (
        main(["--ckpt", str(ckpt), "--images", str(folder), str(folder / "a.webp"), "--out", str(out), "--no-flip"])
        == 0
    )
    err = capsys.readouterr().err
    assert f"left out {folder / 'notes.txt'}: not an image format PIL decodes (.txt)" in err
    assert f"left out {folder / 'sub'}: a folder" in err and f"left out {folder / 'a.webp'}: given twice" in err
    assert "4 overlays" in err
    table = json.loads((out / "image_ids.json").read_text())
    assert [Path(t["file"]).name for t in table] == ["7.jpg", "7.png", "a.webp", "b.tif"]
    assert [t["image_id"] for t in table] == [7, 8, 9, 10]  # 7.png's stem is taken: a fresh id
    assert [t["overlay"] for t in table] == ["7_jpg.png", "7_png.png", "a.png", "b.png"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(t["overlay"] for t in table)
    text = (out / RESULTS_FILE).read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert sorted(r["image_id"] for r in results) == [7, 8, 9, 10]
    # A detection list matches boxes by numeric stem: 7.jpg and 7.png cannot be told apart.
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": 7, "bbox": [0, 0, 10, 10]}]))
    assert main(["--ckpt", str(ckpt), "--images", str(folder), "--boxes", str(dets), "--out", str(tmp_path / "o")]) == 1
    assert "both match 7" in capsys.readouterr().err
    dets.write_text(json.dumps([{"image_id": 7, "bbox": [0, 0, "ten", 10]}]))
    assert (
        main(
            ["--ckpt", str(ckpt), "--images", str(folder / "7.jpg"), "--boxes", str(dets), "--out", str(tmp_path / "o")]
        )
        == 1
    )
    assert "dets.json detection 0: field 'bbox'[2]: input should be a valid number" in capsys.readouterr().err


def test_a_model_that_predicts_nan_stops_without_writing_bare_nan(testbed, tmp_path, capsys):
    config = ModelConfig(arch="tiny", image_size=(64, 48), heads=("pose",))
    params = flat_params(Sapiens(config, rngs=nnx.Rngs(0)))
    key = next(k for k in params if "pose" in "/".join(map(str, k)))
    params[key] = np.full_like(params[key], np.nan)
    bad = save_weights(tmp_path / "nan_ckpt", config, params)
    image = sorted(testbed.val_images.iterdir())[0]
    assert main(["--ckpt", str(bad), "--images", str(image), "--out", str(tmp_path / "o"), "--no-flip"]) == 1
    assert f"error: {image}: the model predicts NaN or infinite keypoints" in capsys.readouterr().err
    assert not (tmp_path / "o" / RESULTS_FILE).exists()
    # An --out that is a file: one line, exit code 1.
    (tmp_path / "a_file").write_text("x")
    assert main(["--ckpt", str(bad), "--images", str(image), "--out", str(tmp_path / "a_file")]) == 1
    assert f"error: --out {tmp_path / 'a_file'}: cannot be used as the output folder" in capsys.readouterr().err
