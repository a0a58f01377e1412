"""The human corpus: the testbed's "Humans-300M", on which the testbed foundation is pretrained.

Real Sapiens is MAE-pretrained on ~300M in-the-wild human images, then fine-tuned on COCO pose and
RenderPeople depth / normals, and knows adults far better than infants. This corpus holds the same
gap to the infant testbed (``writer.py``):

  * mostly adults (``HUMAN_KINDS``), some children, no infants;
  * mostly upright (standing, walking, active, on a seat), some lying or sitting on the floor;
  * one to four people per image, the camera at about eye height looking level or a little down;
  * floors of many materials, procedural backdrops (walls, windows, sky), any light direction and
    colour, blur and sensor noise; never the infant testbed's mats, blankets and toys;
  * pose (COCO-17 with visibility, other people hide joints too), depth and normal labels.

Image ``i`` of a split is a pure function of (seed, split, i) (``render_sample``), so the corpus
can be rendered on the fly inside Grain workers (``HumansSource(on_the_fly=...)``) or, as the jobs
do, cached once: ``write_humans`` writes numpy memmaps (train) or a COCO keypoint set (val, scored
with OKS AP) and a manifest; the same parameters again reuse the cache.

Each record is the person with the largest visible area in its image (the others are distractors):
``image`` (H, W, 3) uint8, ``keypoints`` (17, 3), ``bbox`` xywh, ``depth`` (H, W) metres on that
person (-1 elsewhere), ``normal`` (H, W, 3), ``intrinsics`` (3, 3), task flags.

CLI: ``python -m hyper_sapiens_jax.testbed.humans --out DIR --num 2000`` (``--help``).
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from hyper_sapiens_jax.data import geometry
from hyper_sapiens_jax.testbed import bodies, renderer
from hyper_sapiens_jax.testbed.bodies import Part, Posture, Skeletons
from hyper_sapiens_jax.testbed.renderer import Camera, Ellipsoids, Pattern, Scene
from hyper_sapiens_jax.testbed.writer import COCO_CATEGORY, _run, write_cached

FORMAT_VERSION = 1
MANIFEST = "humans.json"
SPLIT_STREAMS = {"train": 10, "val": 11}  # seed streams, apart from the infant testbed's (0-4)
HUMAN_KINDS = {"adult": 0.8, "child": 0.2}
POSTURES = {
    Posture.STANDING: 0.32,
    Posture.WALKING: 0.2,
    Posture.ACTIVE: 0.16,
    Posture.CHAIR: 0.12,
    Posture.SITTING: 0.06,
    Posture.SUPINE: 0.06,
    Posture.PRONE: 0.03,
    Posture.SIDE_LEFT: 0.025,
    Posture.SIDE_RIGHT: 0.025,
}
PEOPLE_PER_IMAGE = {1: 0.55, 2: 0.25, 3: 0.15, 4: 0.05}
_LYING = (Posture.SUPINE, Posture.PRONE, Posture.SIDE_LEFT, Posture.SIDE_RIGHT, Posture.SITTING)


@dataclasses.dataclass(frozen=True)
class Views:
    """How the corpus frames and turns its people (the foundation ladder's corpus levers).

    The defaults are the corpus as first built: the camera fits the whole group, rolls at most 8
    degrees, looks level or a little down (steeply when everyone lies), 20% of people lie or sit on
    the floor.

    Attributes:
      framing: 'group' (the camera fits everyone) or 'person' (it fits the first person, who then
        fills the frame as in Sapiens' human-centric crops; the others may be cut off).
      roll_deg: camera roll drawn from +-roll_deg (180: any image rotation).
      top_down: the share of images seen from above (pitch 65-90 degrees), whatever the postures.
      lying_share: the share of lying / floor-sitting postures (0: the table in ``POSTURES``).
    """

    framing: str = "group"
    roll_deg: float = 8.0
    top_down: float = 0.0
    lying_share: float = 0.0

    def __post_init__(self):
        if self.framing not in ("group", "person"):
            raise ValueError(f"views.framing must be 'group' or 'person', got {self.framing!r}")
        if not 0 <= self.roll_deg <= 180:
            raise ValueError(f"views.roll_deg must be in [0, 180], got {self.roll_deg}")
        for name in ("top_down", "lying_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"views.{name} must be in [0, 1], got {getattr(self, name)}")

    def postures(self) -> dict:
        """The posture table, with the lying postures rescaled to ``lying_share`` when it is set."""
        if not self.lying_share:
            return POSTURES
        lying = sum(p for k, p in POSTURES.items() if k in _LYING)
        return {
            k: p * (self.lying_share / lying if k in _LYING else (1 - self.lying_share) / (1 - lying))
            for k, p in POSTURES.items()
        }

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


DEFAULT_VIEWS = Views()


# ---------------------------------------------------------------------------------------------
# People
# ---------------------------------------------------------------------------------------------
def _choice(rng: np.random.Generator, table: dict):
    keys = list(table)
    return keys[rng.choice(len(keys), p=np.asarray(list(table.values())) / sum(table.values()))]


def concat_skeletons(skels: list[Skeletons]) -> Skeletons:
    """Skeletons of several batches as one batch (people of one image)."""
    shape = bodies.InfantShape(
        *(np.concatenate([getattr(s.shape, f.name) for s in skels]) for f in dataclasses.fields(bodies.InfantShape))
    )
    return Skeletons(
        *(np.concatenate([getattr(s, f) for s in skels]) for f in ("joints", "frames", "angles", "posture")), shape
    )


def sample_people(rng: np.random.Generator, count: int, postures: dict = POSTURES) -> Skeletons:
    """``count`` adults / children in random postures, standing apart on the floor (Z = 0)."""
    people, placed = [], []
    for _ in range(count):
        kind, posture = _choice(rng, HUMAN_KINDS), _choice(rng, postures)
        shape = bodies.sample_shapes(rng, 1, kind)
        skel = bodies.sample_skeletons(rng, 1, int(posture), shape)
        spacing = 0.55 * (shape.body_length[0] if posture in _LYING else 0.5)
        for _ in range(50):  # keep people ~ a body width apart
            xy = rng.uniform(-1.0, 1.0, 2) * (0.9 * len(placed) ** 0.5 + 0.01)
            if all(np.linalg.norm(xy - q) > spacing + r for q, r in placed):
                break
        placed.append((xy, spacing))
        centre = skel.joints[0, 0, :2]
        shift = np.array([xy[0] - centre[0], xy[1] - centre[1], 0.0])
        people.append(dataclasses.replace(skel, joints=skel.joints + shift))
    return concat_skeletons(people)


def seat_props(skel: Skeletons) -> Ellipsoids | None:
    """A pouf under everyone sitting on a seat (``Posture.CHAIR``), so they do not float."""
    centres, radii = [], []
    for k in np.nonzero(skel.posture == Posture.CHAIR)[0]:
        pelvis = skel.joints[k, 0]
        top = max(pelvis[2] - 0.07 * float(skel.shape.trunk_scale[k]), 0.05)
        centres.append([pelvis[0], pelvis[1], top / 2])
        radii.append([0.2, 0.2, top / 2])
    if not centres:
        return None
    n = len(centres)
    return Ellipsoids(
        np.array(centres), np.tile(np.eye(3), (n, 1, 1)), np.array(radii), np.full(n, -1, np.int32), np.zeros(n, bool)
    )


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------
def look_at(forward: np.ndarray, roll: float) -> np.ndarray:
    """World -> camera rotation (3, 3) looking along ``forward`` (3,) with world Z up in the image,
    rolled by ``roll`` radians (OpenCV frame: x right, y down, z forward)."""
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * right + s * down, -s * right + c * down, forward])


def sample_camera(
    rng: np.random.Generator, people: Ellipsoids, image_size: tuple[int, int], lying: bool, views: Views = DEFAULT_VIEWS
) -> Camera:
    """A camera at a random heading that looks level or a little down at ``people`` (more steeply
    when everyone lies on the floor; from above for ``views.top_down`` of the images), rolled by up
    to ``views.roll_deg``, backed off until all of ``people`` is in view."""
    if views.top_down and rng.uniform() < views.top_down:
        pitch = np.deg2rad(rng.uniform(65, 89))
    else:
        pitch = np.deg2rad(rng.uniform(25, 65) if lying else rng.uniform(-5, 30))
    azimuth = rng.uniform(0, 2 * np.pi)
    forward = np.array([np.cos(pitch) * np.cos(azimuth), np.cos(pitch) * np.sin(azimuth), -np.sin(pitch)])
    rotation = look_at(forward, np.deg2rad(rng.uniform(-views.roll_deg, views.roll_deg)))
    lo, hi = people.centres.min(0), people.centres.max(0)
    target = (lo + hi) / 2
    return renderer.fit_camera(
        rotation[None],
        forward[None],
        target[None],
        np.array([float(np.linalg.norm(hi - lo)) * rng.uniform(0.6, 1.0)]),
        dataclasses.replace(people, centres=people.centres[None], axes=people.axes[None], radii=people.radii[None]),
        image_size,
        margin=0.03,
    )[0]


# ---------------------------------------------------------------------------------------------
# Appearance
# ---------------------------------------------------------------------------------------------
_TOP = (Part.CHEST, Part.BELLY, Part.PELVIS)
_SLEEVES = ((), (Part.UPPER_ARM,), (Part.UPPER_ARM, Part.FOREARM))
_LEGS = ((Part.THIGH,), (Part.THIGH, Part.SHIN), (Part.THIGH, Part.SHIN, Part.FOOT))  # shorts .. trousers


def _colour(rng, sat=(0.2, 0.85), val=(0.15, 0.95)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def _pattern(rng, period=(0.01, 0.08), kinds=(0, 0, 1, 2, 3, 4)) -> Pattern:
    return Pattern(
        _colour(rng), _colour(rng), int(rng.choice(kinds)), float(rng.uniform(*period)), float(rng.uniform(0, np.pi))
    )


def sample_outfit(rng: np.random.Generator, scene: Scene) -> Scene:
    """``scene`` dressing one person: skin, hair, top, sleeves, trousers / shorts and shoes."""
    skin = renderer.SKIN_TONES[rng.integers(len(renderer.SKIN_TONES))]
    skin = np.clip(skin * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02, 3), 0, 1)
    colours = np.tile(skin, (renderer.NUM_PARTS, 1))
    colours[Part.EYE] = (0.1, 0.08, 0.07)
    clothed = np.zeros(renderer.NUM_PARTS, bool)
    sleeves = _SLEEVES[rng.integers(0, 3)]
    if rng.uniform() >= 0.8:
        sleeves = ()
    for part in _TOP + sleeves + _LEGS[rng.integers(3)]:
        clothed[part] = True
    clothes = _pattern(rng)
    colours[clothed] = clothes.colour
    if rng.uniform() < 0.6:
        colours[Part.FOOT] = _colour(rng, (0.0, 0.5), (0.05, 0.6))  # shoes
        clothed[Part.FOOT] = False
    hair = renderer.HAIR_COLOURS[rng.integers(len(renderer.HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
    return dataclasses.replace(
        scene,
        part_colour=colours,
        clothed=clothed,
        clothes=clothes,
        hair_colour=np.clip(hair, 0, 1) if rng.uniform() < 0.85 else None,
    )


def sample_scene(rng: np.random.Generator, props: Ellipsoids | None) -> Scene:
    """Floor, light and camera effects of one image (no mats, blankets or toys)."""
    elevation, azimuth = np.deg2rad(rng.uniform(15, 85)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    warm = rng.uniform(-0.15, 0.15)
    floor = _pattern(rng, (0.05, 0.6), kinds=(0, 1, 2, 3))
    placeholder = Pattern(np.zeros(3), np.zeros(3))
    n_props = 0 if props is None else len(props.part)
    return Scene(
        "real",
        np.zeros((renderer.NUM_PARTS, 3)),
        np.zeros(renderer.NUM_PARTS, bool),
        placeholder,
        background=floor,
        mat=floor,
        mat_half_size=np.zeros(2),  # no mat: the floor everywhere
        toys=props,
        toy_colour=np.array([_colour(rng) for _ in range(n_props)]).reshape(n_props, 3),
        light_dir=light,
        ambient=float(rng.uniform(0.2, 0.7)),
        light_colour=np.array([1 + warm, 1.0, 1 - warm]),
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.3, 1.8)])),
        noise_sigma=float(rng.uniform(0.5, 9.0)),
        gain=rng.uniform(0.75, 1.15, 3),
        vignette=float(rng.uniform(0.0, 0.4)),
        noise_seed=int(rng.integers(2**31)),
        fabric=renderer._value_noise(rng),
    )


def sample_backdrop(rng: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """A float32 (H, W, 3) backdrop in [0, 1]: a wall or sky gradient with texture, windows, doors,
    furniture blocks and stripes, drawn behind everything the floor does not cover."""
    h, w = image_size
    top, bottom = _colour(rng, (0.0, 0.6), (0.3, 1.0)), _colour(rng, (0.0, 0.6), (0.2, 0.9))
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    image = (1 - t) * top.astype(np.float32) + t * bottom.astype(np.float32)
    image = np.broadcast_to(image, (h, w, 3)).copy()
    noise = cv2.resize(renderer._value_noise(rng, 64), (w, h), interpolation=cv2.INTER_LINEAR)
    image *= (1 + rng.uniform(0.05, 0.35) * noise)[..., None]
    if rng.uniform() < 0.4:  # stripes / bricks / planks
        period, angle = rng.uniform(4, 30), rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        image *= (1 - rng.uniform(0.05, 0.3) * stripes)[..., None]
    for _ in range(rng.integers(0, 7)):  # windows, doors, shelves, pictures, bushes
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        bw, bh = rng.integers(w // 12 + 1, w // 2 + 2), rng.integers(h // 12 + 1, h // 2 + 2)
        colour = tuple(float(c) for c in _colour(rng, (0.0, 0.9), (0.05, 1.0)))
        if rng.uniform() < 0.7:
            cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + bw), int(y0 + bh)), colour, -1)
        else:
            cv2.ellipse(
                image, (int(x0), int(y0)), (int(bw // 2), int(bh // 2)), float(rng.uniform(0, 180)), 0, 360, colour, -1
            )
    return np.clip(cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.5)), 0, 1)


# ---------------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------------
def render_sample(
    seed: int, split: str, index: int, image_size: tuple[int, int], views: Views = DEFAULT_VIEWS
) -> tuple[renderer.GroupFrame, int]:
    """Image ``index`` of ``split``: (its GroupFrame, the labelled person: the most visible one)."""
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], index])
    count = _choice(rng, PEOPLE_PER_IMAGE)
    people = sample_people(rng, count, views.postures())
    props = seat_props(people)
    ells = bodies.body_ellipsoids(people)
    flat = Ellipsoids(
        ells.centres.reshape(-1, 3),
        ells.axes.reshape(-1, 3, 3),
        ells.radii.reshape(-1, 3),
        np.tile(ells.part, count),
        np.ones(ells.part.size * count, bool),
    )
    if views.framing == "group":
        framed = flat
    else:  # the first person's primitives alone
        framed = Ellipsoids(ells.centres[0], ells.axes[0], ells.radii[0], ells.part, np.ones(ells.part.size, bool))
    camera = sample_camera(rng, framed, image_size, bool(np.isin(people.posture, _LYING).all()), views)
    scene = sample_scene(rng, props)
    outfits = [sample_outfit(rng, scene) for _ in range(count)]
    backdrop = sample_backdrop(rng, image_size)
    wall = rng.uniform(3.0, 12.0)  # the floor ends where the backdrop begins

    def paint_backdrop(image, info):
        far = ~np.isfinite(info["zbuffer"]) & ~(info["ground_depth"] < wall)
        lit = scene.ambient + (1 - scene.ambient) * rng.uniform(0.3, 1.0)
        return np.where(far[..., None], backdrop * np.float32(lit), image)

    frame = renderer.render_group(people, camera, scene, outfits, image_filter=paint_backdrop)
    areas = np.bincount(frame.owner[frame.owner >= 0], minlength=count)
    return frame, int(np.argmax(areas))


def person_record(frame: renderer.GroupFrame, person: int, camera_k: np.ndarray, image_id: int) -> dict:
    """The top-down record of one person of a rendered image (fields as ``MiniRgbdSource``'s)."""
    vis = frame.coco_visibility[person].astype(np.float32)
    uv = np.where(vis[:, None] > 0, frame.coco_uv[person], 0.0).astype(np.float32)
    mask = frame.owner == person
    bbox = _bbox(uv[vis > 0], mask)
    return {
        "image": frame.rgb,
        "keypoints": np.concatenate([uv, vis[:, None]], 1),
        "bbox": bbox,
        "image_id": np.int64(image_id),
        "ann_id": np.int64(image_id),
        "depth": np.where(mask, frame.depth, -1.0).astype(np.float32),
        "normal": np.where(mask[..., None], frame.normals, 0.0).astype(np.float32),
        "intrinsics": camera_k.astype(np.float32),
        "is_real": np.float32(1),
        "has_pose": np.float32(1),
        "has_depth": np.float32(1),
        "has_normal": np.float32(1),
    }


def _bbox(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    xs = np.concatenate([cols.astype(np.float64), points[:, 0]])
    ys = np.concatenate([rows.astype(np.float64), points[:, 1]])
    if xs.size == 0:
        return np.zeros(4, np.float32)
    x0, y0 = np.floor(xs.min()), np.floor(ys.min())
    return np.array([x0, y0, np.ceil(xs.max() + 1) - x0, np.ceil(ys.max() + 1) - y0], np.float32)


def intrinsics(image_size: tuple[int, int]) -> np.ndarray:
    return geometry.intrinsics_matrix(*renderer.intrinsics_for(tuple(image_size)))


def sample_record(seed: int, split: str, index: int, image_size: tuple[int, int], views: Views = DEFAULT_VIEWS) -> dict:
    """The record of image ``index`` of ``split``, rendered now (deterministic)."""
    frame, person = render_sample(seed, split, index, image_size, views)
    return person_record(frame, person, intrinsics(image_size), index)


# ---------------------------------------------------------------------------------------------
# The cache on disk
# ---------------------------------------------------------------------------------------------
_ARRAYS = {  # name -> (per-sample shape given (H, W), dtype)
    "images": (lambda h, w: (h, w, 3), np.uint8),
    "keypoints": (lambda h, w: (17, 3), np.float32),
    "bbox": (lambda h, w: (4,), np.float32),
    "depth": (lambda h, w: (h, w), np.float16),  # metres on the person, -1 elsewhere
    "normal": (lambda h, w: (h, w, 3), np.int8),  # x 127
}


def _write_chunk(task: tuple) -> int:
    """Worker: render samples [start, stop) of the train split into the open memmaps."""
    root, seed, start, stop, size, views = task
    arrays = {k: np.load(Path(root) / f"{k}.npy", mmap_mode="r+") for k in _ARRAYS}
    for i in range(start, stop):
        r = sample_record(seed, "train", i, size, views)
        arrays["images"][i] = r["image"]
        arrays["keypoints"][i] = r["keypoints"]
        arrays["bbox"][i] = r["bbox"]
        arrays["depth"][i] = r["depth"].astype(np.float16)
        arrays["normal"][i] = np.round(r["normal"] * 127).astype(np.int8)
    for a in arrays.values():
        a.flush()
    return stop - start


def _write_coco_chunk(task: tuple) -> list[dict]:
    """Worker: render val samples [start, stop) as JPEG files; return their COCO entries."""
    root, seed, start, stop, size, views = task
    out = []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, 99, i])
        r = sample_record(seed, "val", i, size, views)
        name = f"human_{i:05d}.jpg"
        if not cv2.imwrite(
            str(Path(root) / "images" / name),
            r["image"][..., ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))],
        ):
            raise OSError(f"could not write {Path(root) / 'images' / name}")
        kp = r["keypoints"]
        out.append(
            {
                "file_name": name,
                "keypoints": [float(v) if j % 3 < 2 else int(v) for j, v in enumerate(kp.ravel())],
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": [float(v) for v in r["bbox"]],
                "area": float((r["depth"] > 0).sum()),
            }
        )
    return out


