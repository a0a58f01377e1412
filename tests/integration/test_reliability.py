"""Faults: damaged checkpoints (fine-tuning runs, converted weights directories), a workdir held by
another job, and a killed run's workdir resuming."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyper_sapiens_jax.config import base_config
from hyper_sapiens_jax.jobs import finetune, inputs
from hyper_sapiens_jax.models import Sapiens
from hyper_sapiens_jax.models.weights import WeightsError, abstract_model, flat_params, load_weights, save_weights
from hyper_sapiens_jax.sharding import make_mesh
from hyper_sapiens_jax.training import checkpoint as ckpt
from hyper_sapiens_jax.training import trainer
from hyper_sapiens_jax.training.monitor import LOCK_FILE, WorkdirInUseError, workdir_lock
from tests.helpers import REPO, free_port, subprocess_env, truncate_largest
from tests.helpers.train import MODEL, stage_command


def _run_dir(tmp_path: Path, steps=(1, 2, 3)) -> Path:
    """A training workdir of the tiny model with a checkpoint at each of ``steps`` (EMA = raw + step)."""
    config = base_config("tiny")
    config.model.image_size = MODEL.image_size
    graphdef = nnx.graphdef(abstract_model(MODEL))
    phase = trainer.compile_phase(
        config, MODEL, make_mesh(devices=jax.devices()[:1]), graphdef, 2, trainer.make_objective(config, None, None)
    )
    state = trainer.fresh_state(phase, nnx.state(Sapiens(MODEL, rngs=nnx.Rngs(0)), nnx.Param))
    MODEL.save(tmp_path / ckpt.MODEL_CONFIG_FILE)
    meta = {"stage": 1, "arch": "tiny", **phase.trainable.meta()}
    with ckpt.manager(tmp_path / ckpt.CHECKPOINT_DIR, every=1, keep=len(steps), keep_best=0) as mngr:
        for step in steps:
            ema = jax.tree.map(lambda x, s=step: x + float(s), state.params)
            ckpt.save(mngr, state.replace(step=jnp.int32(step), ema=ema), None, meta, force=True)
        mngr.wait_until_finished()
    return tmp_path


KEY = ("heads", "pose", "final_layer", "kernel")  # trainable: its EMA is raw + step


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_readable_one(tmp_path, caplog):
    """Truncated file in step 3, deleted item in step 2: loading the latest weights warns naming
    each damaged step and reads step 1; with every step damaged the error names the directory and
    the fix. A resuming run moves the damaged steps aside (kept) and can save their numbers again."""
    run = _run_dir(tmp_path)
    _, raw, _ = ckpt.load_run_params(run, raw=True)
    truncate_largest(run / "checkpoints" / "3" / "ema")
    shutil.rmtree(run / "checkpoints" / "2" / "ema")
    with caplog.at_level(logging.WARNING):
        _, ema, step = ckpt.load_run_params(run)
    assert step == 1
    np.testing.assert_allclose(ema[KEY], raw[KEY] + 1.0, atol=1e-6)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(run / "checkpoints" / "3") in warned and str(run / "checkpoints" / "2") in warned
    with pytest.raises(WeightsError, match=r"unreadable checkpoint"):
        ckpt.load_run_params(run, step=3)  # an explicit step does not fall back

    with ckpt.manager(run / ckpt.CHECKPOINT_DIR, every=1, keep=3, keep_best=0) as mngr:
        step, meta = ckpt.newest_readable(
            mngr, lambda s: (ckpt.read_meta(mngr, s), ckpt.load_run_params(run, step=s)), set_aside=True
        )
        assert step == 1 and sorted(mngr.all_steps()) == [1]
    assert (run / "checkpoints" / "3.damaged").is_dir() and (run / "checkpoints" / "2.damaged").is_dir()

    truncate_largest(run / "checkpoints" / "1" / "ema")
    with pytest.raises(ckpt.CheckpointError, match=r"no readable checkpoint.*steps \[1\] are damaged.*--workdir"):
        ckpt.load_run_params(run)


def test_damaged_weights_directories_name_the_file(tmp_path):
    params = flat_params(Sapiens(MODEL, rngs=nnx.Rngs(0)))
    good = save_weights(tmp_path / "w", MODEL, params)
    assert set(load_weights(good)[1]) == set(params)
    cases = {
        "missing config": lambda d: (d / "model_config.json").unlink(),
        "bad config json": lambda d: (d / "model_config.json").write_text("{arch: "),
        "wrong config field": lambda d: (d / "model_config.json").write_text(json.dumps({"arch": "tiny", "x": 1})),
        "truncated params": lambda d: truncate_largest(d / "params"),
    }
    for name, damage in cases.items():
        d = tmp_path / name.replace(" ", "_")
        shutil.copytree(good, d)
        damage(d)
        with pytest.raises(WeightsError) as e:
            load_weights(d)
        assert str(d) in str(e.value), (name, str(e.value))


def test_a_second_job_on_the_same_workdir_refuses_naming_the_first(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from hyper_sapiens_jax.training.monitor import workdir_lock\n"
            f"with workdir_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(120)",
        ],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        in_use = rf"{tmp_path} is in use by another job \(pid {holder.pid} on"
        with pytest.raises(WorkdirInUseError, match=in_use), workdir_lock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait(timeout=30)
    with workdir_lock(tmp_path):
        assert f"pid {os.getpid()} on " in (tmp_path / LOCK_FILE).read_text()
    with workdir_lock(tmp_path):  # released on exit
        pass


def test_a_run_resumes_past_a_damaged_checkpoint(testbed, tmp_path):
    """End to end: the latest checkpoint of a stage run truncated; the same command warns, sets it
    aside, resumes from the one before and finishes."""
    settings = dict(num_steps=6, **{"checkpoint.every": 2, "eval.every": 1000, "checkpoint.keep": 3})
    cmd = stage_command(testbed, tmp_path, **{**settings, "num_steps": 4})
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    truncate_largest(tmp_path / "checkpoints" / "4" / "params")
    t0 = time.time()
    r = subprocess.run(
        stage_command(testbed, tmp_path, **settings), env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert f"{tmp_path / 'checkpoints' / '4'} is unreadable" in out and "at step 2" in out, out[-3000:]
    assert (tmp_path / "checkpoints" / "4.damaged").is_dir()
    with ckpt.manager(tmp_path / ckpt.CHECKPOINT_DIR, read_only=True) as mngr:
        assert max(mngr.all_steps()) == 6, (mngr.all_steps(), time.time() - t0)


def test_sigkill_at_seeded_points_resumes_exactly(testbed, tmp_path):
    """tests/scripts/kill_resume.py with 4 kill points (2 inside async checkpoint writes): each
    start resumes from the last complete checkpoint, and the end is bit-identical to an
    uninterrupted run (the script runs 12 points for the README's reliability figures)."""
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts/kill_resume.py"), str(testbed.root), str(tmp_path), "--kills", "4"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "kills=4 exact_resumes=4 identical=1" in r.stdout, r.stdout
    assert r.stdout.count("inside a checkpoint write") == 2, r.stdout


@pytest.mark.parametrize("victim", [1, 0], ids=["worker-killed", "coordinator-killed"])
def test_a_dead_process_stops_the_other_within_the_heartbeat_timeout(testbed, tmp_path, victim):
    """Two jax.distributed processes (gloo on localhost) training; one is SIGKILLed mid-run. The
    survivor must not hang: it exits with an error within the heartbeat timeout (10 s here) plus
    a margin, and the workdir keeps a complete checkpoint to resume from."""
    port = free_port()
    settings = {
        "num_steps": 2000,
        "checkpoint.every": 5,
        "distributed.coordinator_address": f"localhost:{port}",
        "distributed.num_processes": 2,
        "distributed.cpu_collectives": "gloo",
        "distributed.heartbeat_timeout_s": 10,
    }
    procs = [
        subprocess.Popen(
            stage_command(testbed, tmp_path, **settings, **{"distributed.process_id": i}),
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        complete = lambda: [d for d in (tmp_path / "checkpoints").glob("*") if d.name.isdigit()]
        deadline = time.time() + 300
        while time.time() < deadline and not ((tmp_path / "checkpoints").is_dir() and complete()):
            assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
            time.sleep(0.1)
        procs[victim].send_signal(signal.SIGKILL)
        t0 = time.time()
        survivor = procs[1 - victim]
        out = survivor.communicate(timeout=180)[0]
        waited = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert survivor.returncode != 0, out[-3000:]
    assert waited < 10 + 80, (waited, out[-3000:])
    _, params, step = ckpt.load_run_params(tmp_path)  # the complete checkpoints are still readable
    assert step >= 5 and all(np.isfinite(v).all() for v in params.values())
    print(f"victim {victim}: survivor exited {survivor.returncode} after {waited:.1f} s:\n{out[-1500:]}")


def test_a_validation_file_without_categories_stops_the_run_at_start_up(testbed, tmp_path):
    """OKS AP needs 'categories': a run refuses such a validation file when it starts, naming it,
    not at its first evaluation eval.every steps later."""
    from tests.helpers import tiny_data_config

    config = tiny_data_config(testbed, stage=1)
    val = json.loads(testbed.val_json.read_text())
    del val["categories"]
    bad = tmp_path / "val_no_categories.json"
    bad.write_text(json.dumps(val))
    config.data.val_ann = str(bad)
    with pytest.raises(ValueError, match=rf"COCO ground truth '{bad}' needs 'images', 'annotations' and 'categories'"):
        trainer.Trainer(config, tmp_path / "run", inputs.run_data(config, "eval"), mode="eval")


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"mesh.data": 2, "mesh.fsdp": 2}, ValueError, r"mesh data=2 x fsdp=2 needs 4 devices, have 1"),
        ({"batch_size": 8, "micro_batches": 3}, ValueError, r"batch_size 8 must be a multiple of micro_batches"),
        ({"model.image_size": (100, 100)}, ValueError, r"image_size \(100, 100\) must be positive multiples of 16"),
        ({"batch_size": 10}, ValueError, r"batch size 10 is not a multiple of the mix total 4"),
        ({"num_steps": 0}, ValueError, r"'num_steps': 0\} must be positive integers"),
        ({"loss.sds": 0.01, "loss.bone_ratio": 0.0}, trainer.TrainingError, r"config.prior_ckpt=.*not a prior config"),
    ],
    ids=["mesh", "devices", "image-size", "mix", "steps", "prior-kind"],
)
def test_bad_configs_stop_at_start_up_naming_the_field(testbed, tmp_path, changes, error, message):
    """Each is refused when the job starts (before data loading or compiling), naming the field."""
    from tests.helpers import tiny_data_config

    config = tiny_data_config(testbed, stage=2)
    config.prior_ckpt = str(tmp_path)  # a directory, but no prior run: read only where loss.sds > 0
    config.loss.sds = 0.0
    config.update_from_flattened_dict(changes)
    with pytest.raises(error, match=message):  # as the job starts: the prior, then the trainer and its data
        finetune.prior_term(config)
        trainer.Trainer(config, tmp_path / "run", inputs.run_data(config)).train_data()


