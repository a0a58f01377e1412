"""Infant-proportioned 3D skeletons with the 25 SMIL joints (docs/design.md §5), posed on a mat.

The body model is a kinematic tree over the SMIL-25 joints plus a surface: round cones (tapered
capsules) along the limb bones, spheres at the limb joints, flattened ellipsoids for the trunk,
hands and feet, and an ellipsoid head with eyes, nose and ears. Everything is batched over N
infants and vectorised with numpy; randomness always comes from an explicit
``np.random.Generator``, so a seed fixes the result.

Frames and units
  * Body frame (the rest pose, SMPL-like): x = the infant's left, y = up (towards the head),
    z = forward (the way the face looks). Rest pose: standing straight, arms out sideways (T-pose).
  * World frame: metres, Z up, the mat is the plane Z = 0. Posed infants lie (or sit) on it.
  * Joint rotations: rotating joint j moves j's children, as in SMPL:
      ``G[j] = G[parent] @ L[j]`` and ``p[j] = p[parent] + G[parent] @ offset[j]``.
    Local rotations are Euler angles ``L = Rz(c) @ Ry(b) @ Rx(a)`` with limits per joint.

Proportions (fractions of the crown-to-sole length L, the infant's body length): head (crown to
chin) ~1/4, neck 0.03, shoulders-to-hips 0.32, thigh 0.18, shin 0.175, ankle-to-sole 0.045; arms
0.30 shoulder-to-knuckles. An adult's head is ~1/8 and legs ~1/2 of the height.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from hyper_sapiens_jax.data.keypoints import NUM_COCO_KEYPOINTS, SMIL25_NAMES, smil25_to_coco17

NUM_JOINTS = len(SMIL25_NAMES)

# Parent of each SMIL joint (-1: root). Parents always have lower ids, so one pass does FK.
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21, 15])
# Left/right joint pairs (SMIL ids); the rest are on the midline.
LEFT_RIGHT_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
_RIGHT_OF = {left: right for left, right in LEFT_RIGHT_PAIRS}

HEAD_FRACTION = 0.25  # crown-to-chin over crown-to-sole in the template below.

# Rest offsets of each joint from its parent, body frame, in units of L (left side and midline;
# the right side mirrors x). Heights relative to the hip joints: pelvis 0.03, spine 0.11, 0.19,
# 0.27, neck 0.34, chin 0.35, crown 0.60, sole -0.40.
_TEMPLATE_OFFSETS = {
    0: (0.0, 0.0, 0.0),
    1: (0.06, -0.03, 0.0),  # hip joint
    3: (0.0, 0.08, -0.01),
    4: (0.0, -0.18, 0.0),  # knee: thigh 0.18
    6: (0.0, 0.08, 0.0),
    7: (0.0, -0.175, 0.0),  # ankle: shin 0.175
    9: (0.0, 0.08, 0.005),
    10: (0.0, -0.02, 0.065),  # toes: the foot points forward
    12: (0.0, 0.07, -0.005),  # neck
    13: (0.035, 0.045, 0.0),  # collar
    15: (0.0, 0.04, -0.01),  # head joint (skull base)
    16: (0.075, 0.005, -0.005),  # shoulder joint: shoulder breadth 0.22
    18: (0.13, 0.0, 0.0),  # elbow: upper arm 0.13
    20: (0.11, 0.0, 0.0),  # wrist: forearm 0.11
    22: (0.06, 0.0, 0.0),  # knuckles: hand 0.06
}
# Head geometry relative to the head joint, in units of the head height H (crown to chin), head
# frame. The nose (joint 24) is the nose tip; eyes and ears give COCO's face points.
_HEAD_CENTRE = (0.0, 0.38, 0.1)
_HEAD_RADII = (0.36, 0.5, 0.45)
_NOSE_TIP = (0.0, 0.30, 0.58)
_FACE_POINTS = {  # COCO id -> offset from the head joint (H units, head frame)
    1: (0.16, 0.40, 0.48),
    2: (-0.16, 0.40, 0.48),  # eyes, just under the head surface
    3: (0.36, 0.36, 0.08),
    4: (-0.36, 0.36, 0.08),  # ears, on the sides
}
_HEAD_JOINTS = (24,)  # joints whose offset scales with H rather than with L

# Limb/trunk radius around each joint in units of L (before the girth factor): the limbs' thickness.
_JOINT_RADII = np.array(
    [
        0.075,
        0.064,
        0.064,
        0.085,
        0.045,
        0.045,
        0.08,
        0.032,
        0.032,
        0.07,
        0.022,
        0.022,
        0.045,
        0.042,
        0.042,
        0.05,
        0.045,
        0.045,
        0.035,
        0.035,
        0.027,
        0.027,
        0.024,
        0.024,
        0.0,
    ]
)
# How deep each joint lies under the nearest body surface (units of L): the limb radius, except
# where the trunk is thicker than the limb (hip joints inside the pelvis, shoulders in the chest).
# A joint only counts as occluded when something is in front of that surface.
_JOINT_DEPTHS = _JOINT_RADII.copy()
_JOINT_DEPTHS[[1, 2]] = 0.075
_JOINT_DEPTHS[[13, 14, 16, 17]] = 0.065


class Posture(enum.IntEnum):
    SUPINE = 0
    PRONE = 1
    SIDE_LEFT = 2  # lying on the left side
    SIDE_RIGHT = 3
    SITTING = 4  # on the floor
    # Upright postures of the human corpus (adults and children, testbed/humans.py); infants never use them.
    STANDING = 5
    WALKING = 6
    ACTIVE = 7  # arms and legs anywhere in their anatomical range: sport, dance, gestures
    CHAIR = 8  # sitting on a seat, feet on the floor


# Infants' postures (the first five): their frequencies in the infant testbed.
POSTURE_WEIGHTS = np.array([0.4, 0.2, 0.1, 0.1, 0.2])
UPRIGHT = (Posture.STANDING, Posture.WALKING, Posture.ACTIVE, Posture.CHAIR)


class Part(enum.IntEnum):
    """Body part of each surface ellipsoid (decides skin or clothes when rendering)."""

    HEAD = 0
    EYE = 1
    NOSE = 2
    EAR = 3
    NECK = 4
    CHEST = 5
    BELLY = 6
    PELVIS = 7
    UPPER_ARM = 8
    FOREARM = 9
    HAND = 10
    THIGH = 11
    SHIN = 12
    FOOT = 13


# ---------------------------------------------------------------------------------------------
# Joint limits (degrees) for Euler angles (a about x, b about y, c about z), left side + midline.
# Right-side limits mirror them: a stays, b and c change sign (reflection x -> -x).
# ---------------------------------------------------------------------------------------------
_ANATOMICAL_LIMITS = {
    # joint: ((a_lo, b_lo, c_lo), (a_hi, b_hi, c_hi))
    3: ((-15, -12, -12), (25, 12, 12)),  # spine: +a bends forward
    6: ((-15, -12, -12), (25, 12, 12)),
    9: ((-15, -12, -12), (25, 12, 12)),
    12: ((-25, -35, -20), (30, 35, 20)),  # neck: b turns the head
    15: ((-25, -45, -15), (30, 45, 15)),  # head: total head turn up to 80 degrees
    1: ((-120, -40, -15), (15, 50, 60)),  # hip: -a flexes (thigh forward), +c abducts
    4: ((0, 0, 0), (150, 0, 0)),  # knee: hinge, +a bends the shin backwards only
    7: ((-30, -15, -15), (40, 15, 15)),  # ankle
    13: ((-10, -15, -10), (10, 15, 20)),  # collar: +c shrugs the shoulder up
    16: ((-70, -100, -85), (70, 35, 70)),  # shoulder: a twists, -b brings the arm forward, c lifts
    18: ((0, -145, 0), (0, 0, 0)),  # elbow: hinge, -b bends the forearm forwards only
    20: ((-80, -60, -25), (80, 60, 25)),  # wrist
}
# Narrower ranges per posture, so lying infants rest on the mat instead of pushing off it.
_POSTURE_LIMITS = {
    Posture.SUPINE: {
        1: ((-110, -40, -10), (0, 50, 60)),
        16: ((-70, -100, -85), (70, 10, 70)),
        4: ((0, 0, 0), (130, 0, 0)),
    },
    Posture.PRONE: {
        1: ((-20, -30, -10), (15, 40, 45)),
        16: ((-70, -45, -85), (70, 35, 70)),
        12: ((-35, -35, -20), (10, 35, 20)),
        15: ((-30, -45, -15), (10, 45, 15)),
        3: ((-15, -10, -10), (5, 10, 10)),
        6: ((-15, -10, -10), (5, 10, 10)),
        9: ((-15, -10, -10), (5, 10, 10)),
    },
    Posture.SIDE_LEFT: {1: ((-100, -30, -10), (10, 40, 30))},
    Posture.SIDE_RIGHT: {1: ((-100, -30, -10), (10, 40, 30))},
    Posture.SITTING: {
        1: ((-110, 0, 10), (-65, 50, 50)),
        4: ((0, 0, 0), (100, 0, 0)),
        3: ((0, -10, -8), (25, 10, 8)),
        6: ((-5, -10, -8), (20, 10, 8)),
        16: ((-70, -100, -80), (70, 20, 60)),
    },
    # Upright: arms mostly hanging (c near -85 lowers the T-pose arm), small trunk bends.
    Posture.STANDING: {
        1: ((-25, -15, -5), (12, 25, 15)),
        4: ((0, 0, 0), (25, 0, 0)),
        7: ((-10, -10, -10), (15, 10, 10)),
        16: ((-40, -70, -88), (40, 30, -20)),
        18: ((0, -100, 0), (0, 0, 0)),
        3: ((-8, -8, -8), (12, 8, 8)),
        6: ((-8, -8, -8), (12, 8, 8)),
        9: ((-8, -8, -8), (12, 8, 8)),
    },
    Posture.WALKING: {
        1: ((-40, -10, -5), (25, 20, 10)),
        4: ((0, 0, 0), (60, 0, 0)),
        7: ((-20, -10, -10), (25, 10, 10)),
        16: ((-30, -45, -88), (30, 35, -60)),
        18: ((0, -60, 0), (0, 0, 0)),
        3: ((-5, -10, -5), (10, 10, 5)),
        6: ((-5, -10, -5), (10, 10, 5)),
        9: ((-5, -10, -5), (10, 10, 5)),
    },
    Posture.ACTIVE: {1: ((-70, -30, -5), (20, 40, 45)), 4: ((0, 0, 0), (100, 0, 0))},
    Posture.CHAIR: {
        1: ((-100, -10, 0), (-75, 20, 20)),
        4: ((70, 0, 0), (110, 0, 0)),
        16: ((-40, -70, -88), (40, 20, -30)),
        18: ((0, -110, 0), (0, 0, 0)),
        3: ((-5, -8, -8), (20, 8, 8)),
        6: ((-5, -8, -8), (15, 8, 8)),
    },
}


def _limit_table(overrides: dict) -> np.ndarray:
    """(25, 3, 2) radians: lower/upper limit of every joint's 3 Euler angles."""
    table = np.zeros((NUM_JOINTS, 3, 2))
    for joint, (lo, hi) in {**_ANATOMICAL_LIMITS, **overrides}.items():
        table[joint, :, 0], table[joint, :, 1] = lo, hi
        if joint in _RIGHT_OF:  # mirror: a unchanged, b and c negate (so lo/hi swap)
            right = _RIGHT_OF[joint]
            table[right, 0] = table[joint, 0]
            table[right, 1:] = -table[joint, 1:, ::-1]
    return np.deg2rad(table)


