"""The diffusion pose prior: normalisation, DDPM facts, SDS gradient, sampling, the job, the effect."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.data.keypoints import KEYPOINT_SUBSETS, flip_permutation
from hyper_sapiens_jax.prior import DiffusionPrior, PriorSpec, ddpm, sds_grad, sds_loss
from hyper_sapiens_jax.prior import normalize as norm
from hyper_sapiens_jax.prior.augment import AugmentSpec, drop_joints
from hyper_sapiens_jax.prior.denoiser import DenoiserSpec
from hyper_sapiens_jax.testbed.writer import sample_skeleton_keypoints
from tests.helpers import REPO

ROOT = REPO
HIPS = list(norm.HIPS)


@pytest.fixture(scope="module")
def skeletons() -> np.ndarray:
    """(N, 17, 3) projected infant skeletons (x, y, visibility), as the testbed makes them."""
    return sample_skeleton_keypoints(7, 3000, (480, 640))


@pytest.fixture(scope="module")
def poses(skeletons):
    xy, vis = skeletons[:64, :, :2], (skeletons[:64, :, 2] > 0).astype(np.float32)
    return xy, vis


def _config(skeleton_file: Path, **overrides):
    """configs/prior.py pointed at ``skeleton_file``, with dotted-key overrides."""
    c = load_config_file(ROOT / "configs/prior.py")
    c.data.source, c.data.skeletons = "files", str(skeleton_file)
    c.update_from_flattened_dict(overrides)
    return c


# A prior small enough to train in seconds, big enough to be useful (2 blocks of width 256).
SMALL = {
    "model.width": 256,
    "model.depth": 2,
    "batch_size": 128,
    "num_steps": 1500,
    "eval_every": 500,
    "checkpoint_every": 500,
    "steps_per_call": 250,
    "optim.warmup_steps": 100,
    "report.num_samples": 256,
    "report.ddim_steps": 25,
    "report.num_ancestral": 256,
    "report.num_train_reference": 2000,
    "report.effect_poses": 150,
    "report.effect_steps": 400,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, skeletons):
    """(workdir, skeleton file): the issue's command line, run on 3000 skeletons with SMALL."""
    tmp = tmp_path_factory.mktemp("prior")
    np.savez_compressed(tmp / "skeletons.npz", keypoints=skeletons)
    workdir = tmp / "run"
    cmd = [
        sys.executable,
        "-m",
        "hyper_sapiens_jax.main",
        "--config",
        str(ROOT / "configs/prior.py"),
        "--workdir",
        str(workdir),
        "--config.data.source=files",
        f"--config.data.skeletons={tmp / 'skeletons.npz'}",
    ]
    cmd += [f"--config.{k}={v}" for k, v in SMALL.items()]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, tmp / "skeletons.npz"


# =============================================================================================
# Normalisation
# =============================================================================================
def _rot(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]], np.float32)


def test_normalize_invariances_and_round_trip(poses):
    xy, vis = poses
    spec = norm.fit_spec(xy, vis)
    z, frame = norm.normalize(xy, vis, spec)
    # Translation and scale leave z unchanged; a rotation of the input rotates z.
    z2, _ = norm.normalize(xy * 3.7 + np.array([120.0, -40.0]), vis, spec)
    np.testing.assert_allclose(z2, z, atol=2e-5)
    # Aligned (the default), a rotation of the input changes nothing; unaligned, it rotates z.
    r = _rot(0.9)
    np.testing.assert_allclose(norm.normalize(xy @ r.T, vis, spec)[0], z, atol=2e-5)
    free = dataclasses.replace(spec, align_torso=False)
    np.testing.assert_allclose(
        norm.normalize(xy @ r.T, vis, free)[0], np.asarray(norm.normalize(xy, vis, free)[0]) @ r.T, atol=2e-5
    )
    # Centre on the mid-hip, torso upright, torso length (in units of ``unit``) is the scale.
    np.testing.assert_allclose(np.asarray(z)[:, HIPS].mean(1), 0.0, atol=1e-5)
    mid_shoulder = np.asarray(z)[:, list(norm.SHOULDERS)].mean(1)
    np.testing.assert_allclose(mid_shoulder[:, 0], 0.0, atol=1e-5)
    assert (mid_shoulder[:, 1] < 0).all()
    torso, ok = norm.torso_length(jnp.asarray(xy), jnp.asarray(vis))
    assert bool(ok.all())
    np.testing.assert_allclose(
        frame.scale,
        np.maximum(torso, spec.min_torso_frac * spec.rms_to_torso * norm.centroid_and_rms(xy, vis)[1]) * spec.unit,
        rtol=1e-5,
    )
    # The inverse puts every visible joint back.
    np.testing.assert_allclose(norm.denormalize(z, frame), xy, atol=1e-3)


