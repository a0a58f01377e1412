"""Drawing helpers: crops with keypoints and skeleton, depth and normal maps, sample grids (uint8 RGB)."""

from __future__ import annotations

import cv2
import numpy as np

from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.keypoints import COCO17_BONES

_LEFT, _RIGHT, _MID = (60, 200, 60), (230, 80, 60), (240, 200, 40)


def _joint_colour(i: int) -> tuple[int, int, int]:
    return _MID if i == 0 else (_LEFT if i % 2 == 1 else _RIGHT)


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Draw COCO-17 keypoints (K, 2) with visibility (K,) and their bones on a uint8 RGB copy."""
    out = np.ascontiguousarray(image.copy())
    r = max(1, round(min(out.shape[:2]) / 100))
    for a, b in COCO17_BONES:
        if a < len(keypoints) and b < len(keypoints) and visible[a] > 0 and visible[b] > 0:
            cv2.line(
                out,
                tuple(np.round(keypoints[a]).astype(int)),
                tuple(np.round(keypoints[b]).astype(int)),
                _joint_colour(b),
                r,
                cv2.LINE_AA,
            )
    for i, (p, v) in enumerate(zip(keypoints, visible)):
        if v > 0:
            cv2.circle(out, tuple(np.round(p).astype(int)), r + 1, _joint_colour(i), -1, cv2.LINE_AA)
    return out


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Relative depth (H, W[, 1]) in [0, 1], -1 invalid -> uint8 RGB (near bright, invalid black)."""
    d = depth[..., 0] if depth.ndim == 3 else depth
    valid = d >= 0
    rgb = cv2.applyColorMap((255 * (1 - np.clip(d, 0, 1))).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def colorize_normals(normal: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3), 0 invalid -> uint8 RGB ((n + 1) / 2), invalid black."""
    valid = np.abs(normal).sum(-1) > 0
    rgb = (255 * (normal + 1) / 2).clip(0, 255).astype(np.uint8)
    return np.where(valid[..., None], rgb, 0).astype(np.uint8)


def sample_panel(sample: dict[str, np.ndarray], label: str = "") -> np.ndarray:
    """One sample: the augmented crop with target keypoints | depth target | normal target."""
    crop = T.denormalize_image(sample["image"])
    h, w = crop.shape[:2]
    panels = [draw_skeleton(crop, sample["keypoints"], sample["keypoints_visible"] * sample["has_pose"])]
    panels.append(colorize_depth(sample["depth"]) if sample["has_depth"] > 0 else np.full_like(crop, 40))
    normal = cv2.resize(colorize_normals(sample["normal"]), (w, h), interpolation=cv2.INTER_NEAREST)
    panels.append(normal if sample["has_normal"] > 0 else np.full_like(crop, 40))
    panel = np.concatenate(panels, axis=1)
    if label:
        cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def grid(panels: list[np.ndarray], columns: int = 2, gap: int = 4) -> np.ndarray:
    """Tile equally sized panels into a grid with ``gap``-pixel grey borders."""
    h, w = panels[0].shape[:2]
    rows = -(-len(panels) // columns)
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 90, np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = p
    return out