@dataclasses.dataclass(frozen=True)
class HumansPaths:
    """A written corpus: the train memmaps folder and the val COCO set."""

    root: Path

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def val_json(self) -> Path:
        return self.root / "val" / "person_keypoints_val.json"

    @property
    def val_images(self) -> Path:
        return self.root / "val" / "images"


def write_humans(
    out_dir: str | os.PathLike,
    num_train: int = 20000,
    num_val: int = 300,
    image_size: tuple[int, int] = (160, 128),
    seed: int = 0,
    workers: int | None = None,
    force: bool = False,
    views: Views = DEFAULT_VIEWS,
) -> HumansPaths:
    """Write (or reuse) the human corpus in ``out_dir``; returns its paths.

    ``image_size`` is (H, W); ``views`` frames and turns the people (``Views``). The same parameters
    again return at once; other parameters (or ``force``) rebuild it in a temporary sibling folder
    that replaces the old one when complete.
    ``workers`` processes (default: the available cores) never change the output.
    """
    params = {
        "format_version": FORMAT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "seed": int(seed),
        "views": views.to_json(),
    }
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = 1 if num_train + num_val < 64 else max(1, min(cores, 8))
    h, w = params["image_size"]

    def build(folder: Path) -> dict:
        paths = HumansPaths(folder)
        paths.train.mkdir()
        paths.val_images.mkdir(parents=True)
        for name, (shape, dtype) in _ARRAYS.items():
            np.lib.format.open_memmap(
                paths.train / f"{name}.npy", mode="w+", dtype=dtype, shape=(num_train,) + shape(h, w)
            ).flush()
        chunk = 64
        tasks = [
            ("train", (str(paths.train), seed, s, min(s + chunk, num_train), (h, w), views))
            for s in range(0, num_train, chunk)
        ]
        tasks += [
            ("val", (str(paths.val_json.parent), seed, s, min(s + chunk, num_val), (h, w), views))
            for s in range(0, num_val, chunk)
        ]
        results = _run(tasks, _dispatch, workers, "humans corpus")
        entries = [e for (kind, _), r in zip(tasks, results) if kind == "val" for e in r]
        coco = {
            "info": {"description": "hyper-sapiens-jax human corpus, val", "version": str(FORMAT_VERSION)},
            "images": [
                {"id": i + 1, "file_name": e["file_name"], "width": w, "height": h} for i, e in enumerate(entries)
            ],
            "annotations": [
                {
                    "id": i + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    **{k: e[k] for k in ("keypoints", "num_keypoints", "bbox", "area")},
                }
                for i, e in enumerate(entries)
            ],
            "categories": [COCO_CATEGORY],
        }
        paths.val_json.write_text(json.dumps(coco, separators=(",", ":")))
        fx, fy, cx, cy = renderer.intrinsics_for((h, w))
        return {"intrinsics": {"fx": fx, "fy": fy, "cx": cx, "cy": cy}}

    out = Path(out_dir)
    write_cached(out, MANIFEST, params, build, force)
    return HumansPaths(out)