def test_fit_spec_gives_unit_rms(skeletons):
    xy, vis = skeletons[..., :2], skeletons[..., 2]
    spec = norm.fit_spec(xy, vis)
    z, _ = norm.normalize(xy, vis, spec)
    assert np.sqrt(np.sum(np.asarray(z) ** 2) / (2 * vis.sum())) == pytest.approx(1.0, rel=1e-4)
    assert 0.3 < spec.rms_to_torso < 3.0


def test_normalize_missing_hip_fallback(poses):
    xy, vis = poses
    spec = norm.fit_spec(xy, vis)
    vis = vis.copy()
    vis[:, HIPS[0]] = 0.0  # one hip missing: no mid-hip, no torso
    z, frame = norm.normalize(xy, vis, spec)
    centroid, rms = norm.centroid_and_rms(jnp.asarray(xy), jnp.asarray(vis))
    np.testing.assert_allclose(frame.centre, centroid, atol=1e-4)
    np.testing.assert_allclose(frame.scale, spec.rms_to_torso * rms * spec.unit, rtol=1e-5)
    assert np.all(np.asarray(z)[:, HIPS[0]] == 0.0)
    z2, _ = norm.normalize(xy * 0.5 + 7.0, vis, spec)
    np.testing.assert_allclose(z2, z, atol=2e-5)
    np.testing.assert_allclose(norm.denormalize(z, frame) * vis[..., None], xy * vis[..., None], atol=1e-3)
    # Degenerate poses (one or no visible joint, a zero-length torso) stay finite, values and gradients.
    few = np.zeros_like(vis)
    few[0, 3] = 1.0
    flat = xy.copy()
    flat[:, list(norm.SHOULDERS)] = flat[:, HIPS]
    for p, v in ((xy, few), (flat, poses[1])):
        z = norm.normalize(p, v, spec)[0]
        grad = jax.grad(lambda a, v=v: jnp.sum(norm.normalize(a, v, spec)[0] ** 2))(jnp.asarray(p))
        assert np.isfinite(np.asarray(z)).all() and np.isfinite(grad).all()
    assert float(jnp.abs(norm.normalize(flat, poses[1], spec)[0]).max()) > 0.1


def test_augmentation_flip_rotate_dropout(poses):
    xy, vis = poses
    z, _ = norm.normalize(xy, vis, norm.fit_spec(xy, vis))
    perm = flip_permutation(17)
    zf, vf = norm.flip(z, jnp.asarray(vis), perm)
    np.testing.assert_allclose(norm.flip(zf, vf, perm)[0], z)  # an involution
    np.testing.assert_allclose(zf[:, 5], np.asarray(z)[:, 6] * [-1, 1], atol=1e-6)  # l-shoulder <- mirrored r
    zr = norm.rotate(z, jnp.full((len(z),), 1.1))
    np.testing.assert_allclose(jnp.linalg.norm(zr, axis=-1), jnp.linalg.norm(z, axis=-1), rtol=1e-5, atol=1e-6)
    spec = AugmentSpec(dropout_prob=0.5, subset_prob=0.3, min_visible=4)
    v = np.asarray(drop_joints(jax.random.key(0), jnp.ones((4000, 17)), spec))
    assert (v.sum(-1) >= 4).all() and (v <= 1).all()
    subset = np.zeros(17)
    subset[list(KEYPOINT_SUBSETS["common13"])] = 1
    assert abs((v == subset).all(-1).mean() - 0.3) < 0.03  # cut to MINI-RGBD's 13 points
    # Untouched: the 20% not dropped at all, plus thinned poses that lost nothing, E[(1 - r)^17].
    untouched = 0.2 + 0.5 * (2 / 18) * (1 - 0.5**18)
    assert abs((v.sum(-1) == 17).mean() - untouched) < 0.03


