"""Grain pipelines: exact-ratio mixed training batches across processes, and a pad+mask eval pass.

Training: one ``MapDataset`` per source, shuffled, repeated and mapped through the random top-down
transform as one global (lazy) sequence, then sliced per JAX process *before* anything is mixed
(``ds[process_index::process_count]``: each process decodes only its rows) and batched at that
source's own per-process count; the per-source batches are zipped and concatenated. The global
batches do not depend on the number of processes. Every global batch therefore holds exactly the configured number of
samples of each source (e.g. stage 2: 1:1 synthetic:real). The iterator's state is a small dict
(``get_state`` / ``set_state``) that Orbax saves with ``grain.checkpoint.CheckpointSave``.

Evaluation: every sample of the process's slice exactly once, the last batch padded with copies
flagged ``valid = 0``; all processes yield the same number of batches (global arrays need it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from hyper_sapiens_jax.data.topdown import EvalTransform, SampleConfig, TrainTransform

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class MixEntry:
    """A source and how many of its samples every *global* batch holds."""

    name: str
    source: Any
    count: int


def mix_counts(weights: dict[str, int], batch_size: int) -> dict[str, int]:
    """Integer ratio weights (e.g. {'syrip_real': 8, 'syrip_syn': 1, 'mini_rgbd': 1}) -> exact counts."""
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mix weights must be non-negative with a positive sum, got {weights}")
    if batch_size % total:
        raise ValueError(
            f"batch size {batch_size} is not a multiple of the mix total {total} "
            f"({weights}): the per-source counts would not be exact"
        )
    return {name: batch_size * w // total for name, w in weights.items() if w}


def _concat(batches: Sequence[Batch]) -> Batch:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _add_source_id(index: int):
    def fn(batch: Batch) -> Batch:
        return {**batch, "source_id": np.full(len(batch["valid"]), index, np.int32)}

    return fn


def train_dataset(
    mix: Sequence[MixEntry],
    sample_cfg: SampleConfig,
    *,
    seed: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """A MapDataset of this process's training batches (dicts of numpy arrays), ``num_batches`` long.

    Each source is shuffled and augmented as one global sequence (same seed everywhere); global batch
    ``b`` of a source holds its elements ``b * count ... (b + 1) * count - 1``, and process ``p`` takes
    every ``process_count``-th of them starting at ``p``. So the global batches are the same for any
    number of processes (up to the row order), each process decodes only its own rows, and each
    process gets ``count / process_count`` samples of each source per batch. ``source_id`` records
    which ``mix`` entry a sample came from.
    """
    parts = []
    for i, entry in enumerate(mix):
        ds = source_batches(
            entry.name,
            entry.source,
            TrainTransform(sample_cfg),
            seed=seed + 7919 * i,
            count=entry.count,
            num_batches=num_batches,
            process_index=process_index,
            process_count=process_count,
        )
        parts.append(ds.map(_add_source_id(i)))
    return grain.experimental.ZipMapDataset(parts).map(_concat)


def source_batches(
    name: str,
    source: Any,
    transform: grain.transforms.RandomMap,
    *,
    seed: int,
    count: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """This process's ``num_batches`` batches of ``count / process_count`` samples of one source.

    The source is shuffled (``seed``), repeated and mapped through ``transform`` as one global
    sequence; global batch ``b`` holds its elements ``b * count ... (b + 1) * count - 1`` and process
    ``p`` takes every ``process_count``-th of them from ``p``, so the global batches are the same for
    any number of processes and each process decodes only its own rows. Errors name the source."""
    if count <= 0 or count % process_count:
        raise ValueError(f"{name}: {count} samples per batch do not split over {process_count} processes")
    if len(source) == 0:
        raise ValueError(f"{name}: the source is empty")
    epochs = math.ceil(num_batches * count / len(source)) + 1
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(epochs).random_map(transform)
    return ds[process_index::process_count].batch(count // process_count, drop_remainder=True)[:num_batches]


def train_iterator(
    dataset: grain.MapDataset, *, worker_count: int = 0, worker_buffer_size: int = 2
) -> grain.DatasetIterator:
    """An iterator over ``train_dataset`` batches, decoded in ``worker_count`` processes (0: in-process).

    Its ``get_state()`` / ``set_state()`` make resumption exact.
    """
    ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0 if worker_count else 2))
    if worker_count:
        # grain 0.2.18's workers read absl flags; outside an absl app (library use, tests) nobody
        # parsed them, so let their defaults apply.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=worker_buffer_size)
        )
    return iter(ds)


def eval_batches(
    source: Any, sample_cfg: SampleConfig, local_batch: int, *, process_index: int = 0, process_count: int = 1
) -> Iterator[Batch]:
    """This process's share of ``source``, each sample exactly once, in batches of ``local_batch``.

    The final batches are padded with copies of a real sample marked ``valid = 0``; every process
    yields ``ceil(max share / local_batch)`` batches so global arrays line up across processes.
    """
    every = grain.MapDataset.source(source).map(EvalTransform(sample_cfg))
    share = every[process_index::process_count]
    longest = math.ceil(len(source) / process_count)
    padding = None
    for b in range(math.ceil(longest / local_batch)):
        samples = [share[j] for j in range(b * local_batch, min((b + 1) * local_batch, len(share)))]
        if len(samples) < local_batch:
            if padding is None:  # any real sample will do: it is masked out by valid = 0
                padding = {**(samples[0] if samples else every[0]), "valid": np.float32(0)}
            samples += [padding] * (local_batch - len(samples))
        yield {k: np.stack([s[k] for s in samples]) for k in samples[0]}