JOINT_LIMITS = {posture: _limit_table(_POSTURE_LIMITS.get(posture, {})) for posture in Posture}


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class InfantShape:
    """Body measurements of N infants (all metres).

    body_length: (N,) nominal crown-to-sole length L.
    head_height: (N,) crown-to-chin H (~L/4).
    offsets:     (N, 25, 3) rest offset of each joint from its parent, body frame.
    joint_radii: (N, 25) radius of the limb/trunk around each joint.
    joint_depths: (N, 25) depth of each joint under the body surface (for occlusion tests).
    girth:       (N,) chubbiness factor applied to all radii.
    trunk_scale: (N,) metres per template unit of the trunk ellipsoids.
    """

    body_length: np.ndarray
    head_height: np.ndarray
    offsets: np.ndarray
    joint_radii: np.ndarray
    joint_depths: np.ndarray
    girth: np.ndarray
    trunk_scale: np.ndarray

    def take(self, index) -> InfantShape:
        """Select/repeat infants: ``index`` is anything numpy accepts on axis 0."""
        return InfantShape(*(np.asarray(getattr(self, f.name))[index] for f in dataclasses.fields(self)))


# Body proportions per kind of person, as ranges: body length L (m), head (crown to chin) over L,
# and the leg / arm lengths and limb radii relative to the infant template. An adult's head is about
# 1/8 of the height and the legs about half; a child's sit in between.
BODY_KINDS = {
    "adult": dict(
        length=(1.50, 1.95),
        head_fraction=(0.125, 0.14),
        leg=(1.17, 1.25),
        arm=(1.22, 1.32),
        radius=(0.72, 0.92),
        girth=(0.85, 1.25),
    ),
    "child": dict(
        length=(0.95, 1.45),
        head_fraction=(0.15, 0.20),
        leg=(1.05, 1.18),
        arm=(1.10, 1.22),
        radius=(0.78, 0.92),
        girth=(0.85, 1.15),
    ),
}
_LEG_JOINTS = (4, 5, 7, 8, 10, 11)
_ARM_JOINTS = (18, 19, 20, 21, 22, 23)
_TEMPLATE_LEG = 0.40  # hip joint to sole, units of L
_TEMPLATE_TRUNK = 0.35  # hip joint to chin


