"""Grain pipelines: exact per-batch composition (1 and 2 processes), resumable iterators, eval coverage."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hyper_sapiens_jax.data.pipeline import eval_batches, mix_counts, train_dataset, train_iterator
from hyper_sapiens_jax.jobs import inputs
from tests.helpers import REPO, free_port, subprocess_env, tiny_data_config


@pytest.fixture(scope="module")
def stage2(testbed):
    config = tiny_data_config(testbed, stage=2)
    mix, _ = inputs.build_train_mix(config)
    return config, mix, inputs.sample_config(config)


def test_mix_counts():
    assert mix_counts({"syrip_real": 8, "syrip_syn": 1, "mini_rgbd": 1}, 20) == {
        "syrip_real": 16,
        "syrip_syn": 2,
        "mini_rgbd": 2,
    }
    with pytest.raises(ValueError, match="batch size 12 is not a multiple of the mix total 10"):
        mix_counts({"syrip_real": 8, "syrip_syn": 1, "mini_rgbd": 1}, 12)


@pytest.mark.parametrize("stage, real_fraction", [(1, 0.0), (2, 0.5), (3, 0.8)])
def test_every_batch_has_the_stage_ratio(testbed, stage, real_fraction):
    config = tiny_data_config(testbed, stage=stage)
    mix, _ = inputs.build_train_mix(config)
    ds = train_dataset(mix, inputs.sample_config(config), seed=1, num_batches=4)
    counts = {e.name: e.count for e in mix}
    for batch in train_iterator(ds):
        assert len(batch["image"]) == config.batch_size
        assert batch["is_real"].sum() == real_fraction * config.batch_size
        per_source = np.bincount(batch["source_id"], minlength=len(mix))
        assert dict(zip([e.name for e in mix], per_source.tolist())) == counts
        assert batch["image"].shape[1:] == (64, 48, 3) and batch["image"].dtype == np.uint8
        assert "heatmaps" not in batch and batch["target_weight"].shape[1:] == (17,)
        mini = batch["source_id"] == [e.name for e in mix].index("mini_rgbd")
        assert (batch["has_depth"][mini] == 1).all() and (batch["has_depth"][~mini] == 0).all()


def test_two_processes_split_the_one_process_batches(stage2):
    """Each process holds half of every source's rows, and together they hold exactly the
    one-process batch (same records, same augmentation), whatever the process count."""
    config, mix, cfg = stage2
    per_process = [
        list(train_iterator(train_dataset(mix, cfg, seed=0, num_batches=2, process_index=p, process_count=2)))
        for p in range(2)
    ]
    single = list(train_iterator(train_dataset(mix, cfg, seed=0, num_batches=2)))
    for b in range(2):
        halves = [per_process[p][b] for p in range(2)]
        for half in halves:
            assert len(half["image"]) == config.batch_size // 2
            assert half["is_real"].sum() == config.batch_size // 4
        for i, entry in enumerate(mix):
            assert sum(len(h["ann_id"][h["source_id"] == i]) for h in halves) == entry.count

    def rows(batch):
        return sorted(
            (int(s), int(a), batch["image"][j].tobytes())
            for j, (s, a) in enumerate(zip(batch["source_id"], batch["ann_id"]))
        )

    for b in range(2):
        both = {k: np.concatenate([per_process[0][b][k], per_process[1][b][k]]) for k in single[b]}
        assert rows(both) == rows(single[b])


def test_two_jax_processes_build_exact_global_batches(testbed, tmp_path):
    """Two local processes (jax.distributed, gloo): global arrays hold exactly the stage-2 counts."""
    port, out = free_port(), tmp_path / "result.json"
    env = subprocess_env()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests/scripts/multiprocess_batches.py"),
                str(i),
                "2",
                str(port),
                str(testbed.root),
                str(out),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    result = json.loads(out.read_text())
    counts = dict(zip(result["names"], [4, 8, 4]))  # sorted names: mini_rgbd, syrip_real, syrip_syn
    assert result["names"] == ["mini_rgbd", "syrip_real", "syrip_syn"]
    for b in result["batches"]:
        assert b["global_shape"] == [16, 64, 48, 3] and b["local_rows"] == 8
        assert b["real"] == 8
        assert dict(zip(result["names"], b["per_source"])) == counts


def test_restored_iterator_yields_the_identical_next_batch(stage2):
    _, mix, cfg = stage2
    ds = train_dataset(mix, cfg, seed=3, num_batches=6)
    it = train_iterator(ds)
    next(it), next(it)
    state = it.get_state()
    expected = next(it)
    fresh = train_iterator(train_dataset(mix, cfg, seed=3, num_batches=6))
    fresh.set_state(state)
    got = next(fresh)
    assert set(got) == set(expected)
    for k in expected:
        assert np.array_equal(got[k], expected[k]), k
    other = next(train_iterator(train_dataset(mix, cfg, seed=4, num_batches=6)))
    assert not np.array_equal(other["image"], expected["image"])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_visits_every_sample_once(testbed, process_count):
    config = tiny_data_config(testbed)
    src = inputs.build_source("val", inputs.resolved_paths(config.data))
    cfg = inputs.sample_config(config)
    per_process = [
        list(eval_batches(src, cfg, 3, process_index=p, process_count=process_count)) for p in range(process_count)
    ]
    assert len({len(b) for b in per_process}) == 1  # same number of batches everywhere
    seen = [int(i) for batches in per_process for b in batches for i, v in zip(b["ann_id"], b["valid"]) if v]
    assert sorted(seen) == sorted(r["ann_id"] for r in src.records)
    last = per_process[0][-1]
    assert (last["image"].shape[0] == 3 and last["valid"].sum() < 3) or len(src) % (3 * process_count) == 0
    first = per_process[0][0]
    assert (first["rotation"] == 0).all() and (first["flipped"] == 0).all()


def test_global_batch_on_8_fake_devices(tmp_path):
    code = """
