"""A small z-buffer renderer for the synthetic infant testbed, seen through a pinhole camera.

The body is made of ellipsoids and round cones (``bodies.Ellipsoids`` / ``Cones``), both
quadric surfaces. Each primitive is splatted into its own bounding box: per pixel the ray
``z * (x', y', 1)`` is intersected with the quadric analytically, which gives the front-surface
depth exactly and the normal from the quadric's gradient. Rasterising a 640x480 frame (~40
primitives) takes ~5 ms; a fully shaded frame ~30-60 ms.

Conventions
  * Camera frame is OpenCV's: x right, y down, z forward; ``x_cam = R @ x_world + t``.
  * Pixel (col, row) = (u, v) with pixel centres at integer coordinates: ``u = fx * x / z + cx``.
  * Depth is the camera z in metres (not the ray length). Normals are unit vectors in the camera
    frame pointing out of the surface, so visible ones have n_z < 0.
  * Visibility (COCO style): 2 visible, 1 inside the image but hidden behind a surface, 0 outside.

Two looks: "synthetic" (plain background colour, flat-coloured clothes and skin, soft head-light
shading, crisp edges, lossless) and "real" (textured mat, floor and blankets, toys, a directional
light with shadows, printed clothes, hair, white balance, vignetting, blur and sensor noise).
"""

from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np

# The camera model lives in geometry.py (the readers use it too); re-exported here for the renderer's users.
from hyper_sapiens_jax.data.geometry import MINI_RGBD_INTRINSICS, MINI_RGBD_SIZE, intrinsics_for  # noqa: F401
from hyper_sapiens_jax.testbed import bodies
from hyper_sapiens_jax.testbed.bodies import Cones, Ellipsoids, Part, Skeletons

LOOKS = ("synthetic", "real")
OCCLUSION_MARGIN = 0.01  # metres a surface must be in front of a joint's own surface to hide it


# ---------------------------------------------------------------------------------------------
# Camera
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Camera:
    """Pinhole camera(s). rotation (..., 3, 3) and translation (..., 3) map world -> camera."""

    rotation: np.ndarray
    translation: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    height: int
    width: int

    def __getitem__(self, index) -> Camera:
        return dataclasses.replace(self, rotation=self.rotation[index], translation=self.translation[index])

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (..., K, 3) -> camera frame (..., K, 3); batch dims match the camera's."""
        return np.einsum("...ij,...kj->...ki", self.rotation, points) + self.translation[..., None, :]

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) -> pixel coordinates (..., 2)."""
        z = points_cam[..., 2]
        return np.stack(
            [self.fx * points_cam[..., 0] / z + self.cx, self.fy * points_cam[..., 1] / z + self.cy], axis=-1
        )

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """x' = (u - cx) / fx per column (W,) and y' = (v - cy) / fy per row (H,)."""
        return ((np.arange(self.width) - self.cx) / self.fx, (np.arange(self.height) - self.cy) / self.fy)


def _look_at_down(forward: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """World -> camera rotations (N, 3, 3) for viewing directions (N, 3) and in-plane roll (N,)."""
    ref = np.broadcast_to([1.0, 0.0, 0.0], forward.shape)
    right = ref - np.sum(ref * forward, -1, keepdims=True) * forward
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    right, down = (
        np.cos(roll)[:, None] * right + np.sin(roll)[:, None] * down,
        -np.sin(roll)[:, None] * right + np.cos(roll)[:, None] * down,
    )
    return np.stack([right, down, forward], axis=-2)


def sample_cameras(
    rng: np.random.Generator,
    ells: Ellipsoids,
    image_size: tuple[int, int],
    distance: tuple[float, float] = (0.5, 1.0),
    max_tilt_deg: float = 12.0,
    margin: float = 0.04,
) -> Camera:
    """N cameras above N infants (ells batch N): random distance, tilt and in-plane roll.

    The camera looks at the body's centre from ``distance`` metres (uniform), tilted up to
    ``max_tilt_deg`` from straight down, rolled uniformly in the image plane. If the whole body
    does not fit inside the image (minus ``margin`` of each side) it backs off until it does.
    """
    n = ells.centres.shape[0]
    lo, hi = ells.centres.min(axis=1), ells.centres.max(axis=1)
    target = (lo + hi) / 2 + np.concatenate([rng.uniform(-0.03, 0.03, (n, 2)), np.zeros((n, 1))], 1)
    tilt = np.deg2rad(rng.uniform(0, max_tilt_deg, n))
    azimuth = rng.uniform(0, 2 * np.pi, n)
    forward = np.stack([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), -np.cos(tilt)], -1)
    rotation = _look_at_down(forward, rng.uniform(0, 2 * np.pi, n))
    dist = rng.uniform(*distance, n)
    return fit_camera(rotation, forward, target, dist, ells, image_size, margin)


def fit_camera(
    rotation: np.ndarray,
    forward: np.ndarray,
    target: np.ndarray,
    dist: np.ndarray,
    ells: Ellipsoids,
    image_size: tuple[int, int],
    margin: float = 0.04,
) -> Camera:
    """N cameras with orientations ``rotation`` (N, 3, 3) (world -> camera; ``forward`` (N, 3) its
    viewing direction) looking at ``target`` (N, 3) from ``dist`` (N,) metres, each backed off until
    all of its body's ellipsoids (batch N) fit inside the image minus ``margin`` of each side."""
    fx, fy, cx, cy = intrinsics_for(image_size)
    height, width = image_size
    reach = ells.radii.max(axis=-1)  # (N, P) bounding-sphere radius of each primitive
    for _ in range(60):
        translation = -np.einsum("nij,nj->ni", rotation, target - dist[:, None] * forward)
        cam = Camera(rotation, translation, fx, fy, cx, cy, height, width)
        pc = cam.to_camera(ells.centres)
        z = np.maximum(pc[..., 2] - reach, 1e-3)
        uv = cam.project(pc)
        ru, rv = fx * reach / z, fy * reach / z
        fits = (
            (uv[..., 0] - ru >= margin * width)
            & (uv[..., 0] + ru <= (1 - margin) * width)
            & (uv[..., 1] - rv >= margin * height)
            & (uv[..., 1] + rv <= (1 - margin) * height)
            & (pc[..., 2] - reach > 0.05)
        ).all(axis=1)
        if fits.all():
            break
        dist = np.where(fits, dist, dist * 1.06)
    return cam


