"""Smoke runs of the benchmark scripts at ``tiny`` (1-2 steps): they must run and report what they
promise. Nothing here times anything; the figures come from the scripts themselves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, subprocess_env


def load_script(name: str):
    """benchmarks/<name>.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_both_frameworks_share_weights_batch_and_loss(tmp_path):
    """JAX and the torch reference start from the same weights on the same batch with a loss of the
    same form, so their first-step losses agree (float32); the JSON holds every promised field."""
    out = tmp_path / "step.json"
    argv = ["--arch", "tiny", "--image-size", "64,48", "--heads", "pose,depth,normal", "--batch", "2"]
    assert load_script("train_step").main([*argv, "--framework", "both", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for name in ("jax", "torch"):
        r = result[name]
        assert r["step_s"] > 0 and r["img_per_s"] == pytest.approx(2 / r["step_s"])
        assert r["tflop_per_img"] > 0 and r["mfu"] is None  # CPU: no known peak
        assert len(r["step_s_all"]) == 2
    assert result["jax"]["peak_bytes"] > 0 and result["torch"]["peak_bytes"] is None
    assert result["jax"]["initial_loss"] == pytest.approx(result["torch"]["initial_loss"], rel=1e-5)
    assert result["torch_over_jax"] == pytest.approx(result["torch"]["step_s"] / result["jax"]["step_s"])
    # XLA's count of the compiled step: ~3x the forward, plus the optimizer's elementwise work.
    assert 2.5 < result["jax"]["xla_tflop_per_img"] / (result["jax"]["tflop_per_img"] / 3) < 4.0


def test_train_step_frozen_prefix_costs_fewer_flops(tmp_path):
    """Training the last block with pos_embed frozen skips the prefix's backward: XLA counts fewer
    FLOPs than for the whole model, and fewer than with pos_embed trainable; the peak MFU option holds."""
    script = load_script("train_step")
    base = ["--arch", "tiny", "--image-size", "64,48", "--heads", "pose", "--batch", "2", "--steps", "1"]
    counts = {}
    for name, extra in {
        "all": [],
        "last1": ["--trainable-blocks", "1"],
        "last1_frozen_pos": ["--trainable-blocks", "1", "--freeze-pos-embed"],
    }.items():
        out = tmp_path / f"{name}.json"
        assert script.main([*base, *extra, "--peak-tflops", "1", "--out", str(out)]) == 0
        result = json.loads(out.read_text())["jax"]
        counts[name] = result["xla_tflop_per_img"]
        assert result["mfu"] == pytest.approx(result["tflop_per_img"] * result["img_per_s"] / 1.0)
    assert counts["last1_frozen_pos"] < counts["last1"] < counts["all"]


def test_train_step_refuses_bad_arguments():
    script = load_script("train_step")
    with pytest.raises(SystemExit):
        script.parse_args(["--image-size", "100,48"])
    with pytest.raises(SystemExit):
        script.parse_args(["--heads", "pose,segmentation"])


def test_fsdp_memory_shards_the_state_over_the_devices(tmp_path):
    """The AOT-compiled FSDP step on 4 fake devices: the per-device arguments shrink well below the
    one-device ones (not to a quarter at ``tiny``: tensors under 2^14 elements stay replicated), and
    a bigger per-device batch needs more memory."""
    results = {}
    for devices in (1, 4):
        out = tmp_path / f"fsdp{devices}.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "fsdp_memory.py"), "--arch", "tiny", "--image-size", "64,48"]
        cmd += ["--devices", str(devices), "--per-device-batch", "1,2", "--dtype", "float32", "--out", str(out)]
        subprocess.run(cmd, check=True, env=subprocess_env(), cwd=REPO, capture_output=True, timeout=600)
        results[devices] = json.loads(out.read_text())
    one, four = (results[d]["rows"] for d in (1, 4))
    assert results[4]["args"]["fsdp"] == 4 and one[0]["params"] == four[0]["params"]
    # Arguments: the state shard (params, Adam moments, EMA: 4 x float32 per parameter) + the batch.
    state_bytes = 16 * one[0]["params"]
    assert one[0]["argument_bytes"] > state_bytes
    assert four[0]["argument_bytes"] < 0.5 * one[0]["argument_bytes"]  # measured 0.42
    for rows in (one, four):
        assert rows[1]["per_device_bytes"] > rows[0]["per_device_bytes"]
        assert (
            rows[0]["per_device_bytes"]
            == rows[0]["argument_bytes"] + rows[0]["output_bytes"] + rows[0]["temp_bytes"] - rows[0]["alias_bytes"]
        )
    assert set(results[4]["per_device_bytes"]) == {"1", "2"}


def test_heads_benchmark_times_every_case(tmp_path):
    """The deconv, 1x1 conv and head cases each time their variants and the torch reference."""
    out = tmp_path / "heads.json"
    small = ["--embed", "16", "--deconv-ch", "8", "--pose-ch", "8", "--depth-ch", "8", "--normal-ch", "8"]
    load_script("heads").main(
        ["--reps", "1", "--batch", "1", "--feature-hw", "2", "2", *small, "--conv-ch", "8", "--conv-hw", "4", "3"]
        + ["--out", str(out)]
    )
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert len(rows) == 4 + 1 + 3  # four deconvs, one 1x1 conv, three heads
    conv = rows["1x1 conv 8->8 4x3"]
    assert set(conv["median_s"]) == {"old", "new", "torch"} and conv["sub3x3_over_new"] is None
    deconv = next(r for n, r in rows.items() if n.startswith("deconv"))
    assert set(deconv["median_s"]) == {"old", "3x3", "new", "torch"} and deconv["new_over_torch"] > 0
    head = next(r for n, r in rows.items() if n.startswith("normal head"))  # torch holds the same weights
    assert set(head["median_s"]) == {"old", "3x3", "new", "torch"}


def test_data_pipeline_reports_rates_bytes_and_cores(testbed):
    import argparse

    bench = load_script("data_pipeline")
    args = argparse.Namespace(samples=2, warmup=0, seed=0)
    sources = bench.build_sources(testbed, ["syrip_real", "syrip_syn", "mini_rgbd"])
    rows = [r for name, src in sources.items() for r in bench.measure_source(name, src, None, [(64, 48)], args)]
    assert {r["stage"] for r in rows} == {"decode floor", "source read", "sample 64x48"}
    assert all(r["samples_per_s"] > 0 and r["samples"] == 2 for r in rows)
    sizes = [r for name, src in sources.items() for r in bench.sample_bytes(name, src, [(64, 48)], args)]
    per = {r["source"]: r for r in sizes}
    image = 64 * 48 * 3
    # A SyRIP sample sends its uint8 crop and small keys only; MINI-RGBD its float16 depth and normals too.
    assert image < per["syrip_real"]["device_bytes"] < image + 1000
    dense = 2 * (64 * 48 + 32 * 24 * 3)
    assert per["mini_rgbd"]["device_bytes"] - per["syrip_real"]["device_bytes"] == dense + 2 * 4  # + two row numbers
    assert per["mini_rgbd"]["whole_dense_bytes"] == per["syrip_real"]["whole_dense_bytes"]
    stages = bench.stage_bytes(sizes)
    assert [s["stage"] for s in stages] == ["stage1", "stage2", "stage3"]
    assert stages[0]["device_bytes"] > stages[2]["device_bytes"]  # stage 3 is mostly SyRIP real
    cores = bench.worker_cores(rows, (64, 48), ["tiny"], peak_tflops=100.0, mfu=0.5)
    assert len(cores) == 3 * 2 and all(c["cores"] > 0 for c in cores)
    c = cores[0]
    assert c["cores"] == pytest.approx(c["img_per_s"] / c["worker_samples_per_s"])


def test_coco_validation_reports_each_stage(tmp_path):
    """The validation benchmark reads a valid synthetic file (every annotation a record) and
    reports each stage's time."""
    out = tmp_path / "coco.json"
    assert load_script("coco_validation").main(["--annotations", "300", "--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["annotations"] == 300 and result["file_mb"] > 0
    for key in ("json_s", "schema_s", "consistency_s", "reader_s"):
        assert result[key] > 0
    assert result["validation_s"] == pytest.approx(result["schema_s"] + result["consistency_s"])


def test_foundation_ladder_rows_are_valid_runs_and_patch8_starts_exactly(tmp_path):
    """Every ladder row builds a pose run and a fine-tune that pass the jobs' start-up checks, rows
    with the same corpus settings share one corpus, and the patch-8 row's start is exactly the
    patch-16 MAE backbone on the image upsampled 2x (its kernel summed over 2x2 blocks)."""
    import jax.numpy as jnp
    import numpy as np

    from convert_weights.torch_to_flax import convert
    from hyper_sapiens_jax.models.weights import build_model, load_weights
    from hyper_sapiens_jax.training import adapters

    ladder = load_script("foundation_ladder")
    corpora = {}
    for name in ladder.ROWS:
        fc, ft = ladder.row_configs(name, tmp_path)
        for run in (fc.pose, ft):
            adapters.check_sections(run)
            adapters.model_config(run)
        corpora.setdefault(fc.data.humans_dir, []).append(name)
    assert sorted(map(sorted, corpora.values()))[0] == ["base", "input192", "lr1e-3", "patch8", "sigma1"]
    pretrain = ladder.FOUNDATION_DIR / ladder.PRETRAIN_FILE
    weights = ladder.pretrain_weights(pretrain, "cpu_p8", (64, 48), tmp_path / "p8")
    config8, params8 = load_weights(weights)
    assert config8.arch == "cpu_p8" and config8.patch_padding == 1
    config16, params16, _ = convert({"pretrain": pretrain}, (128, 96))
    images = np.random.default_rng(0).standard_normal((1, 64, 48, 3)).astype(np.float32)
    f8 = build_model(config8, params8)(jnp.asarray(images))["features"]
    f16 = build_model(config16, params16)(jnp.asarray(images.repeat(2, 1).repeat(2, 2)))["features"]
    np.testing.assert_allclose(np.asarray(f8), np.asarray(f16), atol=1e-4)