# ---------------------------------------------------------------------------------------------
# Issue 33: settings that would wreck a run, and a workdir that cannot be used, stop at start-up
# with one line naming the field (or path) and the value, exit code 1.
# ---------------------------------------------------------------------------------------------
def _main(argv, capsys, monkeypatch) -> tuple[int, str]:
    """``main(argv)`` in this process: (exit code, stderr). No job may start (a regression fails
    here at once instead of training)."""
    from hyper_sapiens_jax import main as main_module

    def refuse(name):
        def job(*args, **kwargs):
            raise AssertionError(f"the job {name} started")

        return job

    monkeypatch.setattr(main_module, "JOBS", {name: refuse(name) for name in main_module.JOBS})
    rc = main_module.main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "config, override, message",
    [
        ("stage1.py:tiny", "optim.lr=-0.5", r"config.optim.lr=-0.5 must be a finite number > 0"),
        ("stage1.py:tiny", "optim.lr=nan", r"config.optim.lr=nan must be a finite number > 0"),
        ("stage1.py:tiny", "ema_decay=1.5", r"config.ema_decay=1.5 must be a finite number in \[0, 1\)"),
        ("stage1.py:tiny", "data.heatmap_sigma=0", r"config.data.heatmap_sigma=0.0 must be a finite number > 0"),
        ("stage1.py:tiny", "checkpoint.keep=0", r"config.checkpoint.keep=0 must be an integer >= 1"),
        (
            "stage1.py:tiny",
            "data.aug.flip_prob=1.5",
            r"config.data.aug.flip_prob=1.5 must be a finite number in \[0, 1\]",
        ),
        ("stage1.py:tiny", "data.aug.scale_range=(1.5,0.5)", r"config.data.aug.scale_range=\(1.5, 0.5\) must be two"),
        ("stage1.py:tiny", "model.image_size=(0,64)", r"config.model.image_size=\(0, 64\) must be two values"),
        ("prior.py", "keep_checkpoints=0", r"config.keep_checkpoints=0 must be an integer >= 1"),
        ("pretrain.py:tiny", "mae.mask_ratio=1.0", r"config.mae.mask_ratio=1.0 must be a finite number in \[0, 1\)"),
        ("demo.py", "stage2.optim.lr=-1.0", r"config.stage2.optim.lr=-1.0 must be a finite number > 0"),
        ("semisup_stage1.py:tiny", "semisup.conf_threshold=2.0", r"config.semisup.conf_threshold=2.0 must be"),
    ],
    ids=lambda v: v if "=" in str(v) and "must" not in str(v) else None,
)
def test_bad_values_stop_every_job_at_start_up_naming_field_and_value(
    tmp_path, capsys, monkeypatch, config, override, message
):
    """Each is one line on stderr, exit code 1, before the workdir is touched."""
    work = tmp_path / "run"
    rc, err = _main(
        ["--config", str(REPO / "configs" / config), "--workdir", str(work), f"--config.{override}"],
        capsys,
        monkeypatch,
    )
    assert rc == 1 and re.search(message, err), err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not work.exists()