# ---------------------------------------------------------------------------------------------
# Ray intersections. Rays are z * d with d = (dx, dy, 1), so the hit parameter is the depth z.
# dx, dy broadcast against the primitives' batch shape: (1, w) and (h, 1) for an image patch and
# one primitive, (n, K, 1) for K points against (n, 1, P) primitives.
# ---------------------------------------------------------------------------------------------
def quadrics(ells: Ellipsoids) -> np.ndarray:
    """Q (..., P, 3, 3) with the surface ``(x - c)^T Q (x - c) = 1``: Q = A diag(1/r^2) A^T."""
    return np.einsum("...ik,...k,...jk->...ij", ells.axes, 1.0 / ells.radii**2, ells.axes)


def _matvec(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j->...i", m, v)


def _quad(m: np.ndarray, dx, dy) -> np.ndarray:
    """d^T M d for d = (dx, dy, 1) and symmetric M (..., 3, 3), expanded so it broadcasts cheaply."""
    return (
        m[..., 0, 0] * dx * dx
        + m[..., 1, 1] * dy * dy
        + m[..., 2, 2]
        + 2 * (m[..., 0, 1] * dx * dy + m[..., 0, 2] * dx + m[..., 1, 2] * dy)
    )


def _lin(v: np.ndarray, dx, dy) -> np.ndarray:
    """v . d for d = (dx, dy, 1) and v (..., 3)."""
    return v[..., 0] * dx + v[..., 1] * dy + v[..., 2]


def _ellipsoid_front(dx, dy, centre: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Depth where the rays first enter ellipsoids (centre (..., 3), Q (..., 3, 3)); inf on a miss."""
    qc = _matvec(q, centre)
    a = _quad(q, dx, dy)
    b = _lin(qc, dx, dy)
    cc = np.sum(centre * qc, -1) - 1.0
    disc = b * b - a * cc  # a z^2 - 2 b z + cc = 0
    z = (b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc > 0) & (z > 0), z, np.inf)


@dataclasses.dataclass(frozen=True)
class _ConeGeometry:
    """A round cone as a quadric: radius rho(s) = k0 + k1 s at axial position s = (x - a).u,
    valid for s in [s_lo, s_hi] (between the tangent circles on the two end spheres).
    In w = x - a the surface is w^T M w - 2 k0 k1 u.w - k0^2 = 0 with M = I - (1 + k1^2) u u^T.
    """

    a: np.ndarray
    u: np.ndarray
    m: np.ndarray
    k0: np.ndarray
    k1: np.ndarray
    s_lo: np.ndarray
    s_hi: np.ndarray

    @classmethod
    def of(cls, cones: Cones) -> _ConeGeometry:
        axis = cones.end - cones.start
        length = np.maximum(np.linalg.norm(axis, axis=-1), 1e-9)
        u = axis / length[..., None]
        # The surface line leans by beta from the axis: sin(beta) = (r_start - r_end) / length.
        sin_b = np.clip((cones.start_radius - cones.end_radius) / length, -0.95, 0.95)
        cos_b = np.sqrt(1 - sin_b**2)
        m = np.eye(3) - (1 + (sin_b / cos_b) ** 2)[..., None, None] * u[..., :, None] * u[..., None, :]
        return cls(
            cones.start,
            u,
            m,
            cones.start_radius / cos_b,
            -sin_b / cos_b,
            cones.start_radius * sin_b,
            length + cones.end_radius * sin_b,
        )

    def take(self, index) -> _ConeGeometry:
        return _ConeGeometry(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def _cone_front(dx, dy, g: _ConeGeometry) -> np.ndarray:
    """Depth where the rays first hit round cones' lateral surfaces; inf on a miss.

    The quadric is a double cone, so the nearer root can lie on the wrong nappe or outside the
    segment: take the nearest root whose axial position lies on the segment.
    """
    ma = _matvec(g.m, g.a)
    dmd = _quad(g.m, dx, dy)
    kk = g.k0 * g.k1
    ud, ua = _lin(g.u, dx, dy), np.sum(g.u * g.a, -1)
    half_b = -_lin(ma, dx, dy) - kk * ud
    c = np.sum(g.a * ma, -1) + 2 * kk * ua - g.k0**2
    disc = half_b * half_b - dmd * c
    root = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z1, z2 = (-half_b - root) / dmd, (-half_b + root) / dmd
    near, far = np.fmin(z1, z2), np.fmax(z1, z2)

    def on_segment(z):
        s = z * ud - ua
        return (disc > 0) & (z > 0) & (s >= g.s_lo) & (s <= g.s_hi)

    return np.where(on_segment(near), near, np.where(on_segment(far), far, np.inf))


# ---------------------------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------------------------
def to_camera_frame(ells: Ellipsoids, cones: Cones, camera: Camera) -> tuple[Ellipsoids, Cones]:
    """Ellipsoids (..., P) and cones (..., C) in world -> camera frame; batch dims match the camera's."""
    r, t = camera.rotation, camera.translation

    def move(points):
        return np.matmul(points, np.swapaxes(r, -1, -2)) + t[..., None, :]

    ells = dataclasses.replace(ells, centres=move(ells.centres), axes=np.matmul(r[..., None, :, :], ells.axes))
    cones = dataclasses.replace(cones, start=move(cones.start), end=move(cones.end))
    return ells, cones


def _sphere_boxes(centres: np.ndarray, reach: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel boxes (P, 4) = (u0, u1, v0, v1), half-open, around spheres (P, 3), (P,).

    Projects the 8 corners of each bounding cube: the projection of a convex body lies inside
    the hull of its projected corners (all in front of the camera).
    """
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    corners = centres[:, None] + signs[None] * reach[:, None, None]  # (P, 8, 3)
    corners[..., 2] = np.maximum(corners[..., 2], 1e-3)
    uv = camera.project(corners)
    u0 = np.clip(np.floor(uv[..., 0].min(1)), 0, camera.width).astype(int)
    u1 = np.clip(np.ceil(uv[..., 0].max(1)) + 1, 0, camera.width).astype(int)
    v0 = np.clip(np.floor(uv[..., 1].min(1)), 0, camera.height).astype(int)
    v1 = np.clip(np.ceil(uv[..., 1].max(1)) + 1, 0, camera.height).astype(int)
    return np.stack([u0, u1, v0, v1], axis=1)


def _boxes(ells_cam: Ellipsoids, cones_cam: Cones, camera: Camera) -> np.ndarray:
    """Pixel boxes (E + C, 4) of every primitive; a cone's box covers its two end spheres."""
    ell_boxes = _sphere_boxes(ells_cam.centres, ells_cam.radii.max(axis=-1), camera)
    start = _sphere_boxes(cones_cam.start, cones_cam.start_radius, camera)
    end = _sphere_boxes(cones_cam.end, cones_cam.end_radius, camera)
    cone_boxes = np.concatenate(
        [
            np.minimum(start, end)[:, [0]],
            np.maximum(start, end)[:, [1]],
            np.minimum(start, end)[:, [2]],
            np.maximum(start, end)[:, [3]],
        ],
        1,
    )
    return np.concatenate([ell_boxes, cone_boxes])


def rasterize(ells_cam: Ellipsoids, cones_cam: Cones, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer the ellipsoids (E,) and cones (C,) given in the camera frame.

    Returns depth (H, W) float64 (inf where nothing was hit) and the front primitive's index
    (H, W) int32: 0..E-1 an ellipsoid, E..E+C-1 a cone, -1 nothing.
    """
    depth = np.full((camera.height, camera.width), np.inf)
    index = np.full((camera.height, camera.width), -1, np.int32)
    xs, ys = camera.rays()
    q_all = quadrics(ells_cam)
    cones = _ConeGeometry.of(cones_cam)
    num_ells = len(ells_cam.part)
    for p, (u0, u1, v0, v1) in enumerate(_boxes(ells_cam, cones_cam, camera)):
        if u0 >= u1 or v0 >= v1:
            continue
        dx, dy = xs[None, u0:u1], ys[v0:v1, None]
        if p < num_ells:
            z = _ellipsoid_front(dx, dy, ells_cam.centres[p], q_all[p])
        else:
            z = _cone_front(dx, dy, cones.take(p - num_ells))
        zbuf = depth[v0:v1, u0:u1]
        closer = z < zbuf
        zbuf[closer] = z[closer]
        index[v0:v1, u0:u1][closer] = p
    return depth, index


def surface_normals(
    depth: np.ndarray, index: np.ndarray, ells_cam: Ellipsoids, cones_cam: Cones, camera: Camera
) -> np.ndarray:
    """Outward unit normals (H, W, 3), camera frame, of the primitive hit at each pixel (0 elsewhere)."""
    normals = np.zeros(depth.shape + (3,))
    rows, cols = np.nonzero(index >= 0)
    xs, ys = camera.rays()
    z = depth[rows, cols]
    points = np.stack([xs[cols] * z, ys[rows] * z, z], axis=-1)
    p = index[rows, cols]
    num_ells = len(ells_cam.part)
    grad = np.zeros_like(points)
    ell = p < num_ells
    grad[ell] = _matvec(quadrics(ells_cam)[p[ell]], points[ell] - ells_cam.centres[p[ell]])
    g = _ConeGeometry.of(cones_cam).take(p[~ell] - num_ells)
    grad[~ell] = _matvec(g.m, points[~ell] - g.a) - (g.k0 * g.k1)[:, None] * g.u
    normals[rows, cols] = grad / np.linalg.norm(grad, axis=-1, keepdims=True)
    return normals


def mat_depth(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) of the mat plane Z = 0 and its normal (3,) in the camera frame."""
    normal = camera.rotation[:, 2]  # world +Z seen from the camera
    offset = normal @ camera.translation  # plane: normal . x = offset (= -camera height)
    xs, ys = camera.rays()
    denom = normal[0] * xs[None] + normal[1] * ys[:, None] + normal[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(denom < -1e-6, offset / denom, np.inf)
    return depth, normal


# ---------------------------------------------------------------------------------------------
# Visibility
# ---------------------------------------------------------------------------------------------
def in_image(uv: np.ndarray, camera: Camera) -> np.ndarray:
    """(..., 2) pixel coordinates -> (...) bool: inside [0, W-1] x [0, H-1]."""
    return (uv[..., 0] >= 0) & (uv[..., 0] <= camera.width - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= camera.height - 1)


def zbuffer_visibility(
    points_cam: np.ndarray, burial: np.ndarray, depth: np.ndarray, camera: Camera, margin: float = OCCLUSION_MARGIN
) -> np.ndarray:
    """COCO visibility (K,) int of points (K, 3) from a z-buffer (H, W).

    A joint sits inside its own limb, so the surface in front of it is ~``burial`` (K,) metres
    closer; it counts as hidden only if the z-buffer is more than burial + margin closer.
    """
    uv = camera.project(points_cam)
    inside = in_image(uv, camera) & (points_cam[:, 2] > 0)
    col = np.clip(np.round(uv[:, 0]), 0, camera.width - 1).astype(int)
    row = np.clip(np.round(uv[:, 1]), 0, camera.height - 1).astype(int)
    hidden = depth[row, col] < points_cam[:, 2] - burial - margin
    return np.where(inside, np.where(hidden, 1, 2), 0).astype(np.int32)


def ray_visibility(
    points_cam: np.ndarray,
    burial: np.ndarray,
    ells_cam: Ellipsoids,
    cones_cam: Cones,
    camera: Camera,
    margin: float = OCCLUSION_MARGIN,
    chunk: int = 256,
) -> np.ndarray:
    """COCO visibility (N, K) of points (N, K, 3) against N bodies' ellipsoids and cones.

    The rule of ``zbuffer_visibility``, but each point's ray is intersected analytically with
    every primitive: many skeleton-only samples at once, without rendering images.
    """
    uv = camera.project(points_cam)
    inside = in_image(uv, camera) & (points_cam[..., 2] > 0)
    hidden = np.zeros(points_cam.shape[:2], bool)
    q_all = quadrics(ells_cam)
    cones = _ConeGeometry.of(cones_cam)
    for s in range(0, points_cam.shape[0], chunk):
        part = slice(s, s + chunk)
        pts = points_cam[part]
        dx, dy = (pts[..., :1] / pts[..., 2:]), (pts[..., 1:2] / pts[..., 2:])  # (n, K, 1)
        first = np.minimum(
            _ellipsoid_front(dx, dy, ells_cam.centres[part, None], q_all[part, None]).min(-1),
            _cone_front(dx, dy, cones.take(part).take((slice(None), None))).min(-1),
        )
        hidden[part] = first < pts[..., 2] - burial[part] - margin
    return np.where(inside, np.where(hidden, 1, 2), 0).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Scenes: everything about appearance, sampled once per image (or once per sequence)
# ---------------------------------------------------------------------------------------------
SKIN_TONES = np.array(
    [
        (0.98, 0.84, 0.74),
        (0.94, 0.76, 0.63),
        (0.87, 0.67, 0.52),
        (0.76, 0.55, 0.40),
        (0.60, 0.42, 0.30),
        (0.45, 0.30, 0.21),
    ]
)
HAIR_COLOURS = np.array(
    [
        (0.08, 0.06, 0.05),
        (0.22, 0.14, 0.08),
        (0.40, 0.26, 0.14),
        (0.62, 0.45, 0.25),
        (0.85, 0.72, 0.45),
        (0.55, 0.25, 0.12),
    ]
)
_TORSO = (Part.CHEST, Part.BELLY, Part.PELVIS)
_SLEEVES = ((), (Part.UPPER_ARM,), (Part.UPPER_ARM, Part.FOREARM))
_LEGS = ((), (Part.THIGH,), (Part.THIGH, Part.SHIN), (Part.THIGH, Part.SHIN, Part.FOOT))
NUM_PARTS = len(Part)


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A two-colour procedural pattern on a surface.

    kind: 0 plain, 1 stripes, 2 checker, 3 plaid, 4 dots. period (metres), angle (radians).
    """

    colour: np.ndarray
    colour2: np.ndarray
    kind: int = 0
    period: float = 0.05
    angle: float = 0.0


@dataclasses.dataclass(frozen=True)
class Blanket:
    """A rectangle lying on the mat: centre (2,) world XY, half_size (2,), angle, its surface."""

    centre: np.ndarray
    half_size: np.ndarray
    angle: float
    surface: Pattern


@dataclasses.dataclass(frozen=True)
class Scene:
    """Appearance of one image or sequence.

    part_colour (NUM_PARTS, 3) albedo in [0, 1]; clothed (NUM_PARTS,) bool: parts that wear
    ``clothes`` (its pattern replaces part_colour there). background: the plain colour (synthetic)
    or the floor (real); mat + blankets: the real look's textured surfaces; toys: clutter
    ellipsoids (T,) on the mat with toy_colour (T, 3). Light: unit vector towards the light
    (world), ambient fraction and colour. Post-processing: blur sigma (px), noise sigma (of 255),
    per-channel gain, vignetting strength, and the seed of the sensor noise.
    """

    look: str
    part_colour: np.ndarray
    clothed: np.ndarray
    clothes: Pattern
    background: Pattern
    hair_colour: np.ndarray | None = None
    mat: Pattern | None = None
    mat_centre: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    mat_half_size: np.ndarray = dataclasses.field(default_factory=lambda: np.full(2, 1e3))
    mat_angle: float = 0.0
    blankets: tuple[Blanket, ...] = ()
    toys: Ellipsoids | None = None
    toy_colour: np.ndarray | None = None
    light_dir: np.ndarray = dataclasses.field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    ambient: float = 0.6
    light_colour: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(3))
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    gain: np.ndarray = dataclasses.field(default_factory=lambda: np.ones(3))
    vignette: float = 0.0
    noise_seed: int = 0
    fabric: np.ndarray | None = None  # (256, 256) float32 tileable noise for fabric/skin grain


def _random_colour(rng, sat=(0.25, 0.8), val=(0.45, 0.95)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val)))


def _random_pattern(rng, period=(0.02, 0.12), kinds=(0, 1, 2, 3, 4), sat=(0.15, 0.7)) -> Pattern:
    return Pattern(
        _random_colour(rng, sat),
        _random_colour(rng, sat),
        int(rng.choice(kinds)),
        float(rng.uniform(*period)),
        float(rng.uniform(0, np.pi)),
    )


def _outfit(rng, look: str) -> tuple[np.ndarray, np.ndarray, Pattern]:
    """Per-part albedo (NUM_PARTS, 3), clothed mask (NUM_PARTS,) and the clothes' surface."""
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    if look == "real":
        skin = np.clip(skin * rng.uniform(0.92, 1.08) + rng.normal(0, 0.02, 3), 0, 1)
    colours = np.tile(skin, (NUM_PARTS, 1))
    colours[Part.EYE] = (0.12, 0.09, 0.08)
    clothed = np.zeros(NUM_PARTS, bool)
    if rng.uniform() < 0.15:  # just a nappy
        clothed[Part.PELVIS] = True
        clothes = Pattern(np.array([0.95, 0.95, 0.93]), np.array([0.85, 0.88, 0.95]))
    else:
        for part in _TORSO + _SLEEVES[rng.integers(3)] + _LEGS[rng.integers(4)]:
            clothed[part] = True
        clothes = (
            _random_pattern(rng, (0.015, 0.05), sat=(0.2, 0.8))
            if look == "real"
            else Pattern(_random_colour(rng), _random_colour(rng))
        )  # synthetic: uniform colour
    colours[clothed] = clothes.colour
    return colours, clothed, clothes


def _value_noise(rng, size: int = 256, octaves: int = 4) -> np.ndarray:
    """Tileable fractal noise (size, size) float32 in about [-1, 1]."""
    out = np.zeros((size, size), np.float32)
    for o in range(octaves):
        cells = 4 * 2**o
        grid = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
        grid = np.pad(grid, ((0, 1), (0, 1)), mode="wrap")  # wrap so the texture tiles
        big = cv2.resize(grid, (size + size // cells, size + size // cells), interpolation=cv2.INTER_CUBIC)
        out += big[:size, :size] / 2**o
    return out / np.abs(out).max()


def _place_toys(rng, body: Ellipsoids, count: int) -> tuple[Ellipsoids, np.ndarray]:
    """``count`` toy balls/blobs on the mat around the body, not overlapping it."""
    lo, hi = body.centres[:, :2].min(0), body.centres[:, :2].max(0)
    centres, radii, axes = [], [], []
    for _ in range(count * 20):
        if len(centres) == count:
            break
        r = rng.uniform(0.02, 0.06, 3) * np.array([1, 1, rng.uniform(0.6, 1.0)])
        xy = rng.uniform(lo - 0.25, hi + 0.25)
        gap = np.linalg.norm(body.centres[:, :2] - xy, axis=1) - body.radii.max(1) - r.max()
        if gap.min() > 0.01:
            centres.append(np.array([xy[0], xy[1], r[2]]))
            radii.append(r)
            axes.append(bodies.axis_rotation("z", rng.uniform(0, np.pi)))
    t = len(centres)
    toys = Ellipsoids(
        np.array(centres).reshape(t, 3),
        np.array(axes).reshape(t, 3, 3),
        np.array(radii).reshape(t, 3),
        np.full(t, -1, np.int32),
        np.zeros(t, bool),
    )
    colours = np.array([_random_colour(rng, (0.6, 1.0), (0.6, 1.0)) for _ in range(t)]).reshape(t, 3)
    return toys, colours


def sample_scene(rng: np.random.Generator, look: str, body: Ellipsoids | None = None) -> Scene:
    """A random appearance for ``look``. ``body`` (P,) world ellipsoids: toys avoid it (real look)."""
    if look not in LOOKS:
        raise ValueError(f"look must be one of {LOOKS}, got {look!r}")
    colours, clothed, clothes = _outfit(rng, look)
    if look == "synthetic":
        return Scene(
            look,
            colours,
            clothed,
            clothes,
            background=Pattern(_random_colour(rng, (0.0, 0.5), (0.3, 0.95)), np.zeros(3)),
        )
    centre = np.zeros(2) if body is None else body.centres[:, :2].mean(0)
    elevation = np.deg2rad(rng.uniform(35, 80))
    azimuth = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    blankets = tuple(
        Blanket(
            centre + rng.uniform(-0.3, 0.3, 2),
            rng.uniform(0.15, 0.4, 2),
            float(rng.uniform(0, np.pi)),
            _random_pattern(rng, (0.02, 0.08)),
        )
        for _ in range(rng.integers(0, 3))
    )
    toys, toy_colour = (None, None) if body is None else _place_toys(rng, body, int(rng.integers(0, 5)))
    warm = rng.uniform(-0.08, 0.08)
    return Scene(
        look,
        colours,
        clothed,
        clothes,
        background=_random_pattern(rng, (0.08, 0.25), kinds=(0, 1, 3), sat=(0.05, 0.4)),
        hair_colour=(
            HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15) if rng.uniform() < 0.6 else None
        ),
        mat=_random_pattern(rng, (0.03, 0.15), sat=(0.1, 0.6)),
        mat_centre=centre + rng.uniform(-0.1, 0.1, 2),
        mat_half_size=rng.uniform([0.35, 0.25], [0.7, 0.5]),
        mat_angle=float(rng.uniform(0, np.pi)),
        blankets=blankets,
        toys=toys,
        toy_colour=toy_colour,
        light_dir=light,
        ambient=float(rng.uniform(0.25, 0.5)),
        light_colour=np.array([1 + warm, 1.0, 1 - warm]),
        blur_sigma=float(rng.uniform(0.4, 1.3)),
        noise_sigma=float(rng.uniform(2.0, 6.0)),
        gain=rng.uniform(0.85, 1.1, 3),
        vignette=float(rng.uniform(0.1, 0.4)),
        noise_seed=int(rng.integers(2**31)),
        fabric=_value_noise(rng),
    )


# ---------------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------------
def _pattern(surface: Pattern, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Mixing weight in [0, 1] of colour2 at world coordinates x, y (same shape); None if plain."""
    if surface.kind == 0:
        return None
    ca, sa = np.float32(np.cos(surface.angle) / surface.period), np.float32(np.sin(surface.angle) / surface.period)
    u, v = x * ca + y * sa, y * ca - x * sa
    if surface.kind == 1:
        return 0.5 + 0.5 * np.tanh(4 * np.sin(np.float32(2 * np.pi) * u))
    if surface.kind == 2:
        return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    if surface.kind == 3:
        two_pi = np.float32(2 * np.pi)
        return 0.25 * (2 + np.tanh(4 * np.sin(two_pi * u)) + np.tanh(4 * np.sin(two_pi * v)))
    return ((u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.09).astype(np.float32)  # dots


def _paint(surface: Pattern, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Albedo (..., 3) float32 of a patterned surface at world coordinates x, y (...)."""
    colour = surface.colour.astype(np.float32)
    w = _pattern(surface, x, y)
    if w is None:
        return np.broadcast_to(colour, np.shape(x) + (3,))
    return colour + w[..., None] * (surface.colour2 - surface.colour).astype(np.float32)


def _fabric(scene: Scene, x: np.ndarray, y: np.ndarray, texel: float) -> np.ndarray:
    """Tileable noise (H, W) sampled at world x, y (H, W) with ``texel`` metres per texture pixel."""
    size = scene.fabric.shape[0]
    mx, my = np.mod(x / np.float32(texel), size), np.mod(y / np.float32(texel), size)
    return cv2.remap(scene.fabric, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _ground_xy(camera: Camera, ground_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World X and Y (H, W) float32 of the mat point seen at every pixel."""
    xs, ys = (r.astype(np.float32) for r in camera.rays())
    z = np.minimum(ground_depth, 1e3).astype(np.float32)
    rot = camera.rotation.astype(np.float32)
    origin = (camera.rotation.T @ camera.translation).astype(np.float32)  # world = R^T (cam - t)
    xc, yc = xs[None] * z, ys[:, None] * z
    return (
        rot[0, 0] * xc + rot[1, 0] * yc + rot[2, 0] * z - origin[0],
        rot[0, 1] * xc + rot[1, 1] * yc + rot[2, 1] * z - origin[1],
    )


def _ground_albedo(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Albedo (H, W, 3) float32 of the floor, the mat and the blankets at world x, y (H, W)."""
    albedo = _paint(scene.background, x, y)
    if scene.look == "synthetic":
        return np.array(albedo)
    albedo = albedo * (1 + 0.25 * _fabric(scene, x, y, 0.02))[..., None]  # carpet / wood grain
    rectangles = [(scene.mat_centre, scene.mat_half_size, scene.mat_angle, scene.mat)]
    rectangles += [(b.centre, b.half_size, b.angle, b.surface) for b in scene.blankets]
    for centre, half, angle, surface in rectangles:
        ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        du, dv = x - np.float32(centre[0]), y - np.float32(centre[1])
        inside = (np.abs(du * ca + dv * sa) < half[0]) & (np.abs(dv * ca - du * sa) < half[1])
        albedo = np.where(inside[..., None], _paint(surface, x, y), albedo)
    return albedo * (1 + 0.12 * _fabric(scene, x, y, 0.004))[..., None]  # fine weave


def _body_albedo(scene: Scene, parts: np.ndarray, world: np.ndarray, head: tuple) -> np.ndarray:
    """Albedo (K, 3) of K body pixels of one person with part ids (K,) at world points (K, 3);
    ``head`` = (centre, axes, radii) of that person's head ellipsoid (for the hair)."""
    albedo = scene.part_colour[parts].astype(np.float32)
    clothed = scene.clothed[parts]
    if scene.look == "real" and clothed.any():
        # Prints follow a fixed world direction: good enough for single images.
        pts = world[clothed].astype(np.float32)
        albedo[clothed] = _paint(scene.clothes, pts[:, 0] + pts[:, 2], pts[:, 1] - pts[:, 2])
    if scene.hair_colour is not None:
        centre, axes, radii = head  # hair covers the top/back of the head in the head's frame
        local = (world - centre) @ axes / radii
        hair = (parts == Part.HEAD) & (local[:, 1] - 0.6 * local[:, 2] > 0.25)
        albedo[hair] = scene.hair_colour
    return albedo


def _shadow(mask: np.ndarray, scene: Scene, camera: Camera, mat_distance: float) -> np.ndarray:
    """Soft shadow (H, W) float32 in [0, 1] cast on the ground by the masked objects.

    Cheap: the silhouette, shifted by where a point ~5 cm above the mat would cast its shadow,
    and blurred. Enough to ground the infant visually; not a physical shadow.
    """
    height = 0.05
    shift_world = -height * scene.light_dir[:2] / max(scene.light_dir[2], 0.2)
    shift_cam = camera.rotation[:, :2] @ shift_world
    du, dv = camera.fx * shift_cam[0] / mat_distance, camera.fy * shift_cam[1] / mat_distance
    moved = cv2.warpAffine(mask.astype(np.float32), np.float32([[1, 0, du], [0, 1, dv]]), (camera.width, camera.height))
    return cv2.GaussianBlur(moved, (0, 0), 6.0)


def _post_process(image: np.ndarray, scene: Scene) -> np.ndarray:
    """Camera effects on a float image (H, W, 3) in [0, 1] -> uint8."""
    h, w = image.shape[:2]
    image = image * scene.gain.astype(np.float32)
    if scene.vignette:
        rx = ((np.arange(w, dtype=np.float32) - w / 2) / (w / 2)) ** 2
        ry = ((np.arange(h, dtype=np.float32) - h / 2) / (h / 2)) ** 2
        image *= (1 - np.float32(scene.vignette / 2) * (rx[None] + ry[:, None]))[..., None]
    if scene.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), scene.blur_sigma)
    image *= np.float32(255.0)
    if scene.noise_sigma > 0:
        # OpenCV's generator: 4x faster than numpy's here, and deterministic once seeded (its
        # state is per thread, and this thread seeds it right before use).
        noise = np.empty_like(image)
        cv2.setRNGSeed(scene.noise_seed)
        cv2.randn(noise, 0.0, scene.noise_sigma)
        image += noise
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _lambert(normals: np.ndarray, light: np.ndarray, ambient: float, wrap=0.0) -> np.ndarray:
    """Diffuse shading (...) of unit normals (..., 3) for a unit light direction (3,)."""
    cos = (normals @ light + wrap) / (1 + wrap)
    return ambient + (1 - ambient) * np.clip(cos, 0, 1)


# ---------------------------------------------------------------------------------------------
# Rendering a frame
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Frame:
    """One rendered image and its ground truth.

    rgb (H, W, 3) uint8; depth (H, W) float32 metres on the infant, 0 elsewhere; scene_depth
    (H, W) float32 metres of whatever is seen (infant, toys, mat); normals (H, W, 3) float32 unit
    camera-frame normals on the infant, 0 elsewhere; mask (H, W) bool infant pixels.
    joints_cam (25, 3) SMIL joints in the camera frame (metres), joints_uv (25, 2) pixels,
    joints_visibility (25,) 0/1/2; coco_uv (17, 2), coco_depth (17,) metres, coco_visibility (17,)
    0/1/2 (eyes and ears derived from the head).
    """

    rgb: np.ndarray
    depth: np.ndarray
    scene_depth: np.ndarray
    normals: np.ndarray
    mask: np.ndarray
    joints_cam: np.ndarray
    joints_uv: np.ndarray
    joints_visibility: np.ndarray
    coco_uv: np.ndarray
    coco_depth: np.ndarray
    coco_visibility: np.ndarray


def _ground_image(scene: Scene, camera: Camera) -> np.ndarray:
    """Albedo (H, W, 3) float32 of the ground everywhere (the body is drawn over it).

    Textures are evaluated at half resolution and upsampled: 4x cheaper, and the real look's
    camera blur hides the difference.
    """
    if scene.background.kind == 0 and scene.mat is None:  # plain synthetic background
        image = np.empty((camera.height, camera.width, 3), np.float32)
        image[:] = scene.background.colour
        return image
    half = dataclasses.replace(
        camera,
        fx=camera.fx / 2,
        fy=camera.fy / 2,
        cx=(camera.cx + 0.5) / 2 - 0.5,
        cy=(camera.cy + 0.5) / 2 - 0.5,
        height=(camera.height + 1) // 2,
        width=(camera.width + 1) // 2,
    )
    albedo = _ground_albedo(scene, *_ground_xy(half, mat_depth(half)[0]))
    return cv2.resize(albedo, (camera.width, camera.height), interpolation=cv2.INTER_LINEAR)


def _shade(
    scene: Scene,
    camera: Camera,
    ells: Ellipsoids,
    part: np.ndarray,
    owner: np.ndarray,
    depth,
    index,
    normals,
    ground_depth,
    ground_normal,
    outfits=None,
) -> np.ndarray:
    """Float32 RGB (H, W, 3) in [0, 1] before post-processing.

    ells: the world ellipsoids (every person's, then props); part/owner (E + C,) per rasterised
    primitive, owner = the person (0, 1, ...) or -1 for a prop. ``outfits``: one Scene per person
    whose part colours, clothes and hair dress that person (None: ``scene`` dresses everyone).
    """
    hit = index >= 0
    light_cam = camera.rotation @ scene.light_dir
    image = _ground_image(scene, camera)
    if scene.look == "real":
        mat_distance = float(np.median(ground_depth[np.isfinite(ground_depth)]))
        ground_light = _lambert(ground_normal, light_cam, scene.ambient)
        image *= (ground_light * (1 - 0.45 * _shadow(hit, scene, camera, mat_distance)))[..., None]

    rows, cols = np.nonzero(hit)
    prim, n = index[rows, cols], normals[rows, cols]
    xs, ys = camera.rays()
    view = np.stack([xs[cols], ys[rows], np.ones(rows.size)], -1)  # rays with z = 1
    world = (view * depth[rows, cols, None] - camera.translation) @ camera.rotation
    pixel_owner = owner[prim]
    is_person = pixel_owner >= 0
    albedo = np.zeros((rows.size, 3), np.float32)
    ell_owner = owner[: len(ells.part)]
    for k in range(int(owner.max()) + 1):
        sel = pixel_owner == k
        head = int(np.argmax((ells.part == Part.HEAD) & (ell_owner == k)))
        albedo[sel] = _body_albedo(
            scene if outfits is None else outfits[k],
            part[prim[sel]],
            world[sel],
            (ells.centres[head], ells.axes[head], ells.radii[head]),
        )
    if (~is_person).any():  # props sit right after the people's ellipsoids
        albedo[~is_person] = scene.toy_colour[prim[~is_person] - int(ells.person.sum())]

    if scene.look == "synthetic":
        # Soft head-light: brightness depends only on how squarely the surface faces the camera.
        facing = -np.sum(n * view, -1) / np.linalg.norm(view, axis=-1)
        image[rows, cols] = albedo * (0.55 + 0.45 * np.clip(facing, 0, 1))[:, None]
        return image
    shade = _lambert(n, light_cam, scene.ambient, wrap=np.where(is_person, 0.3, 0.0))  # skin: soft wrap
    half = light_cam - np.array([0.0, 0.0, 1.0])  # Blinn half-vector, view direction ~ -z
    gloss = np.where(is_person, 0.05, 0.35) * np.clip(n @ (half / np.linalg.norm(half)), 0, 1) ** 30
    image[rows, cols] = albedo * shade[:, None] + gloss[:, None]
    return image * scene.light_colour.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class GroupFrame:
    """One rendered image of P people and its ground truth.

    rgb (H, W, 3) uint8; zbuffer (H, W) float64 camera z of whatever is nearest (inf: nothing but
    the ground); depth (H, W) float32 metres on people, 0 elsewhere; normals (H, W, 3) float32 unit
    camera-frame normals on people, 0 elsewhere; owner (H, W) int32: the person seen at each pixel
    (0 .. P-1) or -1; ground_depth (H, W) of the ground plane (inf where it is not seen).
    Per person: joints_cam (P, 25, 3), coco_uv (P, 17, 2), coco_depth (P, 17), coco_visibility
    (P, 17) 0/1/2 against everything in the image (other people hide joints too).
    """

    rgb: np.ndarray
    zbuffer: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    owner: np.ndarray
    ground_depth: np.ndarray
    joints_cam: np.ndarray
    coco_uv: np.ndarray
    coco_depth: np.ndarray
    coco_visibility: np.ndarray


def render_group(skel: Skeletons, camera: Camera, scene: Scene, outfits=None, image_filter=None) -> GroupFrame:
    """Render P posed bodies (``skel`` of length P) through one ``camera`` with ``scene``'s look.

    ``scene.toys`` are drawn as props (not people). ``outfits``: one Scene per person for their
    clothes, skin and hair (None: everyone wears ``scene``'s). ``image_filter(image, frame_info)``
    may edit the float image before post-processing (the human corpus paints its backdrop there).
    """
    people = bodies.body_ellipsoids(skel)
    num = len(skel)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    ells = Ellipsoids(
        flat(people.centres),
        flat(people.axes),
        flat(people.radii),
        np.tile(people.part, num),
        np.ones(num * len(people.part), bool),
    )
    ell_owner = np.repeat(np.arange(num), len(people.part))
    if scene.toys is not None and len(scene.toys.part):  # props go after the people's ellipsoids
        ells = Ellipsoids(
            *(
                np.concatenate([getattr(ells, f), getattr(scene.toys, f)])
                for f in ("centres", "axes", "radii", "part", "person")
            )
        )
        ell_owner = np.concatenate([ell_owner, np.full(len(scene.toys.part), -1)])
    body_cones = bodies.body_cones(skel)
    cones = Cones(
        flat(body_cones.start),
        flat(body_cones.end),
        flat(body_cones.start_radius),
        flat(body_cones.end_radius),
        np.tile(body_cones.part, num),
    )
    ells_cam, cones_cam = to_camera_frame(ells, cones, camera)
    zbuffer, index = rasterize(ells_cam, cones_cam, camera)
    normals = surface_normals(zbuffer, index, ells_cam, cones_cam, camera)
    ground_depth, ground_normal = mat_depth(camera)
    part = np.concatenate([ells.part, cones.part])
    owner = np.concatenate([ell_owner, np.repeat(np.arange(num), len(body_cones.part))])
    pixel_owner = np.where(index >= 0, owner[np.maximum(index, 0)], -1).astype(np.int32)
    mask = pixel_owner >= 0

    image = _shade(scene, camera, ells, part, owner, zbuffer, index, normals, ground_depth, ground_normal, outfits)
    if image_filter is not None:
        image = image_filter(image, {"owner": pixel_owner, "zbuffer": zbuffer, "ground_depth": ground_depth})
    rgb = _post_process(image, scene)

    coco, coco_burial = bodies.coco17_points(skel)
    joints_cam = np.stack([camera.to_camera(skel.joints[k]) for k in range(num)])
    coco_cam = np.stack([camera.to_camera(coco[k]) for k in range(num)])
    return GroupFrame(
        rgb=rgb,
        zbuffer=zbuffer,
        depth=np.where(mask, zbuffer, 0).astype(np.float32),
        normals=np.where(mask[..., None], normals, 0).astype(np.float32),
        owner=pixel_owner,
        ground_depth=ground_depth,
        joints_cam=joints_cam,
        coco_uv=camera.project(coco_cam),
        coco_depth=coco_cam[..., 2],
        coco_visibility=np.stack(
            [zbuffer_visibility(coco_cam[k], coco_burial[k], zbuffer, camera) for k in range(num)]
        ),
    )


def render(skel: Skeletons, camera: Camera, scene: Scene) -> Frame:
    """Render one posed infant (``skel`` of length 1) through ``camera`` with ``scene``'s look."""
    if len(skel) != 1:
        raise ValueError(f"render draws one infant; got {len(skel)} skeletons")
    g = render_group(skel, camera, scene)
    mask = g.owner == 0
    return Frame(
        rgb=g.rgb,
        depth=g.depth,
        scene_depth=np.where(np.isfinite(g.zbuffer), g.zbuffer, np.nan_to_num(g.ground_depth, posinf=0.0)).astype(
            np.float32
        ),
        normals=g.normals,
        mask=mask,
        joints_cam=g.joints_cam[0],
        joints_uv=camera.project(g.joints_cam[0]),
        joints_visibility=zbuffer_visibility(g.joints_cam[0], skel.shape.joint_depths[0], g.zbuffer, camera),
        coco_uv=g.coco_uv[0],
        coco_depth=g.coco_depth[0],
        coco_visibility=g.coco_visibility[0],
    )
