"""Record -> sample: fixed schema across sources and crop intrinsics consistent with the warp."""

from __future__ import annotations

import numpy as np

from hyper_sapiens_jax.data import geometry
from hyper_sapiens_jax.data.keypoints import flip_permutation, smil25_to_coco17
from hyper_sapiens_jax.data.sources import CocoKeypointSource, MiniRgbdSource, read_joints_2ddep
from hyper_sapiens_jax.data.topdown import SampleConfig, eval_sample, train_sample

CFG = SampleConfig(input_size=(64, 48), heatmap_sigma=2.0)


def test_samples_share_one_schema(testbed):
    coco = CocoKeypointSource(testbed.train_real_json, testbed.train_real_images)
    mini = MiniRgbdSource(testbed.mini_rgbd, "01")
    a, b = eval_sample(coco[0], CFG), train_sample(mini[0], np.random.default_rng(0), CFG)
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    assert a["has_intrinsics"] == 0 and b["has_intrinsics"] == 1
    assert (a["depth"] == -1).all() and (a["normal"] == 0).all() and a["has_depth"] == 0


def test_crop_intrinsics_project_3d_joints_onto_the_crop_keypoints(testbed):
    """Back-project the MINI-RGBD joints with the frame intrinsics; the sample's crop intrinsics must
    project them (mirrored, for flipped crops) exactly onto the sample's keypoints."""
    src = MiniRgbdSource(testbed.mini_rgbd, "01-02")
    perm = flip_permutation()
    rng = np.random.default_rng(1)
    flips = 0
    for i in range(len(src)):
        rec = src[i]
        joints = read_joints_2ddep(src.records[i]["joints"])
        uvz, has = smil25_to_coco17(joints)
        pix = np.concatenate([uvz[:, :2], np.ones((17, 1))], 1)
        pts = (np.linalg.inv(rec["intrinsics"].astype(np.float64)) @ pix.T).T * uvz[:, 2:3]
        for sample in (eval_sample(rec, CFG), train_sample(rec, rng, CFG)):
            if sample["flipped"]:
                flips += 1
                pts_view, order = pts * [-1, 1, 1], perm  # the mirrored scene, left <-> right
            else:
                pts_view, order = pts, np.arange(17)
            ok = (sample["keypoints_visible"] > 0) & (has[order] > 0)  # eyes/ears: no depth
            proj = (sample["intrinsics"].astype(np.float64) @ pts_view[order][ok].T).T
            proj = proj[:, :2] / proj[:, 2:3]
            assert ok.sum() >= 3
            assert np.abs(proj - sample["keypoints"][ok]).max() < 2e-3
    assert flips > 0


def test_crop_intrinsics_of_an_unflipped_identity_warp():
    k = geometry.intrinsics_matrix(500.0, 510.0, 320.0, 240.0)
    m = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]])
    kc = geometry.crop_intrinsics(k, m, False, 640)
    assert np.allclose(kc, [[250.0, 0, 150.0], [0, 255.0, 100.0], [0, 0, 1]])
    kf = geometry.crop_intrinsics(k, np.array([[1.0, 0, 0], [0, 1, 0]]), True, 640)
    assert np.allclose(kf[0, 2], 639 - 320.0)
