"""Dataset readers: COCO (SyRIP), MINI-RGBD, skeletons — and their refusal of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hyper_sapiens_jax.data import geometry
from hyper_sapiens_jax.data.keypoints import KEYPOINT_SUBSETS, SMIL25_TO_COCO17, smil25_to_coco17
from hyper_sapiens_jax.data.sources import (
    CocoKeypointSource,
    DataError,
    MiniRgbdSource,
    load_skeletons,
    parse_sequences,
    read_joints_2ddep,
)


def test_smil25_to_coco17_mapping():
    joints = np.arange(25 * 2, dtype=np.float32).reshape(25, 2)
    coco, vis = smil25_to_coco17(joints)
    # nose <- 24, shoulders <- 16/17, elbows <- 18/19, wrists <- 20/21, hips <- 1/2, knees <- 4/5, ankles <- 7/8
    expected = {0: 24, 5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21, 11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8}
    for c, s in expected.items():
        assert np.array_equal(coco[c], joints[s]) and vis[c] == 1
    assert vis[1:5].sum() == 0 and (coco[1:5] == 0).all()
    assert KEYPOINT_SUBSETS["common13"] == tuple(sorted(expected))
    assert len([j for j in SMIL25_TO_COCO17 if j >= 0]) == 13


def test_parse_sequences():
    assert parse_sequences("01-03") == ["01", "02", "03"]
    assert parse_sequences("9,11-12") == ["09", "11", "12"]
    assert parse_sequences(["1", "02"]) == ["01", "02"]
    assert parse_sequences((1, 2, 11)) == ["01", "02", "11"]
    assert parse_sequences(("01-02",)) == ["01", "02"]  # an old string override read into the tuple field


def test_coco_source_reads_testbed(testbed):
    src = CocoKeypointSource(testbed.train_syn_json, testbed.train_syn_images, domain="real")
    data = json.loads(testbed.train_syn_json.read_text())
    assert len(src) == sum(1 for a in data["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0)
    rec = src[0]
    ann = next(a for a in data["annotations"] if a["id"] == rec["ann_id"])
    assert np.allclose(rec["keypoints"].ravel(), ann["keypoints"]) and np.allclose(rec["bbox"], ann["bbox"])
    assert rec["image"].dtype == np.uint8 and rec["image"].shape[2] == 3
    assert rec["is_real"] == 0  # the images' is_synthetic wins over the domain argument
    assert (rec["has_pose"], rec["has_depth"], rec["has_normal"]) == (1, 0, 0)


def test_mini_rgbd_source_targets(testbed):
    src = MiniRgbdSource(testbed.mini_rgbd, "01-02")
    assert len(src) == 12
    rec = src[3]
    h, w = rec["image"].shape[:2]
    joints = read_joints_2ddep(src.records[3]["joints"])
    assert np.allclose(rec["keypoints"][0, :2], joints[24, :2])  # nose <- SMIL 24
    assert (rec["keypoints"][1:5, 2] == 0).all()  # no eyes / ears
    person = rec["depth"] > 0
    assert person.any() and (rec["depth"][~person] == -1).all()
    assert np.array_equal(person, rec["mask"].astype(bool) & person)  # depth only on the infant
    n = rec["normal"]
    valid = np.abs(n).sum(-1) > 0
    assert valid.sum() > 0.3 * person.sum() and not valid[~person].any()
    assert np.allclose(np.linalg.norm(n[valid], axis=-1), 1, atol=1e-5)
    pts = geometry.backproject(np.where(person, rec["depth"], 0), geometry.MINI_RGBD_INTRINSICS)
    assert (np.sum(n[valid] * pts[valid], -1) < 0).all()  # normals face the camera
    x, y, bw, bh = rec["bbox"]
    vis = rec["keypoints"][:, 2] > 0
    k = rec["keypoints"][vis, :2]
    assert (k[:, 0] >= x).all() and (k[:, 0] <= x + bw).all() and (k[:, 1] >= y).all() and (k[:, 1] <= y + bh).all()
    assert (rec["has_depth"], rec["has_normal"], rec["is_real"]) == (1, 1, 0)


def test_normals_from_depth_of_a_tilted_plane():
    fx, fy, cx, cy = intr = (500.0, 500.0, 64.0, 48.0)
    n_true = np.array([0.4, -0.3, -1.0])
    n_true /= np.linalg.norm(n_true)
    u, v = np.meshgrid(np.arange(128), np.arange(96))
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u, float)], -1)
    depth = -0.9 / (rays @ n_true)  # plane n . P = -0.9
    n = geometry.normals_from_depth(depth, np.ones_like(depth, bool), intr)
    assert np.abs(n[5:-5, 5:-5] - n_true).max() < 1e-6
    assert (n[:3] == 0).all()  # border: no full stencil


def test_skeleton_sources(testbed, tmp_path):
    npz = load_skeletons(testbed.skeletons)
    assert npz.shape == (50, 17, 3) and set(np.unique(npz[..., 2])) <= {0.0, 1.0}
    coco = load_skeletons(testbed.train_real_json)
    assert coco.shape[1:] == (17, 3)
    mini = load_skeletons(testbed.mini_rgbd)
    assert mini.shape == (12, 17, 3) and (mini[:, 1:5, 2] == 0).all()
    np.savez(tmp_path / "xy.npz", keypoints=np.zeros((4, 17, 2)))
    assert (load_skeletons(tmp_path / "xy.npz")[..., 2] == 1).all()
    bad = np.zeros((4, 17, 2))
    bad[2, 3, 0] = np.nan
    np.savez(tmp_path / "nan.npz", keypoints=bad)
    with pytest.raises(DataError, match="nan.npz: skeleton 2 has NaN"):
        load_skeletons(tmp_path / "nan.npz")
    np.savez(tmp_path / "other.npz", points=np.zeros((2, 17, 2)))
    with pytest.raises(DataError, match=r"other.npz: no 'keypoints' array \(found \['points'\]\)"):
        load_skeletons(tmp_path / "other.npz")


@pytest.fixture
def coco_copy(testbed, tmp_path):
    """A writable copy of the testbed's real split: (annotation path, image folder, parsed json)."""
    images = tmp_path / "images"
    shutil.copytree(testbed.train_real_images, images)
    data = json.loads(testbed.train_real_json.read_text())
    return tmp_path / "ann.json", images, data


