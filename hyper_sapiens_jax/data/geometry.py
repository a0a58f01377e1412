"""Camera geometry on depth maps: back-projection and normals from depth (numpy).

Convention (used by the renderer, the readers and the transforms alike): OpenCV camera frame,
x right, y down, z forward (metres); surface normals are unit vectors pointing out of the surface,
i.e. toward the camera on visible surfaces (n . P < 0); invalid normals are all-zero.
"""

from __future__ import annotations

import numpy as np

# MINI-RGBD intrinsics at 640x480 (docs/design.md §5).
MINI_RGBD_SIZE = (480, 640)  # (H, W)
MINI_RGBD_INTRINSICS = (588.67905803875317, 590.25690113005601, 322.22048191353628, 237.46785983766890)


def intrinsics_for(image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the MINI-RGBD camera scaled to ``image_size`` = (H, W)."""
    fx, fy, cx, cy = MINI_RGBD_INTRINSICS
    sy, sx = image_size[0] / MINI_RGBD_SIZE[0], image_size[1] / MINI_RGBD_SIZE[1]
    return fx * sx, fy * sy, cx * sx, cy * sy


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) float64 pinhole matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def default_intrinsics(height: int, width: int, focal_factor: float = 1.0) -> np.ndarray:
    """A guess for photos without calibration: focal = focal_factor * max(H, W) pixels (about 53
    degrees across the long side for 1.0), principal point at the image centre."""
    f = focal_factor * max(height, width)
    return intrinsics_matrix(f, f, (width - 1) / 2.0, (height - 1) / 2.0)


def crop_intrinsics(k: np.ndarray, warp_matrix: np.ndarray, flipped: bool, image_width: int) -> np.ndarray:
    """Intrinsics (3, 3) of a crop: ``warp_matrix`` (2, 3) maps image pixels to crop pixels.

    A horizontally flipped image is the view of a mirrored scene, whose camera has its principal
    point mirrored (cx -> W - 1 - cx); the flipped normals (x negated) live in that mirrored scene.
    """
    k = np.array(k, np.float64)
    if flipped:
        k[0, 2] = image_width - 1 - k[0, 2]
    m = np.vstack([np.asarray(warp_matrix, np.float64), [0.0, 0.0, 1.0]])
    return m @ k


def backproject(depth: np.ndarray, intrinsics: tuple[float, float, float, float]) -> np.ndarray:
    """depth (H, W) metres -> camera points (H, W, 3); pixel (u, v) at its centre index."""
    fx, fy, cx, cy = intrinsics
    h, w = depth.shape
    u = np.arange(w, dtype=np.float64)[None, :]
    v = np.arange(h, dtype=np.float64)[:, None]
    z = depth.astype(np.float64)
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1)


def normals_from_depth(
    depth: np.ndarray,
    valid: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    max_step: float = 0.05,
    stencil: int = 3,
) -> np.ndarray:
    """Unit normals (H, W, 3) float32 from metric depth, zero where they cannot be trusted.

    Central differences of the back-projected points over +-``stencil`` pixels (a wider stencil than
    +-1 averages out the 1 mm quantisation of 16-bit depth PNGs, which otherwise makes blocky normals);
    a pixel is valid when it and its four stencil neighbours are ``valid`` and no neighbour is more
    than ``max_step`` metres away in depth (so the silhouette edge, where depth jumps from the
    person to the background, is marked invalid).

    Args:
      depth: (H, W) metres.
      valid: (H, W) bool, pixels with a usable depth (e.g. person mask & depth > 0).
      intrinsics: (fx, fy, cx, cy) in pixels for this image size.
      max_step: largest depth difference (m) to a neighbour that still counts as the same surface.
      stencil: half-width in pixels of the central differences.
    """
    h, w = depth.shape
    k = stencil
    out = np.zeros((h, w, 3), np.float32)
    if h <= 2 * k or w <= 2 * k:
        return out
    pts = backproject(depth, intrinsics)  # float64: differences of nearby points
    z = depth.astype(np.float64)
    valid = valid.astype(bool)
    c = (slice(k, h - k), slice(k, w - k))  # pixels with a full stencil
    nbrs = [
        (slice(k, h - k), slice(2 * k, w)),
        (slice(k, h - k), slice(0, w - 2 * k)),
        (slice(2 * k, h), slice(k, w - k)),
        (slice(0, h - 2 * k), slice(k, w - k)),
    ]  # right left down up
    ok = valid[c].copy()
    for nb in nbrs:
        ok &= valid[nb] & (np.abs(z[nb] - z[c]) <= max_step)
    du = pts[nbrs[0]] - pts[nbrs[1]]  # d/du (x 2k)
    dv = pts[nbrs[2]] - pts[nbrs[3]]  # d/dv (x 2k)
    # n = dv x du: with y down and z forward this points toward the camera.
    n = np.stack(
        [
            dv[..., 1] * du[..., 2] - dv[..., 2] * du[..., 1],
            dv[..., 2] * du[..., 0] - dv[..., 0] * du[..., 2],
            dv[..., 0] * du[..., 1] - dv[..., 1] * du[..., 0],
        ],
        axis=-1,
    )
    norm = np.sqrt(np.sum(n * n, axis=-1))
    ok &= norm > 0
    n /= np.where(norm > 0, norm, 1.0)[..., None]
    n[np.sum(n * pts[c], axis=-1) > 0] *= -1  # keep every normal facing the camera
    out[c] = np.where(ok[..., None], n, 0.0)
    return out


def relative_depth_target(depth: np.ndarray, person: np.ndarray) -> np.ndarray:
    """The Sapiens depth target: metric depth min-max normalised to [0, 1] on the person, -1 elsewhere.

    depth (H, W) metres; person (H, W) bool (pixels of the person with a valid depth).
    """
    out = np.full(depth.shape, -1.0, np.float32)
    if person.any():
        d = depth[person]
        lo, hi = float(d.min()), float(d.max())
        out[person] = (d - lo) / max(hi - lo, 1e-6)
    return out
