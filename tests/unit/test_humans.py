"""The human corpus (the testbed's Humans-300M): who is in it, how it is labelled, how it is cached."""

from __future__ import annotations

import numpy as np
import pytest

from hyper_sapiens_jax.data.sources import CocoKeypointSource
from hyper_sapiens_jax.testbed import bodies, humans
from hyper_sapiens_jax.testbed.bodies import Posture


def test_people_are_adults_and_children_mostly_upright_never_infants():
    rng = np.random.default_rng(0)
    people = [humans.sample_people(rng, 1) for _ in range(300)]
    length = np.array([p.shape.body_length[0] for p in people])
    head = np.array([p.shape.head_height[0] for p in people]) / length
    posture = np.array([p.posture[0] for p in people])
    assert length.min() >= 0.95 and head.max() <= 0.2  # infants: 0.48-0.80 m, head ~1/4
    assert 0.7 < (length > 1.5).mean() < 0.9  # ~80% adults
    upright = np.isin(posture, bodies.UPRIGHT).mean()
    assert 0.7 < upright < 0.9
    assert np.isin(posture, (Posture.SUPINE, Posture.PRONE, Posture.SIDE_LEFT, Posture.SIDE_RIGHT)).any()
    # standing people stand: the head is the highest joint and the feet touch the floor
    standing = [p for p in people if p.posture[0] == Posture.STANDING]
    for p in standing[:20]:
        z = p.joints[0, :, 2]
        assert z[15] > z[[0, 1, 2, 4, 5]].max() and z[[7, 8]].min() < 0.2


def test_images_hold_one_to_four_people_and_label_the_most_visible():
    counts, frames = [], []
    for i in range(12):
        frame, person = humans.render_sample(0, "train", i, (96, 80))
        counts.append(frame.coco_visibility.shape[0])
        areas = np.bincount(frame.owner[frame.owner >= 0], minlength=counts[-1])
        assert person == int(np.argmax(areas))
        frames.append((frame, person))
    assert min(counts) >= 1 and max(counts) <= 4 and max(counts) > 1
    frame, person = next((f, p) for f, p in frames if f.coco_visibility.shape[0] > 1)
    r = humans.person_record(frame, person, humans.intrinsics((96, 80)), 0)
    mask = frame.owner == person
    assert np.all(r["depth"][~mask] == -1) and np.all(r["depth"][mask] > 0)
    assert np.all(r["normal"][~mask] == 0) and np.allclose(np.linalg.norm(r["normal"][mask], axis=-1), 1, atol=1e-4)
    x, y, w, h = r["bbox"]
    vis = r["keypoints"][:, 2] > 0
    assert np.all(r["keypoints"][vis, 0] >= x) and np.all(r["keypoints"][vis, 0] <= x + w)
    assert np.all(r["keypoints"][~vis, :2] == 0)


def test_scenes_have_no_infant_testbed_props():
    rng = np.random.default_rng(3)
    for _ in range(5):
        scene = humans.sample_scene(rng, None)
        assert not scene.blankets and np.all(scene.mat_half_size == 0) and scene.toys is None


def test_deterministic_per_index_and_the_cache_equals_on_the_fly(tmp_path):
    paths = humans.write_humans(tmp_path / "h", num_train=5, num_val=3, image_size=(96, 80), seed=1)
    cached = humans.HumansSource(paths.train)
    fly = humans.HumansSource.on_the_fly(5, (96, 80), seed=1)
    assert len(cached) == len(fly) == 5
    for i in (0, 4):
        a, b = cached[i], fly[i]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["keypoints"], b["keypoints"])
        np.testing.assert_allclose(a["depth"], b["depth"], atol=2e-3 * np.abs(b["depth"]).max())  # float16
        np.testing.assert_allclose(a["normal"], b["normal"], atol=1 / 127)  # int8
    mtime = (tmp_path / "h" / humans.MANIFEST).stat().st_mtime
    humans.write_humans(tmp_path / "h", num_train=5, num_val=3, image_size=(96, 80), seed=1)  # reused
    assert (tmp_path / "h" / humans.MANIFEST).stat().st_mtime == mtime
    val = CocoKeypointSource(paths.val_json, paths.val_images, name="humans_val")
    assert len(val) == 3 and val[0]["image"].shape == (96, 80, 3)


def test_not_a_corpus_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no humans.json"):
        humans.write_humans(tmp_path / "x", num_train=1, num_val=1)
    with pytest.raises(FileNotFoundError, match="not a human corpus"):
        humans.HumansSource(tmp_path / "x" / "train")


def test_views_frame_turn_and_lay_down_the_people():
    from hyper_sapiens_jax.evaluation.metrics import body_orientation

    def records(views, n=12):
        return [humans.sample_record(0, "train", i, (96, 80), views) for i in range(n)]

    def box_share(rs):  # the labelled person's box, as a share of the image
        return np.mean([r["bbox"][2] * r["bbox"][3] / (96 * 80) for r in rs])

    group, person = records(humans.DEFAULT_VIEWS), records(humans.Views(framing="person"))
    assert box_share(person) > 1.2 * box_share(group)  # the person fills the frame (1.3x here)
    turned = records(humans.Views(roll_deg=180.0), 24)
    kp = np.stack([r["keypoints"] for r in turned])
    angles = body_orientation(kp[..., :2], kp[..., 2])
    assert np.nanmax(angles) > 90  # some upside down; the default rolls at most 8 degrees
    table = humans.Views(lying_share=0.5).postures()
    assert sum(table.values()) == pytest.approx(1.0)
    assert sum(p for k, p in table.items() if k in humans._LYING) == pytest.approx(0.5)
    assert humans.Views().postures() is humans.POSTURES
    for bad in (dict(framing="crowd"), dict(roll_deg=200.0), dict(top_down=1.5), dict(lying_share=-0.1)):
        with pytest.raises(ValueError, match="views"):
            humans.Views(**bad)


def test_views_are_part_of_the_cache_key(tmp_path):
    paths = humans.write_humans(tmp_path / "h", num_train=2, num_val=1, image_size=(96, 80), seed=1)
    first = np.load(paths.train / "images.npy").copy()
    humans.write_humans(
        tmp_path / "h", num_train=2, num_val=1, image_size=(96, 80), seed=1, views=humans.Views(framing="person")
    )
    assert not np.array_equal(np.load(paths.train / "images.npy"), first)  # rebuilt with the new views