def _template_offsets(n: int, body_scale: np.ndarray) -> np.ndarray:
    offsets = np.zeros((n, NUM_JOINTS, 3))
    for joint, offset in _TEMPLATE_OFFSETS.items():
        offsets[:, joint] = np.asarray(offset) * body_scale[:, None]
        if joint in _RIGHT_OF:
            offsets[:, _RIGHT_OF[joint]] = offsets[:, joint] * (-1, 1, 1)
    return offsets


def sample_shapes(rng: np.random.Generator, n: int, kind: str = "infant") -> InfantShape:
    """N random bodies of one ``kind``: 'infant' (0.48-0.80 m long, newborn to ~1 year, head
    23.5-26.5% of L) or one of ``BODY_KINDS`` ('adult', 'child')."""
    if kind != "infant":
        return _sample_grown_shapes(rng, n, BODY_KINDS[kind])
    length = rng.uniform(0.48, 0.80, n)
    head_fraction = rng.uniform(0.235, 0.265, n)
    girth = rng.uniform(0.88, 1.15, n)
    leg_scale = rng.uniform(0.96, 1.04, n)
    arm_scale = rng.uniform(0.94, 1.06, n)
    # Non-head segments shrink/grow so crown-to-sole stays close to L whatever the head fraction.
    body_scale = length * (1 - head_fraction) / (1 - HEAD_FRACTION)
    head_height = length * head_fraction

    offsets = _template_offsets(n, body_scale)
    offsets[:, 24] = np.asarray(_NOSE_TIP) * head_height[:, None]
    for joint in (4, 5, 7, 8):
        offsets[:, joint] *= leg_scale[:, None]
    for joint in (18, 19, 20, 21, 22, 23):
        offsets[:, joint] *= arm_scale[:, None]
    radii = _JOINT_RADII[None] * (body_scale * girth)[:, None]
    depths = _JOINT_DEPTHS[None] * (body_scale * girth)[:, None]
    depths[:, 24] = 0.004  # the nose tip is a surface point
    return InfantShape(length, head_height, offsets, radii, depths, girth, body_scale)


