"""Parameter shardings for data parallel + FSDP over the ('data', 'fsdp') mesh.

FSDP shards the largest dimension of each big tensor that the 'fsdp' axis divides; small tensors
(norm scales, biases) and tensors without a divisible dimension stay replicated. Batches are split
over both axes (``hyper_sapiens_jax.sharding.batch_sharding``).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MIN_FSDP_SIZE = 2 ** 14  # elements; smaller tensors are not worth a gather


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
