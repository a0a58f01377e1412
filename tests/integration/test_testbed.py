"""Tests of the synthetic infant testbed: skeletons, renderer and the dataset writer."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hyper_sapiens_jax.data.keypoints import COCO17_NAMES
from hyper_sapiens_jax.testbed import bodies, renderer, writer
from hyper_sapiens_jax.testbed.bodies import Part, Posture
from tests.helpers import rest_skeletons

TINY = dict(num_syn=4, num_real=3, num_val=2, num_sequences=1, frames_per_sequence=4, num_skeletons=64)
MICRO = dict(
    num_syn=2, num_real=1, num_val=1, num_sequences=1, frames_per_sequence=2, num_skeletons=16, image_size=(120, 160)
)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory) -> writer.Paths:
    return writer.write_testbed(tmp_path_factory.mktemp("tb") / "set", **TINY, workers=1)


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _images(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): _read(p) for p in sorted(root.rglob("*")) if p.suffix in (".png", ".jpg")}


def _render_one(posture=None, look="synthetic", seed=0, angles_zero=False, tilt=12.0):
    """A single rendered frame (and its skeleton and camera)."""
    rng = np.random.default_rng(seed)
    if angles_zero:  # the rest pose (T-pose), lying straight on the mat
        shape = bodies.sample_shapes(rng, 1)
        root = bodies.POSTURE_BASE[posture][None]
        skel, _ = bodies.place_on_mat(shape, np.zeros((1, 25, 3)), root, np.array([int(posture)]))
    else:
        skel = bodies.sample_skeletons(rng, 1, posture)
    ells = bodies.body_ellipsoids(skel)
    camera = renderer.sample_cameras(rng, ells, (480, 640), max_tilt_deg=tilt)[0]
    return renderer.render(skel, camera, renderer.sample_scene(rng, look, ells.take(0))), skel, camera


# ---------------------------------------------------------------------------------------------
# Skeletons
# ---------------------------------------------------------------------------------------------
def test_infant_proportions():
    shape = bodies.sample_shapes(np.random.default_rng(0), 300)
    rest = rest_skeletons(shape)
    ells = bodies.body_ellipsoids(rest)
    up = np.array([0.0, 1.0, 0.0])
    top = ells.centres[..., 1] + ells.half_extent(up)
    bottom = ells.centres[..., 1] - ells.half_extent(up)
    crown_to_sole = top.max(1) - bottom.min(1)
    head = ells.part == Part.HEAD
    head_height = top[:, head][:, 0] - bottom[:, head][:, 0]
    ratio = head_height / crown_to_sole
    assert np.all((ratio > 0.22) & (ratio < 0.28)), ratio.min()  # adults: ~0.13
    assert abs(ratio.mean() - 0.25) < 0.01
    assert np.allclose(crown_to_sole, shape.body_length, rtol=0.04)
    assert crown_to_sole.min() > 0.45 and crown_to_sole.max() < 0.85  # newborn to ~1 year
    # Short limbs: hip-to-sole and shoulder-to-knuckles well under the adult ~0.5 and ~0.44.
    legs = (rest.joints[:, 1, 1] - bottom.min(1)) / crown_to_sole
    arms = np.linalg.norm(rest.joints[:, 22] - rest.joints[:, 16], axis=-1) / crown_to_sole
    assert legs.max() < 0.45 and arms.max() < 0.36
    # Body-size variation.
    assert np.ptp(shape.body_length) > 0.2 and np.ptp(shape.girth) > 0.15


def test_posed_skeletons_are_rigid_within_limits_and_on_the_mat():
    rng = np.random.default_rng(1)
    skel = bodies.sample_skeletons(rng, 400)
    assert set(np.unique(skel.posture)) == set(range(len(bodies.POSTURE_WEIGHTS)))  # the infant postures
    # Forward kinematics keeps every bone length.
    parents = bodies.PARENTS[1:]
    bones = np.linalg.norm(skel.joints[:, 1:] - skel.joints[:, parents], axis=-1)
    assert np.allclose(bones, np.linalg.norm(skel.shape.offsets[:, 1:], axis=-1))
    # Knees are hinges that only bend backwards, at most 150 degrees.
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
        shin = np.einsum("nji,nj->ni", skel.frames[:, hip], skel.joints[:, ankle] - skel.joints[:, knee])
        shin /= np.linalg.norm(shin, axis=-1, keepdims=True)
        assert np.abs(shin[:, 0]).max() < 1e-9 and shin[:, 2].max() < 1e-9
        assert np.degrees(np.arccos(-shin[:, 1])).max() <= 150 + 1e-6
        # Thighs never extend backwards by more than 15 degrees.
        thigh = np.einsum("nji,nj->ni", skel.frames[:, 0], skel.joints[:, knee] - skel.joints[:, hip])
        thigh /= np.linalg.norm(thigh, axis=-1, keepdims=True)
        assert thigh[:, 2].min() >= -np.sin(np.radians(15)) - 1e-9
    # Elbows bend the forearm forwards only, at most 145 degrees.
    for shoulder, elbow, wrist in ((16, 18, 20), (17, 19, 21)):
        fore = np.einsum("nji,nj->ni", skel.frames[:, shoulder], skel.joints[:, wrist] - skel.joints[:, elbow])
        fore /= np.linalg.norm(fore, axis=-1, keepdims=True)
        upper = np.sign(skel.shape.offsets[:, elbow, 0])  # +x left arm, -x right arm
        assert np.abs(fore[:, 1]).max() < 1e-9 and fore[:, 2].min() > -1e-9
        assert np.degrees(np.arccos(fore[:, 0] * upper)).max() <= 145 + 1e-6
    # Every angle respects its posture's limits.
    limits = np.stack([bodies.JOINT_LIMITS[Posture(p)] for p in skel.posture])
    assert np.all(skel.angles >= limits[..., 0] - 1e-12) and np.all(skel.angles <= limits[..., 1] + 1e-12)
    # Lying or sitting on the mat: touching it, never through it.
    ells = bodies.body_ellipsoids(skel)
    lowest = (ells.centres[..., 2] - ells.half_extent(np.array([0.0, 0.0, 1.0]))).min(1)
    assert np.abs(lowest).max() < 1e-9


def test_motion_is_smooth():
    skel = bodies.sample_motion(np.random.default_rng(2), 60)
    step = np.linalg.norm(np.diff(skel.joints, axis=0), axis=-1)  # (59, 25) metres per frame
    assert step.max() < 0.03 and step.mean() > 1e-4  # moving, without jumps
    assert np.allclose(skel.shape.body_length, skel.shape.body_length[0])


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------
def _normals_from_depth(depth: np.ndarray, camera: renderer.Camera) -> np.ndarray:
    """Central-difference normals (H, W, 3) of a depth map, camera frame, facing the camera."""
    xs, ys = camera.rays()
    points = np.stack(np.broadcast_arrays(xs[None] * depth, ys[:, None] * depth, depth), -1)
    du = points[1:-1, 2:] - points[1:-1, :-2]
    dv = points[2:, 1:-1] - points[:-2, 1:-1]
    n = np.zeros_like(points)
    n[1:-1, 1:-1] = -np.cross(du, dv)
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rendered_depth_and_normals_agree(seed):
    frame, _, camera = _render_one(seed=seed, tilt=30.0)
    start = time.perf_counter()
    frame, _, camera = _render_one(seed=seed, tilt=30.0)
    assert time.perf_counter() - start < 1.0  # ~0.05 s; loose for a busy test machine
    depth = frame.depth.astype(np.float64)
    interior = cv2.erode(frame.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    jumps = np.zeros_like(interior)
    jumps[1:-1, 1:-1] = (np.abs(depth[1:-1, 2:] - depth[1:-1, :-2]) > 0.004) | (
        np.abs(depth[2:, 1:-1] - depth[:-2, 1:-1]) > 0.004
    )
    sel = interior & ~cv2.dilate(jumps.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert sel.sum() > 2000
    cos = np.sum(_normals_from_depth(depth, camera)[sel] * frame.normals[sel], -1)
    angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    assert np.median(angle) < 1.0 and np.percentile(angle, 90) < 5.0
    # Unit normals on the infant, zero elsewhere; depth only on the infant, the mat behind it.
    assert np.allclose(np.linalg.norm(frame.normals[frame.mask], axis=-1), 1, atol=1e-5)
    assert not frame.normals[~frame.mask].any() and not frame.depth[~frame.mask].any()
    ground, _ = renderer.mat_depth(camera)  # the infant is above the mat everywhere
    assert (frame.depth[frame.mask] < ground[frame.mask]).all()
    assert np.allclose(frame.scene_depth[~frame.mask], ground[~frame.mask], rtol=1e-6)


def test_visibility_follows_occlusion():
    supine, _, _ = _render_one(Posture.SUPINE, angles_zero=True, tilt=0.0)
    prone, _, _ = _render_one(Posture.PRONE, angles_zero=True, tilt=0.0)
    face, body = [0, 1, 2], list(range(5, 17))
    assert (supine.coco_visibility[face + body] == 2).all()  # lying on the back, seen from above
    assert (prone.coco_visibility[face] == 1).all()  # face down: hidden, still labelled
    assert (prone.coco_visibility[body] == 2).all()
    # Visible keypoints lie on the infant's silhouette; the ray test agrees with the z-buffer.
    agree = []
    for seed in range(4):
        frame, skel, camera = _render_one(seed=seed, tilt=30.0)
        mask = cv2.dilate(frame.mask.astype(np.uint8), np.ones((5, 5), np.uint8))
        uv = np.round(frame.coco_uv[frame.coco_visibility == 2]).astype(int)
        assert mask[uv[:, 1], uv[:, 0]].all()
        points, burial = bodies.coco17_points(skel)
        ells_cam, cones_cam = renderer.to_camera_frame(
            bodies.body_ellipsoids(skel).take(0), bodies.body_cones(skel).take(0), camera
        )
        analytic = renderer.ray_visibility(
            camera.to_camera(points[0])[None], burial, ells_cam.take(None), cones_cam.take(None), camera
        )
        agree.append(analytic[0] == frame.coco_visibility)
    assert np.mean(agree) > 0.9


def test_looks_differ():
    synth, _, _ = _render_one(seed=3, look="synthetic")
    real, _, _ = _render_one(seed=3, look="real")
    assert (synth.mask == real.mask).all()  # same infant, same camera
    bg = ~cv2.dilate(synth.mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert len(np.unique(synth.rgb[bg], axis=0)) == 1  # one plain colour
    assert real.rgb[bg].std(axis=0).mean() > 8  # textured, lit, noisy

    def high_freq(image):
        return cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F)[bg].var()

    assert high_freq(real.rgb) > 5 * high_freq(synth.rgb) + 1


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------
def test_intrinsics_scale_with_image_size():
    assert renderer.intrinsics_for((480, 640)) == renderer.MINI_RGBD_INTRINSICS
    assert np.allclose(renderer.intrinsics_for((240, 320)), np.array(renderer.MINI_RGBD_INTRINSICS) / 2)


def test_layout(testbed):
    root = testbed.root
    manifest = json.loads((root / "testbed.json").read_text())
    assert manifest["counts"] == {
        "train_syn": 4,
        "train_real": 3,
        "validate": 2,
        "sequences": 1,
        "frames": 4,
        "skeletons": 64,
    }
    assert sorted(p.name for p in testbed.train_syn_images.iterdir()) == [f"syn_{i:05d}.png" for i in range(4)]
    assert sorted(p.name for p in testbed.val_images.iterdir()) == [f"val_{i:05d}.jpg" for i in range(2)]
    seq = root / "mini_rgbd" / "01"
    assert testbed.sequences == (seq,)
    expected = {f"rgb/syn_{f:05d}.png" for f in range(4)} | {f"depth/syn_{f:05d}_depth.png" for f in range(4)}
    expected |= {f"fg_mask/mask_{f:05d}.png" for f in range(4)}
    expected |= {f"joints_2Ddep/syn_joints_2Ddep_{f:05d}.txt" for f in range(4)}
    expected |= {f"joints_3D/syn_joints_3D_{f:05d}.txt" for f in range(4)}
    assert {str(p.relative_to(seq)) for p in seq.rglob("*") if p.is_file()} == expected
    assert sorted(p.name for p in (root / "syrip" / "annotations").iterdir()) == [
        "person_keypoints_train_real.json",
        "person_keypoints_train_syn.json",
        "person_keypoints_validate.json",
    ]


def test_coco_json_is_valid(testbed):
    height, width = 480, 640
    for split, (ann_file, image_dir) in testbed.coco_sets().items():
        coco = json.loads(ann_file.read_text())
        (category,) = coco["categories"]
        assert category["id"] == 1 and category["name"] == "person"
        assert category["keypoints"] == list(COCO17_NAMES)
        assert min(map(min, category["skeleton"])) == 1 and max(map(max, category["skeleton"])) == 17
        image_ids = [im["id"] for im in coco["images"]]
        assert len(set(image_ids)) == len(image_ids) == {"train_syn": 4, "train_real": 3, "validate": 2}[split]
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) == len(image_ids)
        for im in coco["images"]:
            assert im["is_synthetic"] is (split == "train_syn")
            assert _read(image_dir / im["file_name"]).shape == (im["height"], im["width"], 3) == (height, width, 3)
        for ann in coco["annotations"]:
            assert ann["image_id"] in image_ids and ann["category_id"] == 1 and ann["iscrowd"] == 0
            kp = np.array(ann["keypoints"], float).reshape(17, 3)
            v = kp[:, 2]
            assert set(v) <= {0, 1, 2} and ann["num_keypoints"] == int((v > 0).sum()) > 0
            assert not kp[v == 0, :2].any()
            xy = kp[v > 0, :2]
            assert (xy >= 0).all() and (xy[:, 0] <= width - 1).all() and (xy[:, 1] <= height - 1).all()
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height and w > 0 and h > 0
            assert (xy[:, 0] >= x).all() and (xy[:, 0] <= x + w).all()
            assert (xy[:, 1] >= y).all() and (xy[:, 1] <= y + h).all()
            assert 0 < ann["area"] <= w * h
            assert all(len(poly) >= 6 for poly in ann["segmentation"])


def test_mini_rgbd_files_parse_back(testbed):
    (seq,) = testbed.sequences
    fx, fy, cx, cy = 588.67905803875317, 590.25690113005601, 322.22048191353628, 237.46785983766890
    intrinsics = json.loads(testbed.manifest.read_text())["intrinsics"]
    assert (intrinsics["fx"], intrinsics["fy"], intrinsics["cx"], intrinsics["cy"]) == (fx, fy, cx, cy)
    previous = None
    for f in range(4):
        rows2d = np.loadtxt(seq / "joints_2Ddep" / f"syn_joints_2Ddep_{f:05d}.txt")
        rows3d = np.loadtxt(seq / "joints_3D" / f"syn_joints_3D_{f:05d}.txt")
        assert rows2d.shape == rows3d.shape == (25, 4)
        assert (rows2d[:, 3] == np.arange(25)).all() and (rows3d[:, 3] == np.arange(25)).all()
        xyz = rows3d[:, :3]
        # 2D = the exact MINI-RGBD projection of the 3D joints; depth in millimetres.
        assert np.allclose(rows2d[:, 0], fx * xyz[:, 0] / xyz[:, 2] + cx, atol=2e-3)
        assert np.allclose(rows2d[:, 1], fy * xyz[:, 1] / xyz[:, 2] + cy, atol=2e-3)
        assert np.allclose(rows2d[:, 2], xyz[:, 2] * 1000, atol=2e-3)
        depth = _read(seq / "depth" / f"syn_{f:05d}_depth.png")
        mask = _read(seq / "fg_mask" / f"mask_{f:05d}.png")
        assert depth.dtype == np.uint16 and depth.shape == (480, 640) and (depth > 0).all()
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert depth[mask > 0].max() < np.median(depth[mask == 0])  # the infant lies on the mat
        # Joints lie inside the body: the surface seen at a joint's pixel is in front of it.
        u, v = np.round(rows2d[:, 0]).astype(int), np.round(rows2d[:, 1]).astype(int)
        on_body = mask[v, u] > 0
        assert on_body.sum() >= 20
        gap = rows2d[on_body, 2] - depth[v[on_body], u[on_body]]
        assert gap.min() >= -1.0 and 5 < np.median(gap) < 80
        if previous is not None:
            assert 0 < np.abs(xyz - previous).max() < 0.03  # smooth motion
        previous = xyz


def test_skeleton_samples(testbed):
    kp = np.load(testbed.skeletons)["keypoints"]
    assert kp.shape == (64, 17, 3) and kp.dtype == np.float32
    v = kp[..., 2]
    assert set(np.unique(v)) <= {0.0, 1.0, 2.0} and (v == 2).mean() > 0.4 and (v == 1).any()
    assert not kp[v == 0, :2].any()
    assert (kp[v > 0, 0] <= 639).all() and (kp[v > 0, 1] <= 479).all() and (kp[v > 0, :2] >= 0).all()


def test_same_seed_same_bytes_any_workers(tmp_path):
    a = writer.write_testbed(tmp_path / "a", **MICRO, seed=0, workers=1)
    b = writer.write_testbed(tmp_path / "b", **MICRO, seed=0, workers=2)
    c = writer.write_testbed(tmp_path / "c", **MICRO, seed=1, workers=1)
    for split in a.coco_sets():
        ja, jb, jc = (p.coco_sets()[split][0].read_bytes() for p in (a, b, c))
        assert ja == jb and ja != jc
    images_a, images_b, images_c = _images(a.root), _images(b.root), _images(c.root)
    assert images_a.keys() == images_b.keys() == images_c.keys() and len(images_a) == 4 + 3 * 2
    assert all(np.array_equal(images_a[k], images_b[k]) for k in images_a)
    assert not any(np.array_equal(images_a[k], images_c[k]) for k in images_a)
    txt = "mini_rgbd/01/joints_3D/syn_joints_3D_00001.txt"
    assert (a.root / txt).read_bytes() == (b.root / txt).read_bytes() != (c.root / txt).read_bytes()
    ka, kb, kc = (np.load(p.skeletons)["keypoints"] for p in (a, b, c))
    assert np.array_equal(ka, kb) and not np.array_equal(ka, kc)


def test_caching_and_clean_regeneration(tmp_path):
    out = tmp_path / "set"
    paths = writer.write_testbed(out, **MICRO)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    start = time.perf_counter()
    again = writer.write_testbed(out, **MICRO)
    assert time.perf_counter() - start < 0.5 and again == paths
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps  # untouched
    changed = writer.write_testbed(out, **{**MICRO, "num_syn": 3})
    assert len(list(changed.train_syn_images.iterdir())) == 3
    assert json.loads(changed.manifest.read_text())["params"]["num_syn"] == 3
    assert len(json.loads(changed.train_syn_json.read_text())["images"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".set.lock", "set"]  # no temp/old folders left
    # A folder that is not a testbed is never overwritten.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        writer.write_testbed(other, **MICRO)
    assert (other / "keep.txt").read_text() == "precious"


_RACER = """
import sys, time
from pathlib import Path
from hyper_sapiens_jax.testbed import writer