# =============================================================================================
# DDPM
# =============================================================================================
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_facts(kind):
    s = ddpm.make_schedule(kind, 1000)
    ab = np.asarray(s.alpha_bars, np.float64)
    assert s.num_steps == 1000 and np.all(np.diff(ab) < 0) and ab[0] > 0.999 and 0 <= ab[-1] < 1e-4
    np.testing.assert_allclose(ab, np.cumprod(1 - np.asarray(s.betas, np.float64)), rtol=1e-4)
    if kind == "cosine":  # the cosine schedule is about half signal at the middle step
        assert 0.45 < ab[499] < 0.55
    with pytest.raises(ValueError):
        ddpm.make_schedule("quadratic")


def test_q_sample_statistics():
    s = ddpm.make_schedule("linear")
    x0 = jnp.broadcast_to(jnp.array([[1.5, -2.0]]), (20000, 1, 2))
    for t in (10, 300, 900):
        noise = jax.random.normal(jax.random.key(t), x0.shape)
        xt = np.asarray(ddpm.q_sample(s, x0, jnp.full((20000,), t), noise))
        ab = float(s.alpha_bars[t])
        np.testing.assert_allclose(xt.mean(0)[0], np.sqrt(ab) * np.array([1.5, -2.0]), atol=0.03)
        np.testing.assert_allclose(xt.std(0)[0], np.sqrt(1 - ab), rtol=0.03)


def test_samplers_recover_a_known_distribution():
    """With the exact ε̂ of x0 ~ N(μ, σ²) both samplers must return that distribution."""
    s = ddpm.make_schedule("linear")
    mu, sigma = 0.7, 0.3

    # Exact: x_t ~ N(√ᾱ μ, ᾱσ² + 1 − ᾱ), so ε̂ = √(1−ᾱ)(x − √ᾱ μ) / (ᾱσ² + 1 − ᾱ).
    def eps_fn(x, visible, t):
        ab = s.alpha_bars[t][:, None, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * mu) / (ab * sigma**2 + 1 - ab)

    for x in (
        ddpm.ancestral_sample(eps_fn, s, jax.random.key(0), (4000, 1, 2)),
        ddpm.ddim_sample(eps_fn, s, jax.random.key(0), (4000, 1, 2), sample_steps=100),
    ):
        assert float(jnp.mean(x)) == pytest.approx(mu, abs=0.02)
        assert float(jnp.std(x)) == pytest.approx(sigma, rel=0.05)
    # Clipping x̂0's joint radius bounds the samples (DDIM's last step returns x̂0).
    clipped = ddpm.ddim_sample(eps_fn, s, jax.random.key(0), (500, 1, 2), sample_steps=20, x0_clip=0.5)
    assert float(jnp.linalg.norm(clipped, axis=-1).max()) <= 0.5 + 1e-5


