"""Keypoint definitions: COCO-17, SMIL-25 (MINI-RGBD) and the SMIL-25 -> COCO-17 mapping.

"Left" is always the person's left. Indices are 0-based. See docs/design.md §5.
"""

from __future__ import annotations

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_COCO_KEYPOINTS = len(COCO17_NAMES)

# Left/right pairs swapped by a horizontal flip.
COCO17_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(1, 17, 2))

# The COCO skeleton (the annotation file's 1-based "skeleton", made 0-based).
COCO17_BONES: tuple[tuple[int, int], ...] = (
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
)

# The 12 body bones (the skeleton without the face): upper arms, forearms, thighs, shins, shoulder
# and hip width, the two torso sides. Defined for MINI-RGBD's 13 points too; used for bone-ratio
# losses and the prior's plausibility metrics.
COCO17_BODY_BONES: tuple[tuple[int, int], ...] = (
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (11, 13),
    (12, 14),
    (13, 15),
    (14, 16),
    (5, 6),
    (11, 12),
    (5, 11),
    (6, 12),
)

# COCO OKS per-keypoint sigmas (pycocotools' values).
COCO17_SIGMAS = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
        dtype=np.float32,
    )
    / 10.0
)

SMIL25_NAMES: tuple[str, ...] = (
    "pelvis",
    "left_thigh",
    "right_thigh",
    "spine",
    "left_calf",
    "right_calf",
    "spine1",
    "left_foot",
    "right_foot",
    "spine2",
    "left_toes",
    "right_toes",
    "neck",
    "left_shoulder",
    "right_shoulder",
    "head",
    "left_upperarm",
    "right_upperarm",
    "left_forearm",
    "right_forearm",
    "left_hand",
    "right_hand",
    "left_fingers",
    "right_fingers",
    "nose",
)

# For each COCO-17 point, the SMIL-25 joint it comes from (-1: no counterpart, eyes and ears).
SMIL25_TO_COCO17: tuple[int, ...] = (
    24,  # nose
    -1,
    -1,
    -1,
    -1,  # eyes, ears
    16,
    17,  # shoulders (the upper-arm joints)
    18,
    19,  # elbows (forearm joints)
    20,
    21,  # wrists (hand joints)
    1,
    2,  # hips (thigh joints)
    4,
    5,  # knees (calf joints)
    7,
    8,  # ankles (foot joints)
)

# Named point subsets: "common13" are the COCO points MINI-RGBD also has.
KEYPOINT_SUBSETS: dict[str, tuple[int, ...]] = {
    "all17": tuple(range(NUM_COCO_KEYPOINTS)),
    "common13": tuple(i for i, j in enumerate(SMIL25_TO_COCO17) if j >= 0),
}


def flip_permutation(num_keypoints: int = NUM_COCO_KEYPOINTS) -> np.ndarray:
    """Index permutation that swaps left/right keypoints: ``flipped = kpts[perm]``."""
    if num_keypoints != NUM_COCO_KEYPOINTS:
        raise ValueError(f"flip pairs are defined for COCO-17, got {num_keypoints} keypoints")
    perm = np.arange(num_keypoints)
    for a, b in COCO17_FLIP_PAIRS:
        perm[a], perm[b] = b, a
    return perm


def mirrored_bone_pairs(bones: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Index pairs (i, j) of ``bones`` where bone j is bone i's left/right mirror (i < j)."""
    perm = flip_permutation()
    index = {frozenset(b): i for i, b in enumerate(bones)}
    pairs = set()
    for i, (a, b) in enumerate(bones):
        j = index.get(frozenset((int(perm[a]), int(perm[b]))))
        if j is not None and j != i:
            pairs.add((min(i, j), max(i, j)))
    return tuple(sorted(pairs))


def smil25_to_coco17(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map SMIL-25 joints ``(..., 25, C)`` to COCO-17 ``(..., 17, C)`` plus visibility ``(..., 17)``.

    Points without a SMIL counterpart are zero-filled with visibility 0; the others get 1.
    """
    joints = np.asarray(joints)
    if joints.shape[-2] != len(SMIL25_NAMES):
        raise ValueError(f"expected 25 SMIL joints on axis -2, got shape {joints.shape}")
    src = np.array(SMIL25_TO_COCO17)
    out = np.zeros(joints.shape[:-2] + (NUM_COCO_KEYPOINTS, joints.shape[-1]), joints.dtype)
    has = src >= 0
    out[..., has, :] = joints[..., src[has], :]
    visible = np.broadcast_to(has.astype(np.float32), out.shape[:-1]).copy()
    return out, visible
