"""The synthetic infant testbed: a deterministic stand-in for SyRIP, MINI-RGBD and pose-prior data.

No real infant data ships with the project, so this module renders its own (bodies.py makes
infants, renderer.py draws them) in the exact on-disk formats of the real sets (docs/design.md §5):

    OUT/
      testbed.json                        manifest: parameters, counts, intrinsics (written last)
      syrip/annotations/person_keypoints_{train_syn,train_real,validate}.json   COCO keypoints
      syrip/images/train_syn/syn_NNNNN.png     "synthetic" look (flat colours, plain background)
      syrip/images/train_real/real_NNNNN.jpg   "real" look (textures, clutter, light, noise, JPEG)
      syrip/images/validate/val_NNNNN.jpg      "real" look
      mini_rgbd/01/rgb/syn_00000.png           one folder per sequence (01, 02, ...), frames from 0
      mini_rgbd/01/depth/syn_00000_depth.png   uint16 millimetres (infant + mat)
      mini_rgbd/01/fg_mask/mask_00000.png      uint8 0/255
      mini_rgbd/01/joints_2Ddep/syn_joints_2Ddep_00000.txt   25 lines "x y depth_mm joint_id"
      mini_rgbd/01/joints_3D/syn_joints_3D_00000.txt         25 lines "x y z joint_id" (m, camera)
      skeletons.npz                        keypoints float32 (N, 17, 3): COCO-17 (x, y, visibility)

Every sample draws from its own generator seeded by (seed, stream, index), so the output is the
same whatever the number of worker processes. A finished set is recognised by its manifest: the
same parameters again return at once; other parameters rebuild it in a temporary folder that
replaces the old one only when complete.

CLI: ``python -m hyper_sapiens_jax.testbed.writer --out DIR`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hyper_sapiens_jax.data.keypoints import COCO17_BONES, COCO17_NAMES
from hyper_sapiens_jax.logs import progress
from hyper_sapiens_jax.testbed import bodies, renderer

FORMAT_VERSION = 1  # bump when the output changes, so cached sets get rebuilt
MANIFEST = "testbed.json"
COCO_MAX_TILT_DEG = 35.0  # SyRIP-like photos: the camera may lean well off vertical
MINI_RGBD_MAX_TILT_DEG = 10.0  # MINI-RGBD: a camera looking straight down at the infant

# COCO splits: name -> (image file prefix, extension, look, seed stream).
SPLITS = {
    "train_syn": ("syn", ".png", "synthetic", 0),
    "train_real": ("real", ".jpg", "real", 1),
    "validate": ("val", ".jpg", "real", 2),
}
_SEQUENCE_STREAM, _SKELETON_STREAM = 3, 4


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a testbed lives. COCO sets are (annotation file, image folder) pairs."""

    root: Path
    manifest: Path
    syrip: Path
    train_syn_json: Path
    train_real_json: Path
    val_json: Path
    train_syn_images: Path
    train_real_images: Path
    val_images: Path
    mini_rgbd: Path
    sequences: tuple[Path, ...]
    skeletons: Path

    @classmethod
    def under(cls, root: str | os.PathLike, num_sequences: int) -> Paths:
        root = Path(root)
        syrip = root / "syrip"
        ann = syrip / "annotations"
        return cls(
            root=root,
            manifest=root / MANIFEST,
            syrip=syrip,
            train_syn_json=ann / "person_keypoints_train_syn.json",
            train_real_json=ann / "person_keypoints_train_real.json",
            val_json=ann / "person_keypoints_validate.json",
            train_syn_images=syrip / "images" / "train_syn",
            train_real_images=syrip / "images" / "train_real",
            val_images=syrip / "images" / "validate",
            mini_rgbd=root / "mini_rgbd",
            sequences=tuple(root / "mini_rgbd" / f"{k + 1:02d}" for k in range(num_sequences)),
            skeletons=root / "skeletons.npz",
        )

    def coco_sets(self) -> dict[str, tuple[Path, Path]]:
        """Split name -> (annotation file, image folder)."""
        return {
            "train_syn": (self.train_syn_json, self.train_syn_images),
            "train_real": (self.train_real_json, self.train_real_images),
            "validate": (self.val_json, self.val_images),
        }