# =============================================================================================
# SDS
# =============================================================================================
@pytest.fixture(scope="module")
def random_prior(poses):
    xy, vis = poses
    # An untrained prior has zero-initialised outputs: perturb its weights so ε̂ is not 0.
    p = DiffusionPrior.create(PriorSpec(DenoiserSpec(width=64, depth=2), norm.fit_spec(xy, vis)), seed=1)
    leaves, tree = jax.tree.flatten(p.params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return DiffusionPrior(p.graphdef, jax.tree.unflatten(tree, leaves), p.spec)


def test_sds_gradient_is_weighted_noise_residual(random_prior, poses):
    prior, (xy, vis) = random_prior, poses
    z = prior.normalize(xy, vis)
    t = jnp.arange(len(z)) * 15 + 5
    noise = jax.random.normal(jax.random.key(1), z.shape)
    loss = lambda z: sds_loss(prior, z, vis, jax.random.key(0), normalize=False, t=t, noise=noise)
    value, grad = jax.jit(jax.value_and_grad(loss))(z)
    ab = prior.schedule.alpha_bars[t]
    x_t = jnp.sqrt(ab)[:, None, None] * z + jnp.sqrt(1 - ab)[:, None, None] * noise
    expected = (1 - ab)[:, None, None] * (prior.eps(x_t, vis, t) - noise) * vis[..., None]
    assert float(jnp.abs(expected).max()) > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert float(value) == pytest.approx(0.5 * float(jnp.sum(expected**2)), rel=1e-4)
    np.testing.assert_allclose(sds_grad(prior, z, vis, t, noise), expected, rtol=1e-5, atol=1e-7)


def test_sds_invisible_joints_and_prior_params_get_no_gradient(random_prior, poses):
    prior, (xy, vis) = random_prior, poses
    vis = vis.copy()
    vis[:, [0, 9, 16]] = 0.0
    rng = jax.random.key(2)
    grad_xy = jax.grad(lambda p: sds_loss(prior, p, vis, rng, num_noise=2))(jnp.asarray(xy))
    assert np.all(np.asarray(grad_xy)[:, [0, 9, 16]] == 0.0)
    assert float(jnp.abs(grad_xy).max()) > 0
    # Gradient with respect to the prior's parameters (passed as a jit input) is exactly zero.
    grad_params = jax.jit(jax.grad(lambda params: sds_loss(prior, xy, vis, rng, params=params)))(prior.params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grad_params))


def test_sds_through_normalisation_and_as_jit_argument(random_prior, poses):
    """Pixel-space gradient = the normalised-space one pulled back; the prior can be a jit input."""
    prior, (xy, vis) = random_prior, poses
    t, noise = jnp.full((len(xy),), 200), jax.random.normal(jax.random.key(5), xy.shape)
    step = jax.jit(lambda p, xy: jax.grad(lambda a: sds_loss(p, a, vis, jax.random.key(0), t=t, noise=noise))(xy))
    grad_px = step(prior, jnp.asarray(xy))
    _, vjp = jax.vjp(lambda a: prior.normalize(a, vis), jnp.asarray(xy))
    g = sds_grad(prior, prior.normalize(xy, vis), vis, t, noise)
    np.testing.assert_allclose(grad_px, vjp(g)[0], rtol=1e-4, atol=1e-9)
    # Moving the whole pose does not change the loss: translation gradients cancel.
    np.testing.assert_allclose(jnp.sum(grad_px, axis=1), 0.0, atol=1e-6)


# =============================================================================================
# Sampling and the training job
# =============================================================================================
def test_sampling_shapes_and_determinism(random_prior):
    prior = random_prior
    a = prior.sample(jax.random.key(0), 8)
    assert a.shape == (8, 17, 2) and a.dtype == jnp.float32 and np.isfinite(np.asarray(a)).all()
    np.testing.assert_array_equal(a, prior.sample(jax.random.key(0), 8))
    assert not np.allclose(a, prior.sample(jax.random.key(1), 8))
    b = prior.sample(jax.random.key(0), 5, method="ancestral")
    assert b.shape == (5, 17, 2)
    np.testing.assert_array_equal(b, prior.sample(jax.random.key(0), 5, method="ancestral"))
    with pytest.raises(ValueError):
        prior.sample(jax.random.key(0), 2, method="euler")