def _image_of(ann, data):
    return next(im for im in data["images"] if im["id"] == ann["image_id"])


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _far(a, d):
    """Keypoint 0 labelled 5000 px right of its image."""
    a["keypoints"][0:3] = [_image_of(a, d)["width"] + 5000.0, 10.0, 2]
    a["num_keypoints"] = sum(v > 0 for v in a["keypoints"][2::3])


def _tiny_image(a, d):
    _image_of(a, d).update(width=1, height=1)
    a["bbox"] = [0, 0, 50, 70]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a, d: a.pop("bbox"), "annotation {id}: field 'bbox': missing"),
        (
            lambda a, d: a["keypoints"].__setitem__(4, float("nan")),
            "annotation {id}: field 'keypoints'[4]: input should be a finite number",
        ),
        (
            lambda a, d: a.__setitem__("bbox", [10, 10, 0, 20]),
            "annotation {id}: field 'bbox': box [10.0, 10.0, 0.0, 20.0] has a zero",
        ),
        (
            lambda a, d: a.__setitem__("bbox", [10, 10, -5, 20]),
            "annotation {id}: field 'bbox': box [10.0, 10.0, -5.0, 20.0] has a zero",
        ),
        (
            lambda a, d: a["keypoints"].__setitem__(0, float("inf")),
            "annotation {id}: field 'keypoints'[0]: input should be a finite number",
        ),
        (
            lambda a, d: a["keypoints"].__setitem__(0, "a"),
            "annotation {id}: field 'keypoints'[0]: input should be a valid number",
        ),
        (
            lambda a, d: a["keypoints"].__setitem__(2, 7),
            "annotation {id}: field 'keypoints': visibility flags must be 0, 1 or 2",
        ),
        (
            lambda a, d: a.__setitem__("bbox", [_image_of(a, d)["width"] + 5, 1, 10, 10]),
            "annotation {id}: field 'bbox': box",  # ... lies outside its WxH image
        ),
        (lambda a, d: a.__setitem__("id", d["annotations"][0]["id"]), "annotation {id}: duplicate annotation id"),
        (
            lambda a, d: a.__setitem__("keypoints", [1, 2, 2]),
            "annotation {id}: field 'keypoints': must hold 51 numbers",
        ),
        (
            lambda a, d: a.__setitem__("image_id", 987654),
            "annotation {id}: field 'image_id': 987654 is not in 'images'",
        ),
        (
            lambda a, d: _image_of(a, d).__setitem__("file_name", "../ann.json"),
            "annotation {id}: file_name '../ann.json' leads outside the image root",
        ),
        (
            lambda a, d: _image_of(a, d).__setitem__("file_name", "/etc/hostname"),
            "annotation {id}: file_name '/etc/hostname' leads outside the image root",
        ),
        # Issue 33: type errors named, contradictions and impossible geometry refused.
        (lambda a, d: a.__setitem__("id", [3]), "annotation [3]: field 'id': [3] is not an id"),
        (
            lambda a, d: a.__setitem__("image_id", {"x": 1}),
            "annotation {id}: field 'image_id': {{'x': 1}} is not an id",
        ),
        (
            lambda a, d: a.__setitem__("num_keypoints", "3"),
            "annotation {id}: field 'num_keypoints': input should be a valid integer",
        ),
        (
            lambda a, d: a.__setitem__("num_keypoints", 0),
            "annotation {id}: field 'num_keypoints': 0 contradicts the",
        ),
        (lambda a, d: a.__setitem__("iscrowd", "0"), "annotation {id}: field 'iscrowd': '0' is not 0, 1"),
        (
            lambda a, d: a.__setitem__("bbox", [10, 10, 1e30, 20]),
            "annotation {id}: field 'bbox'[2]: 1e+30 is no pixel coordinate",
        ),
        (
            lambda a, d: a.__setitem__("bbox", [10, 10, 5000, 20]),
            "annotation {id}: field 'bbox': box [10.0, 10.0, 5000.0, 20.0] reaches far outside",
        ),
        (_tiny_image, "annotation {id}: field 'bbox': box [0.0, 0.0, 50.0, 70.0] reaches far outside its 1x1 image"),
        (_far, "annotation {id}: field 'keypoints'[0]: labelled keypoint 0 at"),
        # Found by the fuzzer: a huge num_keypoints overflowed numpy (OverflowError).
        (
            lambda a, d: a.__setitem__("num_keypoints", 2**70),
            "annotation {id}: field 'num_keypoints': input should be less than or equal to 2147483647",
        ),
        (
            lambda a, d: a["keypoints"].__setitem__(3, 1e300),
            "annotation {id}: field 'keypoints'[3]: 1e+300 is no pixel",
        ),
    ],
)
def test_bad_annotations_named_or_skipped(coco_copy, edit, message):
    ann_path, images, data = coco_copy
    bad = data["annotations"][1]
    edit(bad, data)
    _write(ann_path, data)
    with pytest.raises(DataError) as e:
        CocoKeypointSource(ann_path, images)
    assert message.format(id=bad["id"]) in str(e.value) and str(ann_path) in str(e.value)
    src = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    assert len(src) == len(data["annotations"]) - 1
    assert len(src.skipped) == 1 and message.format(id=bad["id"]).split(": ", 1)[1] in src.skipped[0]["reason"]