import numpy as np, jax
from hyper_sapiens_jax.sharding import make_mesh, global_batch
mesh = make_mesh(data=4, fsdp=2)
b = global_batch({"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}, mesh)["x"]
assert b.shape == (16, 3) and len(b.sharding.device_set) == 8
assert b.sharding.spec[0] == ("data", "fsdp")
rows = sorted(int(s.data[0, 0]) // 3 for s in b.addressable_shards)
assert rows == list(range(0, 16, 2)), rows
assert all(s.data.shape == (2, 3) for s in b.addressable_shards)
print("ok")
"""
    env = subprocess_env(8)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def _preview(config_args, out, env_extra=None):
    cmd = [
        sys.executable,
        "-m",
        "hyper_sapiens_jax.preview",
        "--config",
        str(REPO / "configs/stage2.py:tiny"),
        *config_args,
        "--batches",
        "2",
        "--out",
        str(out),
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})},
    )


def test_preview_cli_summary_and_bad_records(testbed, tmp_path):
    ann = json.loads(testbed.train_real_json.read_text())
    bad_id = ann["annotations"][0]["id"]
    ann["annotations"][0]["keypoints"][0] = float("nan")
    bad_ann = tmp_path / "real.json"
    bad_ann.write_text(json.dumps(ann))
    args = [
        "--config.data.source=files",
        f"--config.data.syrip_syn_ann={testbed.train_syn_json}",
        f"--config.data.syrip_syn_images={testbed.train_syn_images}",
        f"--config.data.syrip_real_ann={bad_ann}",
        f"--config.data.syrip_real_images={testbed.train_real_images}",
        f"--config.data.mini_rgbd_root={testbed.mini_rgbd}",
        "--config.data.mini_rgbd_sequences=(1,2)",
        "--config.model.image_size=(64, 48)",
    ]
    r = _preview(args, tmp_path / "fail")
    assert (
        r.returncode != 0
        and f"{bad_ann} annotation {bad_id}: field 'keypoints'[0]: input should be a finite number" in r.stderr
    )
    r = _preview(args + ["--config.data.skip_bad_records=True"], tmp_path / "ok")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert [b["counts"] for b in summary["batches"]] == [{"synthetic": 8, "real": 8}] * 2
    assert summary["batches"][0]["shapes"]["image"] == [16, 64, 48, 3]
    assert summary["skipped"] == [
        {
            "file": f"{bad_ann} annotation {bad_id}",
            "reason": "field 'keypoints'[0]: input should be a finite number (got nan)",
        }
    ]
    assert (tmp_path / "ok" / "batch_000.png").stat().st_size > 10_000


def test_worker_processes_give_the_same_batches_and_state(stage2):
    """mp_prefetch workers: identical batches to in-process decoding, and resumable state."""
    _, mix, cfg = stage2
    ds = train_dataset(mix, cfg, seed=5, num_batches=4)
    reference = list(train_iterator(ds))
    it = train_iterator(ds, worker_count=2)
    first, _ = next(it), next(it)
    state = it.get_state()
    third = next(it)
    restored = train_iterator(ds, worker_count=2)
    restored.set_state(state)
    again = next(restored)
    for k in reference[0]:
        assert np.array_equal(first[k], reference[0][k]), k
        assert np.array_equal(third[k], reference[2][k]), k
        assert np.array_equal(again[k], reference[2][k]), k
    del it, restored  # stop the worker processes before the fixtures go