def test_train_job_writes_report_checkpoints_and_loads(trained):
    workdir, _ = trained
    for name in ("prior_config.json", "prior_report.json", "prior_samples.png", "metrics.jsonl", "prior_split.npz"):
        assert (workdir / name).is_file(), name
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [1000, 1500]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [500, 1000, 1500]
    assert rows[-1]["heldout_loss_all"] < 0.3 and rows[-1]["heldout_loss_common13"] < 0.3
    config = json.loads((workdir / "prior_config.json").read_text())
    assert config["denoiser"]["width"] == 256 and config["num_steps"] == 1000 and config["num_train"] == 2700
    report = json.loads((workdir / "prior_report.json").read_text())
    assert len(report["samples_ddim"]["bone_ratio"]["median"]) == 12
    # Useful: samples are closer to the held-out bone-ratio distribution than a Gaussian fit is,
    # and as close to the training poses as held-out poses are. (Ancestral: this prior trains for
    # seconds; deterministic DDIM needs the better-trained default one, see the note.)
    anc, gauss = report["samples_ancestral"], report["gaussian_baseline"]
    assert anc["frechet_bone_ratio"] < 0.75 * gauss["frechet_bone_ratio"], report
    assert anc["nn_distance_to_train_mean"] < 1.3 * report["heldout"]["nn_distance_to_train_mean"], report
    assert np.isfinite(report["samples_ddim"]["frechet_bone_ratio"])
    prior = DiffusionPrior.load(workdir)
    assert prior.spec.denoiser.width == 256 and prior.spec.norm.unit > 0
    samples = prior.sample(jax.random.key(0), 4)
    assert samples.shape == (4, 17, 2) and float(jnp.abs(samples).max()) < 10


def test_train_job_resumes(trained, tmp_path):
    """Restarted with more steps, the job continues from its latest checkpoint (a copy here)."""
    import shutil

    from hyper_sapiens_jax.jobs import prior as prior_job

    source, skeleton_file = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    cheap = {k: v for k, v in SMALL.items() if not k.startswith("report.")}
    cheap.update(
        {
            "num_steps": 1550,
            "steps_per_call": 50,
            "report.num_samples": 16,
            "report.ddim_steps": 5,
            "report.num_ancestral": 0,
            "report.num_train_reference": 100,
            "report.effect_poses": 0,
        }
    )
    assert prior_job.run(_config(skeleton_file, **cheap), str(workdir)) == 0
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [500, 1000, 1500, 1550] and np.isfinite(rows[-1]["heldout_loss_all"])
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [1500, 1550]
    # Training went on from the step-1500 weights (kept) to new ones.
    kernel = lambda p: np.asarray(p.params["out"]["kernel"][...])
    assert not np.allclose(kernel(DiffusionPrior.load(workdir, step=1500)), kernel(DiffusionPrior.load(workdir)))


def test_a_damaged_prior_checkpoint_falls_back_to_the_one_before(trained, tmp_path, caplog):
    """A prior workdir whose latest checkpoint (1500) has a truncated file: loading the prior warns
    naming that step and gives the step-1000 weights; with both steps damaged the error names the
    checkpoint directory."""
    import logging
    import shutil

    from hyper_sapiens_jax.training.checkpoint import CheckpointError
    from tests.helpers import truncate_largest

    source, _ = trained
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    truncate_largest(workdir / "checkpoints" / "1500" / "ema")
    with caplog.at_level(logging.WARNING):
        prior = DiffusionPrior.load(workdir)
    assert str(workdir / "checkpoints" / "1500") in " ".join(r.getMessage() for r in caplog.records)
    kernel = lambda p: np.asarray(p.params["out"]["kernel"][...])
    np.testing.assert_array_equal(kernel(prior), kernel(DiffusionPrior.load(source, step=1000)))
    truncate_largest(workdir / "checkpoints" / "1000" / "ema")
    with pytest.raises(CheckpointError, match=r"checkpoints: no readable checkpoint"):
        DiffusionPrior.load(workdir)


class _StopAfterFirstChunk:
    """A SIGTERM that arrives during the first chunk (the prior asks after every chunk)."""

    def __init__(self):
        self.calls = 0

    def agreed(self) -> bool:
        self.calls += 1
        return self.calls == 1

    def restore(self) -> None:
        pass


