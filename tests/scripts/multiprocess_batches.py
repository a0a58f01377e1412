"""Run as one of N local JAX processes: build the stage-2 training batches of this process and
place them as global arrays; process 0 writes the gathered per-batch composition to a JSON file.

  python multiprocess_batches.py PROCESS_ID NUM_PROCESSES PORT TESTBED_ROOT OUT_JSON
"""

import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, nproc, port, root, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from hyper_sapiens_jax.data.pipeline import train_dataset, train_iterator  # noqa: E402
from hyper_sapiens_jax.jobs import inputs  # noqa: E402
from hyper_sapiens_jax.sharding import global_batch, make_mesh  # noqa: E402
from hyper_sapiens_jax.testbed.writer import Paths  # noqa: E402
from tests.helpers import tiny_data_config  # noqa: E402

config = tiny_data_config(Paths.under(root, 2), stage=2)
mix, _ = inputs.build_train_mix(config)
ds = train_dataset(
    mix,
    inputs.sample_config(config),
    seed=0,
    num_batches=3,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
)
mesh = make_mesh()
result = []
for local in train_iterator(ds):
    batch = global_batch({k: local[k] for k in ("is_real", "source_id", "ann_id", "image")}, mesh)
    gathered = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for k, v in batch.items()}
    result.append(
        {
            "global_shape": list(batch["image"].shape),
            "local_rows": len(local["is_real"]),
            "real": int(gathered["is_real"].sum()),
            "per_source": np.bincount(gathered["source_id"], minlength=len(mix)).tolist(),
            "ann_ids": gathered["ann_id"].tolist(),
        }
    )
if pid == 0:
    Path(out).write_text(json.dumps({"names": [e.name for e in mix], "batches": result}))
jax.distributed.shutdown()