def _dispatch(task: tuple):
    kind, args = task
    return (_write_chunk if kind == "train" else _write_coco_chunk)(args)


class HumansSource:
    """The train split as a Grain random-access source of person records (see the module doc).

    ``HumansSource(root)`` reads a corpus written by ``write_humans``; ``HumansSource.on_the_fly(
    num, image_size, seed)`` renders each record when asked (the same records, no cache).
    """

    dense_targets = ("depth", "normal")  # the dense targets its records carry (training.batch)

    def __init__(self, root: str | os.PathLike | None = None, *, _render: tuple | None = None):
        self.name = "humans"
        self.skipped: list = []
        if _render is not None:
            self._num, self._size, self._seed, self._views = _render
            self._arrays = None
        else:
            root = Path(root)
            try:
                manifest = json.loads((root.parent / MANIFEST).read_text())
            except (FileNotFoundError, json.JSONDecodeError) as e:
                raise FileNotFoundError(f"{root.parent}: not a human corpus (no readable {MANIFEST}): {e}") from None
            self._size = tuple(manifest["params"]["image_size"])
            self._arrays = {k: np.load(root / f"{k}.npy", mmap_mode="r") for k in _ARRAYS}
            self._num = len(self._arrays["images"])
        self._k = intrinsics(self._size)

    @classmethod
    def on_the_fly(
        cls, num: int, image_size: tuple[int, int] = (160, 128), seed: int = 0, views: Views = DEFAULT_VIEWS
    ) -> HumansSource:
        return cls(_render=(int(num), tuple(image_size), int(seed), views))

    def __len__(self) -> int:
        return self._num

    def __getitem__(self, index: int) -> dict:
        index = int(index) % self._num
        if self._arrays is None:
            return sample_record(self._seed, "train", index, self._size, self._views)
        a = self._arrays
        return {
            "image": np.asarray(a["images"][index]),
            "keypoints": np.asarray(a["keypoints"][index]),
            "bbox": np.asarray(a["bbox"][index]),
            "image_id": np.int64(index),
            "ann_id": np.int64(index),
            "depth": np.asarray(a["depth"][index], np.float32),
            "normal": np.asarray(a["normal"][index], np.float32) / 127.0,
            "intrinsics": self._k.astype(np.float32),
            "is_real": np.float32(1),
            "has_pose": np.float32(1),
            "has_depth": np.float32(1),
            "has_normal": np.float32(1),
        }

    def __repr__(self) -> str:
        return f"HumansSource({self._num} images at {self._size[0]}x{self._size[1]})"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hyper_sapiens_jax.testbed.humans",
        description="Render the human corpus (adults and children, mostly upright, 1-4 per image, with pose, "
        "depth and normal labels): the testbed foundation's pretraining data.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output folder (created; replaced only if it is a corpus)")
    parser.add_argument("--num", type=int, default=20000, help="training images")
    parser.add_argument("--num-val", type=int, default=300, help="validation images (a COCO keypoint set)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(160, 128), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (never changes the output)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching corpus exists")
    v = DEFAULT_VIEWS
    parser.add_argument("--framing", choices=("group", "person"), default=v.framing, help="what the camera fits")
    parser.add_argument("--roll-deg", type=float, default=v.roll_deg, help="camera roll range (180: any rotation)")
    parser.add_argument("--top-down", type=float, default=v.top_down, help="share of images seen from above")
    parser.add_argument("--lying-share", type=float, default=v.lying_share, help="share lying (0: the default table)")
    args = parser.parse_args(argv)
    start = time.time()
    views = Views(args.framing, args.roll_deg, args.top_down, args.lying_share)
    paths = write_humans(
        args.out, args.num, args.num_val, tuple(args.image_size), args.seed, args.workers, args.force, views
    )
    print(f"train {paths.train}\nval   {paths.val_json}\n{time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
