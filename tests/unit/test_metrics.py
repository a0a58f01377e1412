"""Pose-evaluation metrics: PCK, normalisers, G-Error, COCO result entries and OKS AP."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from hyper_sapiens_jax.data.keypoints import COCO17_NAMES, NUM_COCO_KEYPOINTS
from hyper_sapiens_jax.evaluation import (
    bbox_normalizer,
    body_orientation,
    coco_keypoint_ap,
    g_error,
    keypoint_results,
    pck,
    pck_by_orientation,
    per_joint_table,
    torso_normalizer,
)


# ---------------------------------------------------------------------------------------------- PCK
def _pck_case():
    """3 samples, 3 joints; normalisers 100 and 200 (threshold distances 5 and 10 at 0.05), NaN."""
    gt = np.zeros((3, 3, 2))
    pred = gt.copy()
    visible = np.ones((3, 3))
    normalizer = np.array([100.0, 200.0, np.nan])
    pred[0, 0] = (3.0, 4.0)  # distance exactly 5: correct
    pred[1, 0] = (10.0 + 1e-6, 0.0)  # just over 10: wrong
    pred[0, 1] = (5.0 - 1e-6, 0.0)  # just under 5: correct
    visible[1, 1] = 0  # invisible: ignored
    pred[1, 1] = (1e3, 0.0)
    visible[:, 2] = 0  # joint 2 never visible
    pred[2] = 1e3  # NaN normaliser: the whole sample is ignored
    return pred, gt, visible, normalizer


def test_pck_hand_case():
    out = pck(*_pck_case())
    np.testing.assert_array_equal(out["count"], [2, 1, 0])
    assert out["count"].dtype.kind == "i"
    np.testing.assert_allclose(out["per_joint"][:2], [0.5, 1.0])
    assert np.isnan(out["per_joint"][2])
    assert out["pck"] == pytest.approx(2 / 3)
    assert isinstance(out["pck"], float)


def test_pck_threshold_and_bad_normalizers():
    pred, gt, visible, normalizer = _pck_case()
    assert pck(pred, gt, visible, normalizer, threshold=0.1)["pck"] == pytest.approx(1.0)
    out = pck(pred, gt, visible, np.array([0.0, -1.0, np.inf]))
    assert np.isnan(out["pck"]) and out["count"].sum() == 0 and np.isnan(out["per_joint"]).all()


@pytest.mark.parametrize("arg", ["pred", "visible", "normalizer"])
def test_pck_shape_errors(arg):
    args = dict(zip(["pred", "gt", "visible", "normalizer"], _pck_case(), strict=True))
    args[arg] = args[arg][:2]
    with pytest.raises(ValueError, match=arg):
        pck(**args)


# --------------------------------------------------------------------------------------- normalisers
def test_bbox_normalizer():
    np.testing.assert_array_equal(bbox_normalizer(np.array([[0, 0, 10, 20], [5, 5, 30, 7]])), [20, 30])


def test_torso_normalizer():
    kpts = np.zeros((2, NUM_COCO_KEYPOINTS, 2))
    kpts[:, COCO17_NAMES.index("left_shoulder")] = (10.0, 10.0)
    kpts[:, COCO17_NAMES.index("right_hip")] = (40.0, 50.0)
    kpts[:, COCO17_NAMES.index("right_shoulder")] = (100.0, 100.0)  # not part of the diameter
    visible = np.ones((2, NUM_COCO_KEYPOINTS))
    visible[1, COCO17_NAMES.index("left_shoulder")] = 0
    out = torso_normalizer(kpts, visible)
    assert out[0] == pytest.approx(50.0)
    assert np.isnan(out[1])


# ------------------------------------------------------------------------------- body orientation
def _trunks(angles_deg: list[float]) -> np.ndarray:
    """COCO-17 poses (N, 17, 2) whose shoulders sit 40 px from the hips at the given angles from
    head-up (image y down), the body centred at (100, 100)."""
    kpts = np.full((len(angles_deg), NUM_COCO_KEYPOINTS, 2), 100.0)
    for i, a in enumerate(np.radians(angles_deg)):
        up = np.array([np.sin(a), -np.cos(a)]) * 40.0
        side = np.array([np.cos(a), np.sin(a)]) * 10.0
        points = {"left_shoulder": up + side, "right_shoulder": up - side, "left_hip": side, "right_hip": -side}
        for name, p in points.items():
            kpts[i, COCO17_NAMES.index(name)] += p
    return kpts


def test_body_orientation():
    kpts = _trunks([0.0, 30.0, -30.0, 90.0, 170.0, 180.0])
    visible = np.ones(kpts.shape[:2])
    np.testing.assert_allclose(body_orientation(kpts, visible), [0, 30, 30, 90, 170, 180], atol=1e-9)
    visible[0, COCO17_NAMES.index("left_shoulder")] = 0  # the other shoulder still defines the trunk
    visible[1, [COCO17_NAMES.index("left_hip"), COCO17_NAMES.index("right_hip")]] = 0  # no hip: NaN
    out = body_orientation(kpts, visible)
    assert out[0] == pytest.approx(np.degrees(np.arctan2(10, 40)))  # right shoulder above the hips' mid
    assert np.isnan(out[1]) and out[2] == pytest.approx(30)
    with pytest.raises(ValueError, match="COCO-17"):
        body_orientation(kpts[:, :5], visible[:, :5])


def test_pck_by_orientation():
    gt = _trunks([10.0, 50.0, 100.0, 180.0, 20.0])
    visible = np.ones(gt.shape[:2])
    pred = gt.copy()
    pred[1] += 30.0  # the 45-90 sample misses every joint at 0.05 (threshold 5 px), hits at 0.2
    pred[3, :8] += 30.0  # the upside-down one misses 8 of 17 at 0.05
    visible[4, COCO17_NAMES.index("left_hip")] = 0
    visible[4, COCO17_NAMES.index("right_hip")] = 0  # no orientation: left out of every range
    pred[4] += 1e3
    out = pck_by_orientation(pred, gt, visible, np.full(5, 100.0))
    assert out["bins"] == ["0-45", "45-90", "90-135", "135-180"]
    assert out["samples"] == [1, 1, 1, 1]  # 180 falls in the last range, the NaN one in none
    np.testing.assert_allclose(out["pck@0.05"], [1.0, 0.0, 1.0, 9 / 17])
    np.testing.assert_allclose(out["pck@0.2"], [1.0, 0.0, 1.0, 9 / 17])  # 30 * sqrt(2) > 20
    out = pck_by_orientation(pred, gt, visible, np.full(5, 400.0), thresholds=(0.2,), bins=(0, 90, 180))
    assert out["samples"] == [2, 2] and out["pck@0.2"] == [1.0, 1.0] and "pck@0.05" not in out
    assert np.isnan(pck_by_orientation(pred, gt, visible, np.full(5, 100.0), bins=(0, 5, 180))["pck@0.2"][0])
    with pytest.raises(ValueError, match="increasing"):
        pck_by_orientation(pred, gt, visible, np.full(5, 100.0), bins=(0, 90, 45))


# ------------------------------------------------------------------------------------------- G-Error
def test_g_error_scale_translation_invariant():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, (NUM_COCO_KEYPOINTS, 2))
    kpts = np.stack([s * base + t for s, t in [(1.0, 0.0), (0.3, 7.0), (2.5, -40.0), (10.0, 3.0)]])
    visible = np.ones(kpts.shape[:2])
    assert g_error(kpts, visible) == pytest.approx(0.0, abs=1e-12)
    kpts[1, 9] += 20.0  # move one wrist: proportions change
    assert g_error(kpts, visible) > 1e-4


def test_g_error_hand_case():
    bones = ((0, 1), (1, 2), (2, 3))
    kpts = np.zeros((3, 4, 2))
    kpts[0, :, 0] = [0, 1, 2, 3]  # lengths 1, 1, 1 -> normalised (1, 1, 1)
    kpts[1, :, 0] = [0, 1, 4, 9]  # point 3 invisible: lengths 1, 3 -> normalised (0.5, 1.5)
    kpts[2, :, 0] = [0, 10, 0, 0]  # one bone only: sample ignored
    visible = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    # bone 0: var(1, 0.5) = 0.0625, bone 1: var(1, 1.5) = 0.0625, bone 2: one sample, ignored.
    assert g_error(kpts, visible, bones) == pytest.approx(0.0625)
    assert np.isnan(g_error(kpts[:1], visible[:1], bones))


# ---------------------------------------------------------------------------------- result entries
def test_keypoint_results_rescoring_and_format():
    kpts = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    scores = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.0]])
    res = keypoint_results(np.array([7, 8]), kpts, scores, box_scores=np.array([0.5, 1.0]), category_id=3)
    assert res[0]["score"] == pytest.approx(0.5 * 0.7)
    assert res[1]["score"] == 0.0  # 0.2 is not above the threshold
    assert set(res[0]) == {"image_id", "category_id", "keypoints", "score"}
    assert res[0]["image_id"] == 7 and res[1]["category_id"] == 3
    assert res[0]["keypoints"] == pytest.approx([0, 1, 0.9, 2, 3, 0.1, 4, 5, 0.5])
    assert all(type(v) is float for v in res[0]["keypoints"]) and type(res[0]["image_id"]) is int
    json.dumps(res)
    assert keypoint_results(np.array([7, 8]), kpts, scores)[0]["score"] == pytest.approx(0.7)


# -------------------------------------------------------------------------------------------- OKS AP
def _coco_gt() -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(1)
    images, anns, all_kpts = [], [], []
    for i in range(3):
        x0, y0, w, h = 20.0 + 10 * i, 30.0, 200.0, 300.0
        kpts = rng.uniform([x0, y0], [x0 + w, y0 + h], (NUM_COCO_KEYPOINTS, 2))
        all_kpts.append(kpts)
        images.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        flat = np.concatenate([kpts, np.full((NUM_COCO_KEYPOINTS, 1), 2.0)], axis=1).ravel()
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [x0, y0, w, h],
                "area": w * h,
                "iscrowd": 0,
                "num_keypoints": NUM_COCO_KEYPOINTS,
                "keypoints": flat.tolist(),
            }
        )
    cats = [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES), "skeleton": []}]
    return {"images": images, "annotations": anns, "categories": cats}, np.stack(all_kpts)


def _results(kpts: np.ndarray, image_ids=(1, 2, 3)) -> list[dict]:
    return keypoint_results(np.array(image_ids), kpts, np.ones(kpts.shape[:2]))


def test_coco_ap_perfect_and_shifted():
    gt, kpts = _coco_gt()
    gt_before = copy.deepcopy(gt)
    results = _results(kpts)
    results_before = copy.deepcopy(results)
    perfect = coco_keypoint_ap(gt, results)
    assert set(perfect) == {"ap", "ap50", "ap75", "ap_m", "ap_l", "ar", "ar50", "ar75", "ar_m", "ar_l"}
    assert perfect["ap"] == pytest.approx(1.0) and perfect["ar"] == pytest.approx(1.0)
    assert perfect["ap_l"] == pytest.approx(1.0)
    assert gt == gt_before and results == results_before  # inputs untouched
    assert coco_keypoint_ap(gt, _results(kpts + 150.0))["ap"] < 0.01


def test_coco_ap_missing_image_and_empty():
    gt, kpts = _coco_gt()
    partial = coco_keypoint_ap(gt, _results(kpts[:2], image_ids=(1, 2)))
    assert partial["ap"] < 0.9 and partial["ar"] == pytest.approx(2 / 3)
    empty = coco_keypoint_ap(gt, [])
    assert all(v == 0.0 for v in empty.values()) and len(empty) == 10


def test_coco_ap_gt_without_area_and_from_file(tmp_path):
    gt, kpts = _coco_gt()
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    assert coco_keypoint_ap(gt, _results(kpts))["ap"] == pytest.approx(1.0)
    assert coco_keypoint_ap(str(path), _results(kpts))["ap"] == pytest.approx(1.0)
    assert coco_keypoint_ap(path, _results(kpts), sigmas=np.full(17, 0.05))["ap"] == pytest.approx(1.0)


def test_coco_ap_errors(tmp_path):
    gt, kpts = _coco_gt()
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        coco_keypoint_ap(bad, _results(kpts))
    with pytest.raises(ValueError, match="missing.json"):
        coco_keypoint_ap(tmp_path / "missing.json", _results(kpts))
    with pytest.raises(ValueError, match="image ids"):
        coco_keypoint_ap(gt, _results(kpts, image_ids=(1, 2, 99)))


# ------------------------------------------------------------------------------------------- table
def test_per_joint_table():
    ours = np.arange(NUM_COCO_KEYPOINTS) / 16
    base = np.full(NUM_COCO_KEYPOINTS, np.nan)
    base[:2] = [0.2, 0.4]
    table = per_joint_table({"ours": ours, "baseline": base})
    lines = table.splitlines()
    assert "ours" in lines[0] and "baseline" in lines[0]
    data = lines[2:]
    assert len(data) == NUM_COCO_KEYPOINTS + 1
    assert data[5].startswith("| left_shoulder |") and "0.312" in data[5]
    assert data[-1] == "| mean | 0.500 | 0.300 |"
    with pytest.raises(ValueError, match="ours"):
        per_joint_table({"ours": ours[:5]})
