"""The lean batch: what the host sends the device each step, and how the device completes it.

A training sample leaves the host with its crop as RGB uint8 (1 byte per value instead of 4) and
without heatmaps. The step normalises the image on the device and renders the UDP heatmaps there
from the crop keypoints and target weights (``data.codec.encode_udp_heatmaps_device``, equal to the host codec
``data.codec.encode_udp_heatmaps`` to 2e-6: float32 against its float64). Only ``STEP_KEYS``
travel to the device; the rest of a sample (boxes, ids, augmentation records) stays on the host.

Dense targets (depth (H, W, 1), normals (H/2, W/2, 3)) travel only for the rows whose source
carries them (``dense_plan``: a source's ``dense_targets``), as float16: a COCO / SyRIP sample sends
no full-size placeholder. ``step_inputs`` packs them with their global row numbers (``depth_rows``),
and ``complete_batch`` scatters them back into the placeholder-filled (B, ...) float32 target the
losses read (-1 depth, 0 normals: what the host sample holds where a target is absent, and what the
losses mask out by ``has_depth`` / ``has_normal``).
``benchmarks/data_pipeline.py --batch-bytes`` measures the bytes per sample.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hyper_sapiens_jax.data.codec import encode_udp_heatmaps_device
from hyper_sapiens_jax.data.transforms import SAPIENS_MEAN, SAPIENS_STD
from hyper_sapiens_jax.precision import widen

Array = jax.Array

# The keys the train step reads (objective and normalisers); nothing else goes to the device.
STEP_KEYS = (
    "image",
    "keypoints",
    "target_weight",
    "depth",
    "normal",
    "has_pose",
    "has_depth",
    "has_normal",
    "is_real",
    "valid",
    "intrinsics",
)


# Dense target -> (its task flag, the placeholder value where a sample has none).
DENSE_TARGETS = {"depth": ("has_depth", -1.0), "normal": ("has_normal", 0.0)}
DENSE_TRANSPORT = np.float16  # dense targets cross to the device in half the bytes (float32 there)
_PAD_ROW = np.iinfo(np.int32).max  # a padding row's number: past any batch, dropped by the scatter


def dense_plan(sources) -> dict[str, tuple[int, ...]]:
    """Dense target -> the indices (``source_id``) of the mix's sources that carry it.

    A source says which it carries with a ``dense_targets`` attribute (``CocoKeypointSource``: none;
    ``MiniRgbdSource``, the human corpus: depth and normals); one without it is taken to carry all."""
    carried = [getattr(src, "dense_targets", tuple(DENSE_TARGETS)) for src in sources]
    return {key: tuple(i for i, keys in enumerate(carried) if key in keys) for key in DENSE_TARGETS}


def pack_dense_rows(
    batch: dict[str, np.ndarray],
    plan: dict[str, tuple[int, ...]],
    *,
    row_offset: int = 0,
    multiple: int = 1,
    names: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """The dense targets of the rows whose source carries them: ``key`` (R, ...) float16 and
    ``key_rows`` (R,) int32, their rows in the global batch (``row_offset`` + the local row).

    R is padded to a multiple of ``multiple`` (the process's devices, so the rows shard) with zero
    rows numbered past the batch. A row of another source with its task flag set would lose its
    target: that raises, naming the source (``names[source_id]``)."""
    out = {}
    for key, (flag, _) in DENSE_TARGETS.items():
        if key not in batch:
            continue
        carries = np.isin(batch["source_id"], plan.get(key, ()))
        stray = (batch[flag] > 0) & ~carries
        if stray.any():
            sid = int(batch["source_id"][np.argmax(stray)])
            name = names[sid] if sid < len(names) else f"source {sid}"
            raise ValueError(
                f"{name}: a sample has {flag} = 1, but the source does not list {key!r} in its dense_targets"
            )
        rows = np.flatnonzero(carries)
        pad = -len(rows) % multiple
        values = batch[key][rows].astype(DENSE_TRANSPORT)
        out[key] = np.concatenate([values, np.zeros((pad, *values.shape[1:]), DENSE_TRANSPORT)])
        out[key + "_rows"] = np.concatenate([rows + row_offset, np.full(pad, _PAD_ROW)]).astype(np.int32)
    return out


def step_inputs(
    batch: dict[str, np.ndarray],
    extra_keys: tuple[str, ...] = (),
    *,
    plan: dict[str, tuple[int, ...]] | None = None,
    row_offset: int = 0,
    multiple: int = 1,
    names: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """The part of a host batch the step reads (``STEP_KEYS`` and ``extra_keys`` that are present).

    With a ``plan`` (``dense_plan`` of the mix) the dense targets travel packed (``pack_dense_rows``,
    which ``row_offset``, ``multiple`` and ``names`` go to); without one, whole, as the host holds them."""
    out = {k: batch[k] for k in (*STEP_KEYS, *extra_keys) if k in batch}
    if plan is not None:
        out.update(pack_dense_rows(batch, plan, row_offset=row_offset, multiple=multiple, names=names))
    return out


def normalize_images(images: Array) -> Array:
    """RGB uint8 images (B, H, W, 3) -> float32 ``(x - mean) / std`` (Sapiens constants); float
    input is taken as already normalised and returned unchanged."""
    if jnp.issubdtype(images.dtype, jnp.floating):
        return images
    return (images.astype(jnp.float32) - jnp.asarray(SAPIENS_MEAN)) / jnp.asarray(SAPIENS_STD)


def unpack_dense_rows(values: Array, rows: Array, batch_size: int, fill: float) -> Array:
    """Packed dense targets (R, ...) and their rows (R,) -> (batch_size, ...) float32, ``fill`` in
    the rows not given; rows past the batch (padding) are dropped."""
    values = widen(values)
    return jnp.full((batch_size, *values.shape[1:]), fill, values.dtype).at[rows].set(values, mode="drop")


def complete_batch(batch: dict[str, Array], heatmap_sigma: float) -> dict[str, Array]:
    """The step's batch from the lean one: the image normalised (if uint8), packed dense targets
    unpacked (``unpack_dense_rows``) and, when the host sent none, the heatmaps rendered at a
    quarter of the input size."""
    out = dict(batch)
    out["image"] = normalize_images(batch["image"])
    for key, (_, fill) in DENSE_TARGETS.items():
        if key + "_rows" in batch:
            out[key] = unpack_dense_rows(batch[key], out.pop(key + "_rows"), batch["image"].shape[0], fill)
    if "heatmaps" not in batch:
        _, in_h, in_w, _ = batch["image"].shape
        out["heatmaps"] = encode_udp_heatmaps_device(
            batch["keypoints"], batch["target_weight"], (in_w, in_h), (in_w // 4, in_h // 4), heatmap_sigma
        )
    return out
