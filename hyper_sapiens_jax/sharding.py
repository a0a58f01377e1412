"""Device mesh and shardings over its ('data', 'fsdp') axes.

Batches are split over both axes. FSDP shards the largest dimension of each big parameter tensor
that the 'fsdp' axis divides; small tensors (norm scales, biases) and tensors without a divisible
dimension stay replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A ('data', 'fsdp') mesh over ``devices`` (all by default); -1 means "the rest".

    Auto axis types: explicit mode rejects sharded contractions without an out_sharding.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1:
        if n % fsdp:
            raise ValueError(f"fsdp={fsdp} does not divide the {n} devices")
        data = n // fsdp
    if fsdp == -1:
        if n % data:
            raise ValueError(f"data={data} does not divide the {n} devices")
        fsdp = n // data
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} needs {data * fsdp} devices, have {n}")
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto,) * 2)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global ``jax.Array``s sharded over the mesh's batch axes.

    Every process passes its own slice (same shapes on every process); the global batch is their
    concatenation in process order.
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


MIN_FSDP_SIZE = 2**14  # elements; smaller tensors are not worth a gather


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int = MIN_FSDP_SIZE) -> P:
    """The PartitionSpec of one parameter: its largest 'fsdp'-divisible dim sharded, else replicated."""
    size = 1
    for d in shape:
        size *= d
    if fsdp <= 1 or size < min_size:
        return P()
    dims = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in dims:
        if shape[i] % fsdp == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def param_shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings (same structure as ``tree`` of arrays / ShapeDtypeStructs) for FSDP over ``mesh``."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), fsdp)), tree)


def replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)