def test_train_job_stops_on_sigterm_and_resumes_exactly(skeletons, tmp_path, monkeypatch):
    """SIGTERM: the prior saves at the end of the chunk and returns; the restart ends where an
    uninterrupted run ends, to the bit (data and noise are functions of the step)."""
    from hyper_sapiens_jax.jobs import prior as prior_job

    np.savez_compressed(tmp_path / "skeletons.npz", keypoints=skeletons)
    tiny = {
        "model.width": 64,
        "model.depth": 1,
        "batch_size": 32,
        "num_steps": 60,
        "eval_every": 60,
        "checkpoint_every": 60,
        "steps_per_call": 20,
        "optim.warmup_steps": 5,
        "report.num_samples": 8,
        "report.ddim_steps": 2,
        "report.num_ancestral": 0,
        "report.num_train_reference": 50,
        "report.effect_poses": 0,
    }
    config = lambda: _config(tmp_path / "skeletons.npz", **tiny)
    assert prior_job.run(config(), str(tmp_path / "straight")) == 0
    with monkeypatch.context() as mp:
        mp.setattr(prior_job, "StopFlag", _StopAfterFirstChunk)
        assert prior_job.run(config(), str(tmp_path / "stopped")) == 0
    saved = sorted(int(p.name) for p in (tmp_path / "stopped/checkpoints").iterdir() if p.name.isdigit())
    assert saved == [20] and not (tmp_path / "stopped/metrics.jsonl").exists()  # stopped before any eval
    assert prior_job.run(config(), str(tmp_path / "stopped")) == 0
    a, b = (DiffusionPrior.load(tmp_path / d) for d in ("straight", "stopped"))
    leaves = [jax.tree.leaves(p.params) for p in (a, b)]
    assert len(leaves[0]) == len(leaves[1]) > 0
    for x, y in zip(*leaves):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# =============================================================================================
# The measured effect (issue item 6)
# =============================================================================================
def test_sds_pulls_corrupted_poses_to_the_manifold(trained):
    """The job's report holds the measured effect (150 held-out poses, 400 SDS steps)."""
    result = json.loads((trained[0] / "prior_report.json").read_text())["sds_effect"]
    bad, clean = result["corrupted"], result["clean"]
    assert result["num_poses"] == 150 and result["steps"] == 400
    # Toward the manifold: bone ratios back in the training range, closer to training poses.
    assert bad["bone_ratio_error_drop"] >= 0.30, result
    assert bad["nn_distance_drop"] >= 0.30, result
    # Clean poses move little — a fraction of the corruption's size and less than corrupted poses —
    # and stay typical: bone-ratio error far below the corrupted set's, no farther from training poses.
    assert clean["displacement"] < 0.5 * result["corruption_size"], result
    assert clean["displacement"] < 0.75 * bad["displacement"], result
    assert clean["bone_ratio_error"][1] < 0.5 * bad["bone_ratio_error"][1], result
    assert clean["bone_ratio_error"][1] < 0.2 * bad["bone_ratio_error"][0], result
    assert clean["nn_distance"][1] <= clean["nn_distance"][0], result


def test_corruptions_leave_the_manifold(skeletons):
    """The corruptions themselves: each kind raises the bone-ratio error and the NN distance."""
    from hyper_sapiens_jax.prior import metrics
    from hyper_sapiens_jax.prior.effect import CORRUPTIONS, corrupt

    xy, vis = skeletons[..., :2], skeletons[..., 2]
    spec = norm.fit_spec(xy, vis)
    z = np.asarray(norm.normalize(xy, vis, spec)[0])
    train, held = z[:2500], z[2500:2800]
    kinds = np.arange(len(held)) % 3
    bad = corrupt(np.random.default_rng(0), held, kinds)
    assert not np.allclose(bad, held)
    np.testing.assert_allclose(bad[kinds == 1].sum(1), held[kinds == 1].sum(1), atol=1e-4)  # swaps permute
    ones = np.ones(held.shape[:2])
    bounds = metrics.ratio_range(metrics.bone_length_shares(train, np.ones(train.shape[:2]))[0])
    for k, kind in enumerate(CORRUPTIONS):
        m = kinds == k
        err = [metrics.ratio_excess(metrics.bone_length_shares(s[m], ones[m])[0], bounds).mean() for s in (held, bad)]
        nn = [metrics.nn_distance(s[m], ones[m], train, np.ones(train.shape[:2])).mean() for s in (held, bad)]
        assert err[1] > 2 * err[0] and nn[1] > 1.1 * nn[0], (kind, err, nn)
