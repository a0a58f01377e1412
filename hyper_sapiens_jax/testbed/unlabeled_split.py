"""The testbed's unlabelled split: "real"-look infant images with person boxes and no keypoints.

The unlabelled images of semi-supervised training (``data.unlabeled.UnlabeledSource``) in the
testbed: infants rendered as the testbed's ``train_real`` / ``validate`` splits are (``writer.py``:
textures, clutter, light, noise, JPEG), from a seed stream of their own (``UNLABELED_STREAM``; the
infant testbed uses 0-4, the human corpus 10-11), so no image repeats a validation image. Each
image's box is the rendered infant's tight box (its visible pixels), as a person detector would give::

    OUT/
      unlabeled.json          manifest: parameters, count (written last)
      images/unl_NNNNN.jpg    "real" look
      boxes.json              a COCO image list with one person box per image (category 1,
                              score 1, no keypoints): ``UnlabeledSource(images, boxes)`` reads it

Cached by its parameters with its own manifest (``writer.write_cached``): the same parameters
again return at once, other ones rebuild it in a temporary folder that replaces it when complete.
The jobs write it (``jobs/inputs.py``) at ``config.data.testbed_dir / "unlabeled"``, after the infant testbed there
(a testbed that is rebuilt drops it; it is then rendered again). Its manifest is not the testbed's
``testbed.json``, which it never touches.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
from pathlib import Path

import cv2
import numpy as np

from hyper_sapiens_jax.testbed import bodies, renderer
from hyper_sapiens_jax.testbed.writer import COCO_MAX_TILT_DEG, _default_workers, _run, write_cached, write_testbed

FORMAT_VERSION = 1
MANIFEST = "unlabeled.json"
UNLABELED_STREAM = 20  # seed stream, apart from the infant testbed's (0-4) and the human corpus' (10-11)
# The infant testbed's image size (H, W) (``write_testbed``'s default: config.data.testbed sets none).
DEFAULT_IMAGE_SIZE: tuple[int, int] = tuple(inspect.signature(write_testbed).parameters["image_size"].default)
PERSON = {"id": 1, "name": "person", "supercategory": "person"}


@dataclasses.dataclass(frozen=True)
class UnlabeledPaths:
    """A written unlabelled split: its folder, images folder, boxes file (a COCO image list with
    boxes), manifest and number of images."""

    root: Path
    images: Path
    boxes: Path
    manifest: Path
    count: int

    @classmethod
    def under(cls, root: str | os.PathLike, count: int) -> UnlabeledPaths:
        root = Path(root)
        return cls(root, root / "images", root / "boxes.json", root / MANIFEST, int(count))


def render_unlabeled_sample(seed: int, index: int, image_size: tuple[int, int]) -> tuple[renderer.Frame, int]:
    """Image ``index`` (H, W = ``image_size``): (its renderer.Frame, the JPEG quality to save it at).

    ``writer.render_coco_sample`` for a "real"-look split, drawn from ``UNLABELED_STREAM``.
    """
    rng = np.random.default_rng([seed, UNLABELED_STREAM, index])
    skel = bodies.sample_skeletons(rng, 1)
    ells = bodies.body_ellipsoids(skel)
    camera = renderer.sample_cameras(rng, ells, tuple(image_size), max_tilt_deg=COCO_MAX_TILT_DEG)[0]
    scene = renderer.sample_scene(rng, "real", ells.take(0))
    frame = renderer.render(skel, camera, scene)
    return frame, int(rng.integers(70, 96))


def detector_box(mask: np.ndarray) -> list[int]:
    """The tight [x, y, w, h] box (whole pixels) of a person mask (H, W); the whole image when empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return [0, 0, int(mask.shape[1]), int(mask.shape[0])]
    x0, y0 = int(cols.min()), int(rows.min())
    return [x0, y0, int(cols.max()) + 1 - x0, int(rows.max()) + 1 - y0]


def _write_image(task: tuple) -> tuple[str, list[int], int]:
    """Worker: render and save one image; returns (file name, box, visible person pixels)."""
    folder, seed, index, image_size = task
    frame, quality = render_unlabeled_sample(seed, index, image_size)
    name = f"unl_{index:05d}.jpg"
    if not cv2.imwrite(str(Path(folder) / name), frame.rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise OSError(f"could not write {Path(folder) / name}")
    return name, detector_box(frame.mask), int(frame.mask.sum())


def write_unlabeled(
    out_dir: str | os.PathLike,
    *,
    num_images: int,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    workers: int | None = None,
    force: bool = False,
) -> UnlabeledPaths:
    """Write (or reuse) ``num_images`` unlabelled "real"-look images and their boxes in ``out_dir``.

    ``image_size`` is (H, W). The same parameters again return at once; other ones (or ``force``)
    rebuild the set in a temporary sibling folder that replaces it once complete. ``workers``
    processes (default: the available cores for big sets, 1 for small ones) never change the output.
    Returns its ``UnlabeledPaths``.
    """
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    height, width = (int(v) for v in image_size)
    params = {
        "format_version": FORMAT_VERSION,
        "num_images": int(num_images),
        "image_size": [height, width],
        "seed": int(seed),
        "stream": UNLABELED_STREAM,
    }
    if workers is None:
        workers = _default_workers(num_images)

    def build(folder: Path) -> dict:
        paths = UnlabeledPaths.under(folder, num_images)
        paths.images.mkdir()
        tasks = [(str(paths.images), int(seed), i, (height, width)) for i in range(num_images)]
        results = _run(tasks, _write_image, workers, "unlabelled testbed")
        coco = {
            "info": {"description": "hyper-sapiens-jax infant testbed, unlabelled", "version": str(FORMAT_VERSION)},
            "images": [
                {"id": i, "file_name": name, "width": width, "height": height}
                for i, (name, _, _) in enumerate(results, start=1)
            ],
            "annotations": [
                {"id": i, "image_id": i, "category_id": 1, "bbox": box, "area": area, "score": 1.0, "iscrowd": 0}
                for i, (_, box, area) in enumerate(results, start=1)
            ],
            "categories": [PERSON],
        }
        paths.boxes.write_text(json.dumps(coco, separators=(",", ":")))
        return {"count": num_images}

    write_cached(Path(out_dir), MANIFEST, params, build, force)
    return UnlabeledPaths.under(out_dir, num_images)