def build(folder):
    with open(sys.argv[2], "a") as log:
        log.write("build\\n")
    time.sleep(1.0)
    (folder / "data.txt").write_text("x")
    return {}

writer.write_cached(Path(sys.argv[1]), "manifest.json", {"n": 1}, build)
print((Path(sys.argv[1]) / "data.txt").read_text())
"""


def test_two_processes_asking_for_one_set_build_it_once(tmp_path):
    """Ranks of a job on one machine that generate the same testbed at once take turns on a lock:
    one builds, the other waits and reads the finished set (it never sees a half-swapped folder)."""
    import subprocess
    import sys

    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    out, log = tmp_path / "set", tmp_path / "builds.log"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(out), str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert [r[0].strip() for r in results] == ["x", "x"]
    assert log.read_text() == "build\n"  # built exactly once
    assert json.loads((out / "manifest.json").read_text())["params"] == {"n": 1}


def test_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        writer.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--out",
        "--num-syn",
        "--num-real",
        "--num-val",
        "--num-sequences",
        "--frames-per-sequence",
        "--num-skeletons",
        "--seed",
    ):
        assert flag in help_text
    assert (
        writer.main(
            [
                "--out",
                str(tmp_path / "cli"),
                "--num-syn",
                "1",
                "--num-real",
                "1",
                "--num-val",
                "1",
                "--num-sequences",
                "1",
                "--frames-per-sequence",
                "1",
                "--num-skeletons",
                "4",
                "--image-size",
                "96",
                "128",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert str(tmp_path / "cli" / "syrip" / "annotations" / "person_keypoints_validate.json") in printed
    assert (tmp_path / "cli" / "testbed.json").exists()
