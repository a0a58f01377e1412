"""The testbed foundation: the shipped Sapiens-layout files, the job that regenerates them, and the
demo reading them the way a user reads real Sapiens checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.jobs import demo
from hyper_sapiens_jax.testbed import shipped
from hyper_sapiens_jax.testbed.writer import write_testbed
from tests.helpers import REPO, subprocess_env

SHIPPED = shipped.FOUNDATION_DIR
needs_shipped = pytest.mark.skipif(not (SHIPPED / shipped.MANIFEST_FILE).is_file(), reason="no foundation shipped yet")


@needs_shipped
def test_shipped_files_match_their_manifest_and_fit_the_budget():
    manifest = shipped.check_manifest(SHIPPED)
    names = set(manifest["files"])
    assert names == {*shipped.FOUNDATION_FILES.values(), shipped.PRETRAIN_FILE}
    assert manifest["total_bytes"] == sum((SHIPPED / n).stat().st_size for n in names) <= 20e6
    assert manifest["command"] and manifest["code_revision"] and manifest["config"]["job"] == "foundation"


def test_a_damaged_file_is_named(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"0123")
    (tmp_path / shipped.MANIFEST_FILE).write_text(
        json.dumps({"files": {"a.safetensors": {"bytes": 4, "sha256": shipped.sha256(tmp_path / "a.safetensors")}}})
    )
    assert shipped.check_manifest(tmp_path)["files"]
    (tmp_path / "a.safetensors").write_bytes(b"0124")
    with pytest.raises(ValueError, match=r"a.safetensors: does not match its sha256"):
        shipped.check_manifest(tmp_path)
    (tmp_path / "a.safetensors").unlink()
    with pytest.raises(ValueError, match=r"a.safetensors: listed in manifest.json but missing"):
        shipped.check_manifest(tmp_path)


def test_demo_orientation_table():
    orient = {"bins": ["0-90", "90-180"], "samples": [3, 1], "pck@0.05": [0.5, 0.0], "pck@0.2": [0.75, 0.25]}
    rows = [("mean pose (val)", {"pck@0.2": 0.1}), ("stage1", {"pck_by_orientation": orient})]
    lines = demo.orientation_table(rows).splitlines()
    assert lines[2] == "| run | 0-90° (3) | 90-180° (1) |"
    assert lines[4:] == ["| stage1 | 0.750 | 0.250 |"]  # the row without the breakdown is left out
    assert demo.orientation_table(rows, threshold=0.05).splitlines()[4] == "| stage1 | 0.500 | 0.000 |"
    assert demo.orientation_table(rows[:1]) == ""


@needs_shipped
def test_shipped_files_convert_and_reproduce_the_zero_shot_row(tmp_path):
    """torch_to_flax reads the shipped files (no torch needed for safetensors); scored on the
    infant testbed's validation split (the same 200 images the default testbed renders) they give
    exactly the zero-shot numbers in the manifest."""
    manifest = shipped.check_manifest(SHIPPED)
    config = load_config_file(REPO / "configs/demo.py")
    stage = demo.shared_data(config.stage1, config.data)
    counts = manifest["config"]["zero_shot"]["data"]["testbed"]
    tb = write_testbed(
        tmp_path / "tb",
        num_syn=0,
        num_real=0,
        num_val=counts["num_val"],
        num_sequences=0,
        frames_per_sequence=0,
        num_skeletons=0,
        seed=counts["seed"],
    )
    stage.data.source, stage.data.val_ann, stage.data.val_images = "files", str(tb.val_json), str(tb.val_images)
    weights = demo.prepare_foundation(config, tmp_path, stage.model.image_size)
    from hyper_sapiens_jax.models.weights import load_weights

    mcfg, params = load_weights(weights)
    assert mcfg.arch == "cpu" and set(mcfg.heads) == {"pose", "depth", "normal"}
    stage.eval.blur_kernel = manifest["zero_shot_blur_kernel"]  # the decode the manifest was scored with
    got = demo.evaluate_weights(weights, stage)
    want = manifest["zero_shot_infant_val"]
    for key in ("pck@0.05", "pck@0.2", "ap", "g_error", "num_samples"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    # the pretrain backbone converts too, into the same architecture
    from convert_weights.torch_to_flax import convert

    pre_cfg, pre, _ = convert({"pretrain": SHIPPED / shipped.PRETRAIN_FILE}, tuple(stage.model.image_size))
    assert pre_cfg.arch == "cpu" and pre[("backbone", "pos_embed")].shape == params[("backbone", "pos_embed")].shape


def test_demo_data_overrides_reach_every_stage_and_the_prior():
    config = load_config_file(REPO / "configs/demo.py")
    config.data.source = "files"
    config.data.syrip_real_ann = "/data/real.json"
    config.data.aug.rotate_prob = 0.25
    stages = dict(demo.stage_configs(config, REPO / "unused"))
    for name in ("stage1", "stage2", "stage3"):
        s = stages[name]
        assert s.data.source == "files" and s.data.syrip_real_ann == "/data/real.json"
        assert s.data.aug.rotate_prob == 0.25
        assert dict(s.data.mix) == dict(config[name].data.mix)  # each stage keeps its own mix
    prior = demo.shared_data(config.prior, config.data)
    assert prior.data.source == "files" and prior.data.heldout_fraction == config.prior.data.heldout_fraction
    assert "aug" not in config.prior.data or prior.data.aug.rotate_prob == 0.25


TINY_FOUNDATION = """
import ml_collections
from hyper_sapiens_jax.config import load_config_file

