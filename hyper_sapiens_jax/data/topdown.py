"""Record -> model-ready sample: top-down crop, augmentation, targets (runs inside the Grain map).

Every sample has the same keys and shapes whatever its source (absent targets are zero-filled and
flagged), so batches from different sources concatenate. For input (H, W) and K keypoints:

  image (H, W, 3) uint8 RGB (normalised on the device)                 target_weight (K,) f32
  keypoints (K, 2) f32 crop pixels   keypoints_visible (K,) f32
  (the heatmaps (H/4, W/4, K) are rendered on the device from keypoints and target_weight,
  ``training.batch.complete_batch``; ``data.codec.encode_udp_heatmaps`` is their host reference)
  depth (H, W, 1) f32: person depth min-max normalised to [0, 1], -1 elsewhere
  normal (H/2, W/2, 3) f32: unit camera-frame normals, 0 where invalid
  has_pose, has_depth, has_normal, is_real, valid: f32 scalars (valid = 0 marks eval padding)
  center (2,), scale (2,), rotation, flipped: the crop, to map predictions back to the image
  intrinsics (3, 3) f32: camera matrix of the crop at (H, W) (rays for the geometry losses);
  has_intrinsics: 1 when the source is calibrated, 0 when ``default_intrinsics`` was assumed
  bbox (4,) f32 xywh, image_id, ann_id int32
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from hyper_sapiens_jax.data import codec, geometry
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import NUM_COCO_KEYPOINTS, flip_permutation

Sample = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """How records become samples. ``input_size`` is (H, W); sigma is at heatmap resolution."""

    input_size: tuple[int, int] = (1024, 768)
    heatmap_sigma: float = 6.0
    num_keypoints: int = NUM_COCO_KEYPOINTS
    focal_factor: float = 1.0  # focal / max(H, W) assumed for uncalibrated images
    geometry: T.GeometryAugParams = dataclasses.field(default_factory=T.GeometryAugParams)
    texture: T.TextureAugParams = dataclasses.field(default_factory=T.TextureAugParams)

    @property
    def input_wh(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[0]

    @property
    def heatmap_wh(self) -> tuple[int, int]:
        return self.input_size[1] // 4, self.input_size[0] // 4

    @property
    def normal_wh(self) -> tuple[int, int]:
        return self.input_size[1] // 2, self.input_size[0] // 2


def crop_camera(record: dict, crop: dict, cfg: SampleConfig) -> tuple[np.ndarray, np.float32]:
    """(intrinsics (3, 3) of the crop at the input size, has_intrinsics): the record's camera when it
    has one (1), else ``geometry.default_intrinsics`` of its image (0), through the crop's warp
    and flip."""
    img_h, img_w = np.asarray(record["image"]).shape[:2]
    k_image = record.get("intrinsics")
    k_crop = geometry.crop_intrinsics(
        k_image if k_image is not None else geometry.default_intrinsics(img_h, img_w, cfg.focal_factor),
        crop["warp_matrix"],
        bool(crop["flipped"]),
        img_w,
    )
    return k_crop, np.float32(k_image is not None)


def _targets(cfg: SampleConfig, record: dict, crop: dict, normal: np.ndarray | None) -> Sample:
    """Assemble the fixed-schema sample from a warped crop: the image stays RGB uint8 and the
    heatmaps are left to the device (``training.batch``), only their target weights are computed."""
    h, w = cfg.input_size
    weights = codec.udp_target_weights(
        crop["keypoints"],
        crop["keypoints_visible"],
        input_wh=cfg.input_wh,
        heatmap_wh=cfg.heatmap_wh,
        sigma=cfg.heatmap_sigma,
    )
    has = {k: np.float32(record.get(k, 0)) for k in ("has_pose", "has_depth", "has_normal")}
    k_crop, has_intrinsics = crop_camera(record, crop, cfg)
    if "depth" in crop:
        depth = geometry.relative_depth_target(crop["depth"], crop["depth"] > 0)[..., None]
    else:
        depth = np.full((h, w, 1), -1.0, np.float32)
    if normal is None:
        normal = np.zeros((h // 2, w // 2, 3), np.float32)
    return {
        "image": np.asarray(crop["image"], np.uint8),
        "target_weight": weights * has["has_pose"],
        "keypoints": crop["keypoints"].astype(np.float32),
        "keypoints_visible": crop["keypoints_visible"].astype(np.float32),
        "depth": depth.astype(np.float32, copy=False),
        "normal": normal.astype(np.float32, copy=False),
        **has,
        "is_real": np.float32(record["is_real"]),
        "valid": np.float32(1),
        "center": np.asarray(crop["center"], np.float32),
        "scale": np.asarray(crop["scale"], np.float32),
        "rotation": np.float32(crop["rotation"]),
        "flipped": np.float32(crop["flipped"]),
        "intrinsics": k_crop.astype(np.float32),
        "has_intrinsics": has_intrinsics,
        "bbox": np.asarray(record["bbox"], np.float32),
        "image_id": np.int32(record["image_id"]),
        "ann_id": np.int32(record["ann_id"]),
    }


def _crop_inputs(record: dict) -> dict[str, Any]:
    kpts = record["keypoints"]
    inputs = {
        "image": record["image"],
        "keypoints": kpts[:, :2],
        "keypoints_visible": (kpts[:, 2] > 0).astype(np.float32),
    }
    if "depth" in record:
        inputs["depth"] = record["depth"]
    return inputs


def _half_res_normal(cfg: SampleConfig, record: dict, crop: dict) -> np.ndarray | None:
    """Warp the normal map straight to the normal head's resolution (H/2, W/2)."""
    if "normal" not in record:
        return None
    normal = T.flip_normals(record["normal"]) if crop["flipped"] else record["normal"]
    matrix = T.get_udp_warp_matrix(crop["center"], crop["scale"], crop["rotation"], cfg.normal_wh)
    return T.warp_normals(normal, matrix, cfg.normal_wh, crop["rotation"])


def train_sample(record: dict, rng: np.random.Generator, cfg: SampleConfig) -> Sample:
    """Random top-down crop (flip, half-body, shift/scale/rotate), texture randomisation, targets."""
    flip_idx = flip_permutation(cfg.num_keypoints)
    crop = T.random_topdown_crop(
        record["bbox"], rng, cfg.geometry, input_wh=cfg.input_wh, flip_indices=flip_idx, **_crop_inputs(record)
    )
    crop["image"] = T.random_texture(crop["image"], rng, cfg.texture)
    return _targets(cfg, record, crop, _half_res_normal(cfg, record, crop))


def eval_sample(record: dict, cfg: SampleConfig) -> Sample:
    """Deterministic padded box crop (no augmentation), targets."""
    crop = T.topdown_crop(
        record["bbox"], input_wh=cfg.input_wh, padding=cfg.geometry.bbox_padding, **_crop_inputs(record)
    )
    return _targets(cfg, record, crop, _half_res_normal(cfg, record, crop))


class TrainTransform(grain.transforms.RandomMap):
    """Grain random map wrapping ``train_sample``."""

    def __init__(self, cfg: SampleConfig):
        self.cfg = cfg

    def random_map(self, element: dict, rng: np.random.Generator) -> Sample:
        return train_sample(element, rng, self.cfg)


class EvalTransform(grain.transforms.Map):
    """Grain map wrapping ``eval_sample``."""

    def __init__(self, cfg: SampleConfig):
        self.cfg = cfg

    def map(self, element: dict) -> Sample:
        return eval_sample(element, self.cfg)