def test_duplicate_image_ids_and_non_object_files(coco_copy, tmp_path):
    """Two 'images' entries with one id: which file its annotations belong to is unknowable, so the
    file is refused (or, skipping, that image's annotations are dropped and the entry counted); a
    JSON file that is not an object, or is empty, is refused naming the file."""
    ann_path, images, data = coco_copy
    twin = dict(data["images"][0], file_name=data["images"][1]["file_name"])
    data["images"].append(twin)
    _write(ann_path, data)
    with pytest.raises(DataError, match=rf"image id {twin['id']} appears more than once"):
        CocoKeypointSource(ann_path, images)
    src = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    lost = sum(a["image_id"] == twin["id"] for a in data["annotations"])
    assert lost >= 1 and len(src) == len(data["annotations"]) - lost and len(src.skipped) == 1
    assert all(r["image_id"] != twin["id"] for r in src.records)
    for text, what in (("[]", "got list"), ("null", "got NoneType"), ("", "unreadable annotation file")):
        bad = tmp_path / f"bad_{len(text)}_{what[:3]}.json"
        bad.write_text(text)
        with pytest.raises(DataError, match=rf"{bad}: .*{what}"):
            CocoKeypointSource(bad, images)


def test_missing_and_broken_images(coco_copy):
    ann_path, images, data = coco_copy
    _write(ann_path, data)
    files = [images / im["file_name"] for im in data["images"]]
    kept = files[0].read_bytes()
    files[0].unlink()
    with pytest.raises(DataError, match=f"{files[0]}: missing image file"):
        CocoKeypointSource(ann_path, images)
    src = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    assert [s["file"] for s in src.skipped] == [str(files[0])]
    files[0].write_bytes(kept)
    # Truncated and garbage files are found when read: an error naming the file, or a counted skip.
    raw = files[1].read_bytes()
    files[1].write_bytes(raw[: len(raw) // 2])
    files[2].write_bytes(b"not an image at all")
    strict = CocoKeypointSource(ann_path, images)
    idx = {r["path"]: i for i, r in enumerate(strict.records)}
    with pytest.raises(DataError, match=f"{files[1]}: unreadable or truncated image"):
        strict[idx[str(files[1])]]
    with pytest.raises(DataError, match=f"{files[2]}: unreadable or truncated image"):
        strict[idx[str(files[2])]]
    lenient = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    rec = lenient[idx[str(files[1])]]
    assert rec["image"].ndim == 3 and str(files[1]) in [s["file"] for s in lenient.skipped]


def test_bad_mini_rgbd_frames(testbed, tmp_path):
    root = tmp_path / "mini"
    shutil.copytree(testbed.mini_rgbd, root)
    joints = root / "01" / "joints_2Ddep" / "syn_joints_2Ddep_00002.txt"
    joints.write_text("1 2 3 0\n")
    src = MiniRgbdSource(root, "01")
    with pytest.raises(DataError, match=f"{joints}: expected 25 lines"):
        src[2]
    (root / "01" / "depth" / "syn_00004_depth.png").unlink()
    with pytest.raises(DataError, match="syn_00004_depth.png: missing file"):
        MiniRgbdSource(root, "01")
    assert len(MiniRgbdSource(root, "01", skip_bad_records=True)) == 5
    with pytest.raises(DataError, match="missing MINI-RGBD sequence folder"):
        MiniRgbdSource(root, "01-03", skip_bad_records=True)
    Image.new("L", (3, 3)).save(root / "02" / "fg_mask" / "mask_00001.png")
    with pytest.raises(DataError, match="differs from the image's"):
        MiniRgbdSource(root, "02")[1]
    # A non-numeric joints file, an 8-bit depth PNG (not millimetres), a missing mask frame.
    (root / "02" / "joints_2Ddep" / "syn_joints_2Ddep_00002.txt").write_text("x y 3 0\n" * 25)
    with pytest.raises(DataError, match="syn_joints_2Ddep_00002.txt: unreadable joints file"):
        MiniRgbdSource(root, "02")[2]
    depth8 = root / "02" / "depth" / "syn_00003_depth.png"
    Image.fromarray(np.full((480, 640), 200, np.uint8)).save(depth8)
    with pytest.raises(DataError, match=rf"{depth8}: expected a 16-bit depth PNG \(millimetres\), got image mode 'L'"):
        MiniRgbdSource(root, "02")[3]
    skipping = MiniRgbdSource(root, "02", skip_bad_records=True)
    skipping[3]
    assert any("16-bit" in s["reason"] for s in skipping.skipped)
    (root / "02" / "fg_mask" / "mask_00005.png").unlink()
    with pytest.raises(DataError, match="mask_00005.png: missing file"):
        MiniRgbdSource(root, "02")


def test_image_modes_decode_as_cv2_imread_does(tmp_path):
    """Grey, palette, RGBA, 16-bit grey PNGs and an EXIF-rotated JPEG decode to what mmcv's
    cv2.imread gives (the reader Sapiens was trained with): upright, RGB, alpha dropped, 16-bit
    high byte; zero-byte and truncated files are refused naming the file."""
    import cv2
    from PIL import Image

    from hyper_sapiens_jax.data.sources import read_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), np.uint8)
    files = {
        "grey.png": Image.fromarray(rgb[..., 0]),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "rgba.png": Image.fromarray(np.concatenate([rgb, rng.integers(0, 256, (20, 30, 1), np.uint8)], -1)),
        "grey16.png": Image.fromarray(rng.integers(0, 65536, (20, 30), np.uint16)),
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for name in [*files, "rotated.jpg"]:
        ours = read_image(tmp_path / name)
        theirs = cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)[..., ::-1]
        assert ours.dtype == np.uint8 and ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        assert np.abs(ours.astype(int) - theirs).max() <= 1, name  # JPEG decoders may round differently
    assert read_image(tmp_path / "rotated.jpg").shape == (30, 20, 3)  # upright: taller than wide
    assert (read_image(tmp_path / "grey16.png") < 255).mean() > 0.9  # not clipped to white
    (tmp_path / "empty.png").write_bytes(b"")
    data = (tmp_path / "grey.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("empty.png", "cut.png"):
        with pytest.raises(DataError, match=rf"{tmp_path / name}: unreadable or truncated image"):
            read_image(tmp_path / name)


def test_ids_of_any_json_scalar_type_map_consistently(coco_copy):
    """String, float and huge ids are read and mapped to fresh int64 ids (7 and 7.0 are one id);
    annotations keep pointing at their images."""
    ann_path, images, data = coco_copy
    names = {}
    for k, im in enumerate(data["images"]):
        new = [f"img-{k}", float(im["id"]), 2**70 + k][k % 3]
        for a in data["annotations"]:
            if a["image_id"] == im["id"]:
                a["image_id"] = int(new) if isinstance(new, float) else new  # 7.0 in images, 7 here
        names[int(new) if isinstance(new, float) else new] = im["file_name"]  # by canonical id
        im["id"] = new
    for k, a in enumerate(data["annotations"]):
        a["id"] = [f"ann-{k}", 10.5 + k, k][k % 3]
    _write(ann_path, data)
    src = CocoKeypointSource(ann_path, images)
    assert len(src) == len(data["annotations"]) and not src.skipped
    by_int = {v: k for k, v in src.id_maps["image"].items()}
    for rec in src.records:
        original = by_int.get(rec["image_id"], rec["image_id"])
        assert rec["path"].endswith(names[original])
    assert len({r["ann_id"] for r in src.records}) == len(src) and all(
        isinstance(r["ann_id"], int) for r in src.records
    )
    assert all(-(2**63) <= r["image_id"] < 2**63 for r in src.records)
    # True, null and an empty string are not ids.
    for bad, shown in ((True, "True"), (None, "None"), ("", "''")):
        data["annotations"][0]["id"] = bad
        _write(ann_path, data)
        with pytest.raises(DataError, match=rf"field 'id': {shown} is not an id"):
            CocoKeypointSource(ann_path, images)


def test_dropped_annotations_are_counted(coco_copy):
    """Crowd annotations and annotations without labelled keypoints are not records, and are
    counted (``dropped``) instead of vanishing."""
    ann_path, images, data = coco_copy
    data["annotations"][0]["iscrowd"] = 1
    hidden = data["annotations"][1]
    hidden["keypoints"][2::3] = [0] * 17
    hidden["num_keypoints"] = 0
    _write(ann_path, data)
    src = CocoKeypointSource(ann_path, images)
    assert src.dropped == {"crowd": 1, "no_keypoints": 1} and len(src) == len(data["annotations"]) - 2


def test_bad_image_entries_and_categories_are_named(coco_copy):
    """An image entry with a string width (or a zero height) is named by its id and field; its
    annotations are not reported again. A category with another keypoint count is named."""
    ann_path, images, data = coco_copy
    im = data["images"][0]
    im["width"] = "640"
    data["images"][1]["height"] = 0
    _write(ann_path, data)
    with pytest.raises(DataError, match=rf"ann.json image {im['id']}: field 'width': input should be a valid integer"):
        CocoKeypointSource(ann_path, images)
    src = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    assert len(src.skipped) == 2 and "field 'height': input should be greater than 0" in src.skipped[1]["reason"]
    lost = sum(a["image_id"] in (im["id"], data["images"][1]["id"]) for a in data["annotations"])
    assert len(src) == len(data["annotations"]) - lost
    data["images"][0]["width"], data["images"][1]["height"] = 640, 480
    data["categories"][0]["keypoints"] = ["nose"]
    _write(ann_path, data)
    with pytest.raises(DataError, match=r"category 1: field 'keypoints': names 1 keypoints, not 17"):
        CocoKeypointSource(ann_path, images)


def test_image_paths_are_resolved_inside_the_root(coco_copy, tmp_path):
    """A symlink inside the image root that leads outside it is refused (the path is resolved
    first); one that stays inside is followed; an image path that is a directory says so."""
    ann_path, images, data = coco_copy
    outside = tmp_path / "outside.png"
    shutil.copy(images / data["images"][0]["file_name"], outside)
    (images / "escape.png").symlink_to(outside)
    (images / "inside.png").symlink_to(images / data["images"][1]["file_name"])
    (images / "a_folder.png").mkdir()
    data["images"][0]["file_name"] = "escape.png"
    _write(ann_path, data)
    with pytest.raises(DataError, match=r"file_name 'escape.png' leads outside the image root .* \(through a symlink"):
        CocoKeypointSource(ann_path, images)
    data["images"][0]["file_name"] = "inside.png"
    _write(ann_path, data)
    assert len(CocoKeypointSource(ann_path, images)) == len(data["annotations"])
    data["images"][0]["file_name"] = "a_folder.png"
    _write(ann_path, data)
    with pytest.raises(DataError, match=r"a_folder.png: is a directory, not an image file \(annotation"):
        CocoKeypointSource(ann_path, images)


def test_geometry_is_checked_against_the_decoded_size_when_it_differs(coco_copy):
    """An image declared 10x larger than it decodes: a keypoint inside the declared size but far
    outside the decoded one is refused when the record is read (or skipped with the next one)."""
    ann_path, images, data = coco_copy
    ann = data["annotations"][0]
    im = _image_of(ann, data)
    w, h = im["width"], im["height"]
    im["width"], im["height"] = 10 * w, 10 * h
    ann["keypoints"][0:3] = [5.0 * w, 10.0, 2]
    ann["num_keypoints"] = sum(v > 0 for v in ann["keypoints"][2::3])
    _write(ann_path, data)
    src = CocoKeypointSource(ann_path, images)  # fits the declared size
    idx = next(i for i, r in enumerate(src.records) if r["path"].endswith(im["file_name"]))
    with pytest.raises(
        DataError,
        match=rf"annotation {ann['id']}: field 'keypoints'\[0\]: .* outside its {w}.0x{h}.0 "
        rf"image \(the decoded image .*; declared {10 * w}x{10 * h}\)",
    ):
        src[idx]
    lenient = CocoKeypointSource(ann_path, images, skip_bad_records=True)
    assert lenient[idx]["ann_id"] != ann["id"] and len(lenient.skipped) == 1
    # Without a declared size, the decoded one is the reference.
    del im["width"], im["height"]
    _write(ann_path, data)
    with pytest.raises(DataError, match="no size declared"):
        CocoKeypointSource(ann_path, images)[idx]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe{\x00}", r"unreadable annotation file: not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, r"unreadable annotation file: JSON nested too deeply"),
        (b'{"images": [], "annotations": [], "x": 1' + b"1" * 5000 + b"}", r"unreadable annotation file \("),
        (b"", r"unreadable annotation file \("),
    ],
    ids=["not-utf8", "deep", "huge-number", "empty"],
)
def test_every_read_failure_is_a_data_error_naming_the_file(coco_copy, content, message):
    ann_path, images, _ = coco_copy
    ann_path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{ann_path}: {message}"):
        CocoKeypointSource(ann_path, images)


def test_a_directory_or_oversized_annotation_file_is_named(coco_copy, monkeypatch):
    from hyper_sapiens_jax.data import coco_schema

    ann_path, images, data = coco_copy
    with pytest.raises(DataError, match=rf"{images}: is a directory, not a JSON annotation file"):
        CocoKeypointSource(images, images)
    _write(ann_path, data)
    monkeypatch.setattr(coco_schema, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError, match=rf"{ann_path}: annotation file of \d+ bytes is larger than the 100-byte limit"):
        CocoKeypointSource(ann_path, images)