def test_no_setting_deletes_the_last_complete_checkpoint(tmp_path):
    """checkpoint.keep=0 (which once deleted a run's own checkpoints and exited 0) is refused by
    the config check and by the checkpoint manager itself, for every job that saves."""
    from hyper_sapiens_jax.config import ConfigError, check_values

    config = base_config("tiny")
    config.checkpoint.keep = 0
    with pytest.raises(ConfigError, match=r"config.checkpoint.keep=0 must be an integer >= 1"):
        check_values(config)
    with pytest.raises(ValueError, match=r"keep=0 must be an integer >= 1 \(0 would delete the last complete"):
        ckpt.manager(tmp_path / "ck", keep=0)
    ckpt.manager(tmp_path / "ck", keep=0, read_only=True).close()  # reading deletes nothing


def test_a_workdir_that_is_a_file_or_unwritable_is_one_line_naming_it(tmp_path, capsys, monkeypatch):
    from hyper_sapiens_jax.training.monitor import WorkdirError

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for workdir in (blocker, blocker / "below"):
        rc, err = _main(
            ["--config", str(REPO / "configs/stage1.py:tiny"), "--workdir", str(workdir)], capsys, monkeypatch
        )
        assert (
            rc == 1
            and err == f"error: --workdir {workdir}: {blocker} is a file, not a folder; choose another --workdir\n"
        )
    locked = tmp_path / "read_only"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with (
        pytest.raises(WorkdirError, match=rf"--workdir {locked}: cannot be written \(permission denied\)"),
        workdir_lock(locked),
    ):
        pass
    rc, err = _main(["--config", str(REPO / "configs/prior.py"), "--workdir", str(locked)], capsys, monkeypatch)
    assert rc == 1 and err.count("\n") == 1 and "cannot be written" in err