# ---------------------------------------------------------------------------------------------
# COCO (SyRIP layout)
# ---------------------------------------------------------------------------------------------
COCO_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO17_NAMES),
    "skeleton": [[a + 1, b + 1] for a, b in COCO17_BONES],  # 1-based, as in COCO files
}


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygon segmentation of a boolean mask (H, W)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2) for c in contours]
    return [[float(v) for v in p.ravel()] for p in polys if len(p) >= 3]


def coco_annotation(frame: renderer.Frame) -> dict:
    """The COCO keypoint annotation of a rendered frame (no ids yet).

    keypoints: 17 x (x, y, v), v 2 visible / 1 hidden / 0 outside the image (then x = y = 0).
    bbox [x, y, w, h]: whole pixels around the infant's mask and every labelled keypoint.
    """
    vis = frame.coco_visibility
    uv = np.where(vis[:, None] > 0, np.round(frame.coco_uv, 2), 0.0)
    rows, cols = np.nonzero(frame.mask)
    labelled = uv[vis > 0]
    x0 = int(np.floor(min(cols.min(), labelled[:, 0].min(initial=np.inf))))
    y0 = int(np.floor(min(rows.min(), labelled[:, 1].min(initial=np.inf))))
    x1 = int(np.ceil(max(cols.max() + 1, labelled[:, 0].max(initial=-np.inf))))
    y1 = int(np.ceil(max(rows.max() + 1, labelled[:, 1].max(initial=-np.inf))))
    keypoints = np.concatenate([uv, vis[:, None]], axis=1).ravel()
    return {
        "category_id": 1,
        "keypoints": [float(v) if i % 3 < 2 else int(v) for i, v in enumerate(keypoints)],
        "num_keypoints": int((vis > 0).sum()),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(frame.mask.sum()),
        "segmentation": _polygons(frame.mask),
        "iscrowd": 0,
    }


def render_coco_sample(seed: int, split: str, index: int, image_size: tuple[int, int]):
    """Render sample ``index`` of a COCO split: (renderer.Frame, JPEG quality for saving it)."""
    _, _, look, stream = SPLITS[split]
    rng = np.random.default_rng([seed, stream, index])
    skel = bodies.sample_skeletons(rng, 1)
    ells = bodies.body_ellipsoids(skel)
    camera = renderer.sample_cameras(rng, ells, image_size, max_tilt_deg=COCO_MAX_TILT_DEG)[0]
    scene = renderer.sample_scene(rng, look, ells.take(0))
    frame = renderer.render(skel, camera, scene)
    quality = int(rng.integers(70, 96))
    return frame, quality


def _write_coco_image(task: tuple) -> tuple[str, dict]:
    """Worker: render, save one image, return (file name, annotation)."""
    root, seed, split, index, image_size = task
    prefix, ext, _, _ = SPLITS[split]
    frame, quality = render_coco_sample(seed, split, index, image_size)
    name = f"{prefix}_{index:05d}{ext}"
    bgr = frame.rgb[..., ::-1]
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    if not cv2.imwrite(str(Path(root) / name), bgr, params):
        raise OSError(f"could not write {Path(root) / name}")
    return name, coco_annotation(frame)