def _sample_grown_shapes(rng: np.random.Generator, n: int, ranges: dict) -> InfantShape:
    """Adults or children: the infant template with a smaller head, longer legs and arms, thinner limbs;
    the trunk is scaled so that crown-to-sole is L."""
    u = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in ranges.items()}
    length, head_height = u["length"], u["length"] * u["head_fraction"]
    trunk_scale = (length - head_height) / (_TEMPLATE_TRUNK + _TEMPLATE_LEG * u["leg"])
    offsets = _template_offsets(n, trunk_scale)
    offsets[:, 24] = np.asarray(_NOSE_TIP) * head_height[:, None]
    offsets[:, _LEG_JOINTS] *= u["leg"][:, None, None]
    offsets[:, _ARM_JOINTS] *= u["arm"][:, None, None]
    thickness = trunk_scale * u["radius"] * u["girth"]
    radii = _JOINT_RADII[None] * thickness[:, None]
    depths = _JOINT_DEPTHS[None] * thickness[:, None]
    depths[:, 24] = 0.004
    return InfantShape(length, head_height, offsets, radii, depths, u["girth"], trunk_scale * u["radius"])


# ---------------------------------------------------------------------------------------------
# Rotations and forward kinematics
# ---------------------------------------------------------------------------------------------
def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """Euler angles (..., 3) = (a, b, c) radians -> rotations (..., 3, 3) = Rz(c) @ Ry(b) @ Rx(a)."""
    ca, cb, cc = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sa, sb, sc = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    rows = [
        [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
        [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
        [-sb, cb * sa, cb * ca],
    ]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def axis_rotation(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation(s) (..., 3, 3) by ``angle`` (...) radians about the x, y or z axis."""
    angle = np.asarray(angle, dtype=np.float64)
    zeros = np.zeros(angle.shape + (3,))
    zeros[..., "xyz".index(axis)] = angle
    return euler_to_matrix(zeros)


def forward_kinematics(
    offsets: np.ndarray, local_rotations: np.ndarray, root_rotation: np.ndarray, root_position: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pose the tree.

    offsets (N, 25, 3), local_rotations (N, 25, 3, 3), root_rotation (N, 3, 3) body -> world,
    root_position (N, 3). Returns joints (N, 25, 3) and global frames (N, 25, 3, 3) (columns are the
    joint's x/y/z axes in world coordinates).
    """
    n = offsets.shape[0]
    frames = np.empty((n, NUM_JOINTS, 3, 3))
    joints = np.empty((n, NUM_JOINTS, 3))
    frames[:, 0] = root_rotation @ local_rotations[:, 0]
    joints[:, 0] = root_position
    for j in range(1, NUM_JOINTS):
        p = PARENTS[j]
        frames[:, j] = frames[:, p] @ local_rotations[:, j]
        joints[:, j] = joints[:, p] + np.einsum("nij,nj->ni", frames[:, p], offsets[:, j])
    return joints, frames


# ---------------------------------------------------------------------------------------------
# Posed skeletons and their surface
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Skeletons:
    """N posed infants in the world frame (metres, Z up, mat at Z = 0).

    joints:  (N, 25, 3) SMIL-25 joint positions.
    frames:  (N, 25, 3, 3) global joint frames (columns = joint axes in world).
    angles:  (N, 25, 3) local Euler angles (radians) that produced them.
    posture: (N,) Posture codes.
    shape:   the InfantShape (batch N).
    """

    joints: np.ndarray
    frames: np.ndarray
    angles: np.ndarray
    posture: np.ndarray
    shape: InfantShape

    def __len__(self) -> int:
        return self.joints.shape[0]

    def take(self, index) -> Skeletons:
        return Skeletons(
            self.joints[index], self.frames[index], self.angles[index], self.posture[index], self.shape.take(index)
        )


@dataclasses.dataclass(frozen=True)
class Ellipsoids:
    """Surface primitives: {x : |diag(1/radii) @ axes^T @ (x - centre)| <= 1}.

    centres (..., P, 3), axes (..., P, 3, 3) (columns = principal directions), radii (..., P, 3),
    part (P,) Part codes, person (P,) bool (False for clutter like toys).
    """

    centres: np.ndarray
    axes: np.ndarray
    radii: np.ndarray
    part: np.ndarray
    person: np.ndarray

    def take(self, index) -> Ellipsoids:
        """Select along the batch axis (the axis before P)."""
        return Ellipsoids(self.centres[index], self.axes[index], self.radii[index], self.part, self.person)

    def half_extent(self, direction: np.ndarray) -> np.ndarray:
        """Half width (..., P) of each ellipsoid along the unit vector ``direction`` (3,)."""
        along = np.einsum("...ij,i->...j", self.axes, direction) * self.radii
        return np.sqrt(np.sum(along**2, axis=-1))


@dataclasses.dataclass(frozen=True)
class Cones:
    """Round-cone limb segments: the lateral surface of the convex hull of the spheres
    (start, start_radius) and (end, end_radius); the spheres themselves are separate ellipsoids.

    start, end (..., C, 3); start_radius, end_radius (..., C); part (C,) Part codes.
    """

    start: np.ndarray
    end: np.ndarray
    start_radius: np.ndarray
    end_radius: np.ndarray
    part: np.ndarray

    def take(self, index) -> Cones:
        """Select along the batch axis (the axis before C)."""
        return Cones(self.start[index], self.end[index], self.start_radius[index], self.end_radius[index], self.part)


# Limbs are round cones (the convex hull of two spheres, tapering from one joint's radius to the
# next): (from joint, to joint, part). The spheres at their ends are ellipsoids below, so a bent
# limb stays closed at the joint.
_CONES = (
    (1, 4, Part.THIGH),
    (4, 7, Part.SHIN),
    (2, 5, Part.THIGH),
    (5, 8, Part.SHIN),
    (13, 16, Part.CHEST),
    (16, 18, Part.UPPER_ARM),
    (18, 20, Part.FOREARM),
    (14, 17, Part.CHEST),
    (17, 19, Part.UPPER_ARM),
    (19, 21, Part.FOREARM),
    (12, 15, Part.NECK),
)
_JOINT_SPHERES = (
    (1, Part.THIGH),
    (2, Part.THIGH),
    (4, Part.SHIN),
    (5, Part.SHIN),
    (7, Part.FOOT),
    (8, Part.FOOT),
    (12, Part.NECK),
    (13, Part.CHEST),
    (14, Part.CHEST),
    (16, Part.UPPER_ARM),
    (17, Part.UPPER_ARM),
    (18, Part.FOREARM),
    (19, Part.FOREARM),
    (20, Part.HAND),
    (21, Part.HAND),
)
# Hands and feet: one flattened ellipsoid from the wrist/ankle to the knuckles/toes, in the
# wrist/ankle frame: (from joint, to joint, long axis, per-axis multipliers of the radius, part).
_HANDS_FEET = (
    (7, 10, 2, (1.1, 0.75, 1), Part.FOOT),
    (8, 11, 2, (1.1, 0.75, 1), Part.FOOT),
    (20, 22, 0, (1, 0.7, 1.15), Part.HAND),
    (21, 23, 0, (1, 0.7, 1.15), Part.HAND),
)
# Trunk ellipsoids: (joint whose frame they follow, centre offset (L), radii (L), part).
_TRUNK = (
    (0, (0.0, 0.0, -0.005), (0.105, 0.075, 0.075), Part.PELVIS),
    (3, (0.0, 0.03, 0.01), (0.11, 0.085, 0.085), Part.BELLY),
    (6, (0.0, 0.05, 0.0), (0.11, 0.08, 0.075), Part.CHEST),
    (9, (0.0, 0.02, -0.005), (0.125, 0.05, 0.065), Part.CHEST),
)
# Head and face ellipsoids, head frame, units of H: (centre, radii, part).
_HEAD = (
    (_HEAD_CENTRE, _HEAD_RADII, Part.HEAD),
    ((0.16, 0.40, 0.49), (0.075, 0.035, 0.03), Part.EYE),
    ((-0.16, 0.40, 0.49), (0.075, 0.035, 0.03), Part.EYE),
    ((0.0, 0.30, 0.52), (0.06, 0.06, 0.06), Part.NOSE),
    ((0.36, 0.36, 0.06), (0.04, 0.12, 0.08), Part.EAR),
    ((-0.36, 0.36, 0.06), (0.04, 0.12, 0.08), Part.EAR),
)


def _limb_primitives(joints, frames, radii):
    """Joint spheres, hands and feet -> centres (N, Pl, 3), axes (N, Pl, 3, 3), radii, parts."""
    centres, axes, rad, parts = [], [], [], []
    for j, part in _JOINT_SPHERES:
        centres.append(joints[:, j])
        axes.append(frames[:, j])
        rad.append(np.repeat(radii[:, j, None], 3, axis=1))
        parts.append(part)
    for a, b, long_axis, scale, part in _HANDS_FEET:
        bone = joints[:, b] - joints[:, a]
        r = (radii[:, a] + radii[:, b]) / 2
        piece = r[:, None] * np.asarray(scale, float)
        piece[:, long_axis] = np.maximum(0.65 * np.linalg.norm(bone, axis=-1), r)
        centres.append(joints[:, a] + bone / 2)
        axes.append(frames[:, a])
        rad.append(piece)
        parts.append(part)
    return np.stack(centres, 1), np.stack(axes, 1), np.stack(rad, 1), parts


def _attached_primitives(joints, frames, specs, joint_of, scale):
    """Ellipsoids rigidly attached to joint frames. specs: [(centre, radii, part)], scale (N,)."""
    centres, axes, rad, parts = [], [], [], []
    for (centre, radii, part), j in zip(specs, joint_of):
        offset = np.asarray(centre)[None] * scale[:, None]
        centres.append(joints[:, j] + np.einsum("nij,nj->ni", frames[:, j], offset))
        axes.append(frames[:, j])
        rad.append(np.asarray(radii)[None] * scale[:, None])
        parts.append(part)
    return np.stack(centres, 1), np.stack(axes, 1), np.stack(rad, 1), parts


def body_ellipsoids(skel: Skeletons) -> Ellipsoids:
    """The infant's ellipsoids (trunk, head, face, joint spheres, hands, feet): batch N.

    Together with ``body_cones`` they form the surface. The cones lie inside the convex hull of
    the joint spheres, so bounds and contact with the mat can use the ellipsoids alone.
    """
    shape = skel.shape
    trunk = _attached_primitives(
        skel.joints, skel.frames, [(c, r, p) for _, c, r, p in _TRUNK], [j for j, *_ in _TRUNK], shape.trunk_scale
    )
    # Trunk girth: widen/deepen (not lengthen) with the chubbiness factor.
    trunk[2][..., [0, 2]] *= shape.girth[:, None, None]
    head = _attached_primitives(skel.joints, skel.frames, _HEAD, [15] * len(_HEAD), shape.head_height)
    limbs = _limb_primitives(skel.joints, skel.frames, shape.joint_radii)
    parts = np.array(trunk[3] + head[3] + limbs[3], dtype=np.int32)
    return Ellipsoids(
        centres=np.concatenate([trunk[0], head[0], limbs[0]], axis=1),
        axes=np.concatenate([trunk[1], head[1], limbs[1]], axis=1),
        radii=np.concatenate([trunk[2], head[2], limbs[2]], axis=1),
        part=parts,
        person=np.ones(len(parts), bool),
    )


def body_cones(skel: Skeletons) -> Cones:
    """The limbs' round cones (batch N) between the joint spheres of ``body_ellipsoids``."""
    a = np.array([c[0] for c in _CONES])
    b = np.array([c[1] for c in _CONES])
    radii = skel.shape.joint_radii
    return Cones(
        skel.joints[:, a], skel.joints[:, b], radii[:, a], radii[:, b], np.array([c[2] for c in _CONES], dtype=np.int32)
    )


def face_points(skel: Skeletons) -> np.ndarray:
    """World positions (N, 4, 3) of the left/right eye and left/right ear (COCO ids 1-4)."""
    offsets = np.array([_FACE_POINTS[k] for k in (1, 2, 3, 4)])  # (4, 3), H units
    local = offsets[None] * skel.shape.head_height[:, None, None]
    return skel.joints[:, 15, None] + np.einsum("nij,nkj->nki", skel.frames[:, 15], local)


def coco17_points(skel: Skeletons) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 3D points (N, 17, 3) and their depth under the body surface (N, 17).

    13 points come from SMIL joints; eyes and ears are derived from the head frame.
    """
    points, _ = smil25_to_coco17(skel.joints)
    points[:, 1:5] = face_points(skel)
    depths, _ = smil25_to_coco17(skel.shape.joint_depths[..., None])
    depths = depths[..., 0]
    depths[:, 1:5] = 0.004
    assert points.shape[1] == NUM_COCO_KEYPOINTS
    return points, depths


# ---------------------------------------------------------------------------------------------
# Sampling poses
# ---------------------------------------------------------------------------------------------
def sample_angles(rng: np.random.Generator, postures: np.ndarray) -> np.ndarray:
    """Random joint angles (N, 25, 3) within each sample's posture limits.

    Beta(1.6, 1.6) within [lo, hi] favours mid-range poses over ones pinned at a limit.
    """
    limits = np.stack([JOINT_LIMITS[Posture(p)] for p in postures])  # (N, 25, 3, 2)
    u = rng.beta(1.6, 1.6, size=limits.shape[:-1])
    return limits[..., 0] + u * (limits[..., 1] - limits[..., 0])


# Body frame -> world for each posture before yaw: supine keeps body z (forward) up.
POSTURE_BASE = {
    Posture.SUPINE: np.eye(3),
    Posture.PRONE: axis_rotation("y", np.pi),
    Posture.SIDE_LEFT: axis_rotation("y", np.pi / 2),  # body x (left) -> world -Z
    Posture.SIDE_RIGHT: axis_rotation("y", -np.pi / 2),
    Posture.SITTING: np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]),  # x->Y, y->Z (up), z->X
}
for _upright in UPRIGHT:
    POSTURE_BASE[_upright] = POSTURE_BASE[Posture.SITTING]


def sample_root_rotations(rng: np.random.Generator, postures: np.ndarray) -> np.ndarray:
    """Body -> world rotations (N, 3, 3): posture base, a tilt, and a uniform yaw about world Z."""
    n = len(postures)
    yaw = axis_rotation("z", rng.uniform(0, 2 * np.pi, n))
    base = np.stack([POSTURE_BASE[Posture(p)] for p in postures])
    # Lying infants roll a little about their long axis (more when on the side); sitting ones lean.
    roll = np.where(
        np.isin(postures, (Posture.SIDE_LEFT, Posture.SIDE_RIGHT)), rng.uniform(-25, 25, n), rng.uniform(-10, 10, n)
    )
    lean = rng.uniform(-10, 20, n)
    tilt = np.where(
        np.isin(postures, (Posture.SITTING,) + UPRIGHT)[:, None, None],
        axis_rotation("x", np.deg2rad(lean)),
        axis_rotation("y", np.deg2rad(roll)),
    )
    return yaw @ base @ tilt


def place_on_mat(
    shape: InfantShape,
    angles: np.ndarray,
    root_rotation: np.ndarray,
    postures: np.ndarray,
    xy: np.ndarray | None = None,
) -> tuple[Skeletons, np.ndarray]:
    """Pose infants and lift them so the lowest surface point touches the mat (Z = 0).

    Returns the skeletons and the support gap (N,): how far the trunk (lying) or the pelvis
    (sitting) floats above the mat, i.e. how much a limb is propping the body up.
    """
    n = angles.shape[0]
    local = euler_to_matrix(angles)
    joints, frames = forward_kinematics(shape.offsets, local, root_rotation, np.zeros((n, 3)))
    skel = Skeletons(joints, frames, angles, np.asarray(postures), shape)
    ells = body_ellipsoids(skel)
    up = np.array([0.0, 0.0, 1.0])
    bottoms = ells.centres[..., 2] - ells.half_extent(up)  # (N, P)
    lift = -bottoms.min(axis=1)
    shift = np.zeros((n, 3)) if xy is None else np.concatenate([xy, np.zeros((n, 1))], axis=1)
    shift[:, 2] = lift
    skel = dataclasses.replace(skel, joints=joints + shift[:, None])
    trunk = np.isin(ells.part, (Part.PELVIS, Part.BELLY, Part.CHEST))
    pelvis = ells.part == Part.PELVIS
    support = np.where((np.asarray(postures) == Posture.SITTING)[:, None], pelvis[None], trunk[None])
    gap = np.where(support, bottoms, np.inf).min(axis=1) + lift
    return skel, gap


def sample_skeletons(
    rng: np.random.Generator,
    n: int,
    postures=None,
    shape: InfantShape | None = None,
    max_gap: float = 0.04,
    max_rounds: int = 200,
) -> Skeletons:
    """N random infants posed on the mat.

    postures: None (random, POSTURE_WEIGHTS), one Posture for all, or an (N,) array.
    shape: fixed bodies (batch N) or None to sample them.
    Poses where a limb would prop the trunk more than ``max_gap`` body lengths off the mat (a limb
    pushed through the floor) are resampled; the sequence of draws is fixed by the seed. (Even
    the rest pose lifts the trunk ~3% of L: an infant's big head holds the shoulders up.)
    """
    if postures is None:
        postures = rng.choice(len(POSTURE_WEIGHTS), size=n, p=POSTURE_WEIGHTS)
    postures = np.broadcast_to(np.asarray(postures, dtype=np.int64), (n,)).copy()
    shape = sample_shapes(rng, n) if shape is None else shape
    angles = np.zeros((n, NUM_JOINTS, 3))
    roots = np.zeros((n, 3, 3))
    todo = np.arange(n)
    for _ in range(max_rounds):
        angles[todo] = sample_angles(rng, postures[todo])
        roots[todo] = sample_root_rotations(rng, postures[todo])
        _, gap = place_on_mat(shape.take(todo), angles[todo], roots[todo], postures[todo])
        # Upright bodies stand on their feet: only lying / floor-sitting ones can be propped up.
        todo = todo[(gap > max_gap * shape.body_length[todo]) & (postures[todo] < Posture.STANDING)]
        if todo.size == 0:
            break
    skel, _ = place_on_mat(shape, angles, roots, postures)  # the last round's leftovers stay as is
    return skel


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def sample_motion(
    rng: np.random.Generator, num_frames: int, posture: Posture = Posture.SUPINE, frames_per_key: int = 25
) -> Skeletons:
    """A smoothly moving infant: (num_frames,) skeletons of one body and one posture.

    Random key poses every ``frames_per_key`` frames are eased into each other (smoothstep on the
    joint angles, which stays inside the joint limits as the limits form a box). The body keeps
    its place and heading; each frame is re-lifted onto the mat.
    """
    num_keys = max(2, int(np.ceil((num_frames - 1) / frames_per_key)) + 1)
    shape = sample_shapes(rng, 1)
    keys = sample_skeletons(rng, num_keys, posture, shape.take(np.zeros(num_keys, int)))
    root = keys.frames[:1, 0]  # the first key's body -> world rotation (root angles are zero)
    # Frame f sits between keys k and k+1 at fraction t.
    pos = np.arange(num_frames) / frames_per_key
    k = np.minimum(pos.astype(int), num_keys - 2)
    t = _smoothstep(np.clip(pos - k, 0.0, 1.0))[:, None, None]
    angles = (1 - t) * keys.angles[k] + t * keys.angles[k + 1]
    frame_shape = shape.take(np.zeros(num_frames, int))
    skel, _ = place_on_mat(frame_shape, angles, np.repeat(root, num_frames, axis=0), np.full(num_frames, int(posture)))
    return skel