def get_config(arg=None):
    config = load_config_file({configs!r} + "/foundation.py", "tiny")
    config.data.humans_dir = {tmp!r} + "/humans"
    config.data.humans = ml_collections.ConfigDict(dict(num_train=24, num_val=6, image_size=(96, 64), seed=0))
    p = config.pretrain
    p.model.image_size, p.batch_size, p.num_steps, p.log_every = (64, 64), 4, 4, 2
    p.checkpoint.every = 4
    for t in (config.pose, config.geometry):
        t.model.image_size, t.batch_size, t.eval_batch_size, t.num_steps, t.log_every = (64, 48), 4, 4, {steps}, 2
        t.eval.every = t.checkpoint.every = {every}
    z = config.zero_shot
    z.model.image_size, z.eval_batch_size = (64, 48), 4
    z.data.testbed_dir = {tmp!r} + "/tb"
    z.data.testbed = ml_collections.ConfigDict(
        dict(num_syn=0, num_real=0, num_val=4, num_sequences=0, frames_per_sequence=1, num_skeletons=0, seed=0)
    )
    return config
"""


def tiny_foundation_config(tmp_path, steps: int = 4, every: int = 4):
    """A config file (written in ``tmp_path``) of the foundation job at the tiny size: a 24-image
    corpus, 4 MAE steps, ``steps`` pose and geometry steps (checkpoints and evaluations every
    ``every``), the zero-shot score on 4 infant images."""
    path = tmp_path / "tiny_foundation.py"
    path.write_text(TINY_FOUNDATION.format(configs=str(REPO / "configs"), tmp=str(tmp_path), steps=steps, every=every))
    return path


def foundation_command(root) -> list[str]:
    """The foundation job at the tiny size (8 pose / geometry steps, checkpoints every 2) in ``root``."""
    config = tiny_foundation_config(root, steps=8, every=2)
    return [sys.executable, "-m", "hyper_sapiens_jax.main", "--config", str(config), "--workdir", str(root / "w")]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """One uninterrupted tiny foundation run (a subprocess, as a user starts it); its root folder."""
    root = tmp_path_factory.mktemp("whole")
    r = subprocess.run(foundation_command(root), env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return root


def test_foundation_job_end_to_end_at_tiny_size(whole_run):
    """Corpus -> MAE -> pose -> geometry heads -> Sapiens-layout export -> conversion -> zero-shot, at
    the tiny size: the manifest lists every file with its hash, the files convert, the exported pose
    model's weights are the fine-tuned run's (float16-rounded), and the geometry run kept the pose
    run's backbone frozen (only its final norm moves)."""
    tmp_path = whole_run
    out = tmp_path / "w" / "foundation"
    manifest = shipped.check_manifest(out)
    assert manifest["zero_shot_infant_val"]["num_samples"] == 4
    assert manifest["humans_val"]["num_samples"] == 6
    assert manifest["zero_shot_blur_kernel"] == 1  # 16x12 heatmaps: the DARK rule blurs nothing
    from convert_weights.torch_io import load_state_dict
    from hyper_sapiens_jax.training.checkpoint import load_any

    sd, meta = load_state_dict(out / shipped.FOUNDATION_FILES["pose"])
    _, run_params, _ = load_any(tmp_path / "w" / "geometry")
    kernel = run_params[("heads", "pose", "final_layer", "kernel")]  # (1, 1, C, K) HWIO
    np.testing.assert_array_equal(
        sd["head.final_layer.weight"], kernel.transpose(3, 2, 0, 1).astype(np.float16).astype(np.float32)
    )
    assert not any(k.startswith("decode_head.") for k in sd)
    _, pose_params, _ = load_any(tmp_path / "w" / "pose")
    assert ("heads", "depth", "conv_seg", "kernel") not in pose_params  # pose alone
    backbone = [p for p in pose_params if p[0] == "backbone"]
    moved = [p for p in backbone if not np.array_equal(pose_params[p], run_params[p])]
    assert moved and all(p[1] == "norm" for p in moved), moved  # only the final norm trained


def test_foundation_job_killed_midway_resumes_to_the_same_files(whole_run, tmp_path):
    """The foundation job SIGKILLed in the middle of its pose run, then started again with the same
    command, ends with exactly the files (sha256) and scores of an uninterrupted run."""
    env = subprocess_env()
    cut = tmp_path / "cut"
    cut.mkdir()
    proc = subprocess.Popen(foundation_command(cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = cut / "w" / "pose" / "checkpoints"
    deadline = time.time() + 600
    while not (checkpoints / "4").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "w" / "foundation").exists(), "the run ended before it was killed"
    r = subprocess.run(foundation_command(cut), env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    a = shipped.check_manifest(whole_run / "w" / "foundation")
    b = shipped.check_manifest(cut / "w" / "foundation")
    assert a["files"] == b["files"]  # every exported file, byte for byte
    assert a["humans_val"] == b["humans_val"] and a["zero_shot_infant_val"] == b["zero_shot_infant_val"]