def _coco_json(split: str, results: list[tuple[str, dict]], image_size: tuple[int, int]) -> dict:
    """Assemble a COCO keypoints file from per-image results (ids from 1, in index order)."""
    height, width = image_size
    synthetic = SPLITS[split][2] == "synthetic"
    images, annotations = [], []
    for i, (name, ann) in enumerate(results, start=1):
        images.append({"id": i, "file_name": name, "width": width, "height": height, "is_synthetic": synthetic})
        annotations.append({"id": i, "image_id": i, **ann})
    return {
        "info": {"description": f"hyper-sapiens-jax synthetic infant testbed, {split}", "version": str(FORMAT_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [COCO_CATEGORY],
    }


# ---------------------------------------------------------------------------------------------
# MINI-RGBD layout
# ---------------------------------------------------------------------------------------------
def render_sequence(seed: int, index: int, num_frames: int, image_size: tuple[int, int]):
    """Yield the frames of sequence ``index``: one supine infant moving smoothly, a fixed camera."""
    rng = np.random.default_rng([seed, _SEQUENCE_STREAM, index])
    skel = bodies.sample_motion(rng, num_frames, bodies.Posture.SUPINE)
    ells = bodies.body_ellipsoids(skel)
    # One camera that keeps the infant in view in every frame: fit it to all frames at once.
    flat = [x.reshape((1, -1) + x.shape[2:]) for x in (ells.centres, ells.axes, ells.radii)]  # (1, F*P, ...)
    all_frames = bodies.Ellipsoids(*flat, np.tile(ells.part, num_frames), np.tile(ells.person, num_frames))
    camera = renderer.sample_cameras(rng, all_frames, image_size, max_tilt_deg=MINI_RGBD_MAX_TILT_DEG)[0]
    scene = renderer.sample_scene(rng, "synthetic")
    for f in range(num_frames):
        yield renderer.render(skel.take([f]), camera, scene)


def _write_lines(path: Path, rows: np.ndarray) -> None:
    """25 rows of (a, b, c, joint_id) as 'a b c id' lines."""
    path.write_text("".join(f"{a:.6f} {b:.6f} {c:.6f} {j}\n" for j, (a, b, c) in enumerate(rows)))


def _write_sequence(task: tuple) -> int:
    """Worker: write one MINI-RGBD sequence folder; returns the number of frames."""
    folder, seed, index, num_frames, image_size = task
    folder = Path(folder)
    for sub in ("rgb", "depth", "fg_mask", "joints_2Ddep", "joints_3D"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    for f, frame in enumerate(render_sequence(seed, index, num_frames, image_size)):
        depth_mm = np.clip(np.rint(frame.scene_depth * 1000.0), 0, 65535).astype(np.uint16)
        ok = (
            cv2.imwrite(str(folder / "rgb" / f"syn_{f:05d}.png"), frame.rgb[..., ::-1], png)
            and cv2.imwrite(str(folder / "depth" / f"syn_{f:05d}_depth.png"), depth_mm, png)
            and cv2.imwrite(str(folder / "fg_mask" / f"mask_{f:05d}.png"), frame.mask.astype(np.uint8) * 255, png)
        )
        if not ok:
            raise OSError(f"could not write frame {f} of {folder}")
        uvd = np.concatenate([frame.joints_uv, frame.joints_cam[:, 2:] * 1000.0], axis=1)
        _write_lines(folder / "joints_2Ddep" / f"syn_joints_2Ddep_{f:05d}.txt", uvd)
        _write_lines(folder / "joints_3D" / f"syn_joints_3D_{f:05d}.txt", frame.joints_cam)
    return num_frames


# ---------------------------------------------------------------------------------------------
# Skeleton-only samples for the pose prior
# ---------------------------------------------------------------------------------------------
def sample_skeleton_keypoints(seed: int, num: int, image_size: tuple[int, int], chunk: int = 2000) -> np.ndarray:
    """COCO-17 projections (num, 17, 3) float32 = (x, y, visibility) of random infants and views.

    Visibility follows the renderer's rule (2 seen, 1 hidden by the body, 0 outside the image,
    then x = y = 0) but is computed by intersecting rays with the body analytically: no images.
    """
    rng = np.random.default_rng([seed, _SKELETON_STREAM])
    out = np.zeros((num, 17, 3), np.float32)
    for start in range(0, num, chunk):  # chunks bound the memory of the ray tests
        n = min(chunk, num - start)
        skel = bodies.sample_skeletons(rng, n)
        ells = bodies.body_ellipsoids(skel)
        cameras = renderer.sample_cameras(rng, ells, image_size, max_tilt_deg=COCO_MAX_TILT_DEG)
        points, burial = bodies.coco17_points(skel)
        points_cam = cameras.to_camera(points)
        ells_cam, cones_cam = renderer.to_camera_frame(ells, bodies.body_cones(skel), cameras)
        vis = renderer.ray_visibility(points_cam, burial, ells_cam, cones_cam, cameras)
        uv = np.where(vis[..., None] > 0, cameras.project(points_cam), 0.0)
        out[start : start + n] = np.concatenate([uv, vis[..., None]], axis=-1)
    return out


# ---------------------------------------------------------------------------------------------
# The writer
# ---------------------------------------------------------------------------------------------
def _run(tasks: list, worker, workers: int, desc: str = "testbed") -> list:
    """Map ``worker`` over ``tasks`` in order, in-process or in a spawn pool (safe next to JAX)."""
    if workers <= 1 or len(tasks) <= 1:
        return [worker(t) for t in progress(tasks, desc, len(tasks))]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks)), initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return list(progress(pool.imap(worker, tasks, chunksize=1), desc, len(tasks)))


def _default_workers(total_images: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if total_images < 64 else max(1, min(cores, 8))  # process start-up beats tiny sets


def _generate(root: Path, params: dict, workers: int) -> dict:
    """Write everything under ``root`` (except the manifest); return the counts."""
    size, seed = tuple(params["image_size"]), params["seed"]
    paths = Paths.under(root, params["num_sequences"])
    counts = {"train_syn": params["num_syn"], "train_real": params["num_real"], "validate": params["num_val"]}
    for _, folder in paths.coco_sets().values():
        folder.mkdir(parents=True)
    paths.train_syn_json.parent.mkdir(parents=True, exist_ok=True)
    # The long tasks (sequences, skeletons) go first so they do not trail at the end.
    tasks = [
        ("seq", (str(folder), seed, k, params["frames_per_sequence"], size)) for k, folder in enumerate(paths.sequences)
    ]
    tasks.append(("skeletons", (str(paths.skeletons), seed, params["num_skeletons"], size)))
    for split, (_, folder) in paths.coco_sets().items():
        tasks += [(split, (str(folder), seed, split, i, size)) for i in range(counts[split])]
    results = _run(tasks, _dispatch, workers, "infant testbed")
    for split, (json_path, _) in paths.coco_sets().items():
        split_results = [r for (kind, _), r in zip(tasks, results) if kind == split]
        text = json.dumps(_coco_json(split, split_results, size), separators=(",", ":"))
        json_path.write_text(text)
    return {
        **counts,
        "sequences": params["num_sequences"],
        "frames": params["num_sequences"] * params["frames_per_sequence"],
        "skeletons": params["num_skeletons"],
    }


def _write_skeletons(task: tuple) -> int:
    """Worker: write the skeleton-only keypoints file; returns the number of samples."""
    path, seed, num, image_size = task
    np.savez_compressed(path, keypoints=sample_skeleton_keypoints(seed, num, image_size))
    return num


def _dispatch(task: tuple):
    kind, args = task
    writers = {"seq": _write_sequence, "skeletons": _write_skeletons}
    return writers.get(kind, _write_coco_image)(args)


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST) -> dict | None:
    """The manifest ``name`` of a finished set in ``out_dir``, or None."""
    try:
        return json.loads((Path(out_dir) / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_cached(out: Path, manifest_name: str, params: dict, build, force: bool = False) -> None:
    """Make the generated set ``out`` described by ``params``, unless it is already there.

    A set is recognised by its manifest ``manifest_name`` (written last, so it marks a complete set):
    the same ``params`` again return at once; other ``params`` (or ``force``) rebuild it with
    ``build(folder) -> dict`` (the manifest's other entries) in a temporary sibling folder that
    replaces ``out`` only once complete. A non-empty ``out`` that holds no manifest is left alone.
    Processes that ask for the same set at once (the ranks of a multi-process job on one machine)
    take turns on a lock file beside it: one builds, the others then find its manifest.
    """
    manifest = read_manifest(out, manifest_name)
    if manifest is not None and manifest.get("params") == params and not force:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f".{out.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        try:
            manifest = read_manifest(out, manifest_name)
            if manifest is not None and manifest.get("params") == params and not force:
                return  # another process built it while we waited
            _build_and_swap(out, manifest_name, params, build, manifest)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_and_swap(out: Path, manifest_name: str, params: dict, build, manifest: dict | None) -> None:
    if out.exists() and manifest is None and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and holds no {manifest_name}: refusing to overwrite it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        start = time.perf_counter()
        entries = build(tmp)
        (tmp / manifest_name).write_text(
            json.dumps(
                {"params": params, **entries, "generation_seconds": round(time.perf_counter() - start, 2)}, indent=2
            )
        )
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_testbed(
    out_dir: str | os.PathLike,
    num_syn: int = 600,
    num_real: int = 200,
    num_val: int = 200,
    num_sequences: int = 2,
    frames_per_sequence: int = 100,
    num_skeletons: int = 10000,
    image_size: tuple[int, int] = (480, 640),
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
) -> Paths:
    """Write (or reuse) the synthetic infant testbed in ``out_dir`` and return its paths.

    image_size is (H, W); the MINI-RGBD intrinsics are scaled to it. ``workers`` processes
    (default: the available cores for big sets, 1 for tiny ones) never change the output.
    If ``out_dir`` already holds a testbed with the same parameters nothing is written; with
    other parameters (or ``force``) it is rebuilt in a temporary sibling folder that replaces
    it only once complete. A non-empty ``out_dir`` that is not a testbed is left alone (error).
    """
    params = {
        "format_version": FORMAT_VERSION,
        "num_syn": int(num_syn),
        "num_real": int(num_real),
        "num_val": int(num_val),
        "num_sequences": int(num_sequences),
        "frames_per_sequence": int(frames_per_sequence),
        "num_skeletons": int(num_skeletons),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "seed": int(seed),
    }
    paths = Paths.under(out_dir, num_sequences)
    if workers is None:
        workers = _default_workers(num_syn + num_real + num_val + num_sequences * frames_per_sequence)

    def build(folder: Path) -> dict:
        counts = _generate(folder, params, workers)
        fx, fy, cx, cy = renderer.intrinsics_for(tuple(image_size))
        return {
            "counts": counts,
            "intrinsics": {
                "fx": fx,
                "fy": fy,
                "cx": cx,
                "cy": cy,
                "height": params["image_size"][0],
                "width": params["image_size"][1],
            },
        }

    write_cached(Path(out_dir), MANIFEST, params, build, force)
    return paths


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hyper_sapiens_jax.testbed.writer",
        description=(
            "Render the synthetic infant testbed: SyRIP-style COCO keypoint sets "
            "(train_syn in a flat 'synthetic' look, train_real and validate in a textured "
            "'real' look), MINI-RGBD-style RGB-D sequences, and skeleton-only 2D poses for "
            "the diffusion pose prior. Deterministic for a given --seed; rerunning with the "
            "same options reuses the existing set."
        ),
        epilog=(
            "Layout: OUT/syrip/{annotations,images}/..., OUT/mini_rgbd/01/{rgb,depth,fg_mask,"
            "joints_2Ddep,joints_3D}/..., OUT/skeletons.npz, OUT/testbed.json. "
            "Example (tiny set): --out /tmp/tb --num-syn 20 --num-real 10 --num-val 10 "
            "--num-sequences 1 --frames-per-sequence 10 --num-skeletons 500"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (created; replaced only if it is a testbed)")
    parser.add_argument("--num-syn", type=int, default=600, help="synthetic-look COCO training images")
    parser.add_argument("--num-real", type=int, default=200, help="real-look COCO training images")
    parser.add_argument("--num-val", type=int, default=200, help="real-look COCO validation images")
    parser.add_argument("--num-sequences", type=int, default=2, help="MINI-RGBD-style sequences (01, 02, ...)")
    parser.add_argument("--frames-per-sequence", type=int, default=100, help="frames in each sequence")
    parser.add_argument("--num-skeletons", type=int, default=10000, help="skeleton-only 2D poses for the pose prior")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(480, 640),
        metavar=("H", "W"),
        help="image height and width (intrinsics scale with it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: available cores; never changes the output)",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``hyper-sapiens-testbed`` console script (``python -m hyper_sapiens_jax.testbed.writer``);
    ``--help`` lists the flags."""
    args = _parser().parse_args(argv)
    start = time.time()
    paths = write_testbed(
        args.out,
        num_syn=args.num_syn,
        num_real=args.num_real,
        num_val=args.num_val,
        num_sequences=args.num_sequences,
        frames_per_sequence=args.frames_per_sequence,
        num_skeletons=args.num_skeletons,
        image_size=tuple(args.image_size),
        seed=args.seed,
        workers=args.workers,
        force=args.force,
    )
    manifest = read_manifest(paths.root)
    for field in dataclasses.fields(paths):
        value = getattr(paths, field.name)
        shown = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        print(f"{field.name:18s} {shown}")
    print(f"{'counts':18s} {json.dumps(manifest['counts'])}")
    reused = paths.manifest.stat().st_mtime < start
    print(f"{'reused the existing set' if reused else 'generated'} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