def test_an_unreadable_annotation_file_is_one_line_in_main_and_preview(testbed, tmp_path, capsys):
    """A file that is not UTF-8 (and one nested too deeply) is a DataError naming it: one line,
    exit code 1, from the training entry point and from the preview alike."""
    from hyper_sapiens_jax import main as main_module
    from hyper_sapiens_jax import preview

    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"images": [], "annotations": [], "note": "café"}'.encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    data = [
        "--config.data.source=files",
        f"--config.data.syrip_syn_images={testbed.train_syn_images}",
        f"--config.data.mini_rgbd_root={testbed.mini_rgbd}",
        "--config.data.mini_rgbd_sequences=(1,2)",
        f"--config.data.val_ann={testbed.val_json}",
        f"--config.data.val_images={testbed.val_images}",
        "--config.model.image_size=(64, 48)",
    ]
    config = ["--config", str(REPO / "configs/stage1.py:tiny")]
    for path, why in ((bad, "not UTF-8 text"), (deep, "JSON nested too deeply")):
        argv = [*config, *data, f"--config.data.syrip_syn_ann={path}"]
        for run, where in ((preview.main, "--out"), (main_module.main, "--workdir")):
            capsys.readouterr()
            assert run([*argv, where, str(tmp_path / "out")]) == 1
            errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and errors[0].startswith(f"error: {path}: unreadable annotation file: {why}"), (
                errors
            )
