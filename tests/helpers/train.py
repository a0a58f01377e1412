"""Train-step helpers (``from tests.helpers.train import ...``): the tiny model, one real batch from
the testbed, a stage's command line, the semi-supervised parts."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hyper_sapiens_jax.config import base_config
from hyper_sapiens_jax.data.pipeline import train_dataset, train_iterator
from hyper_sapiens_jax.jobs import inputs
from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.prior import DiffusionPrior
from hyper_sapiens_jax.prior.denoiser import DenoiserSpec
from hyper_sapiens_jax.prior.model import PriorSpec
from hyper_sapiens_jax.semisup.kinematics import compute_reference
from hyper_sapiens_jax.semisup.step import SemisupSpec
from hyper_sapiens_jax.testbed.writer import Paths, sample_skeleton_keypoints
from hyper_sapiens_jax.training.batch import complete_batch, step_inputs
from hyper_sapiens_jax.training.objective import LossWeights, objective
from hyper_sapiens_jax.training.optim import sapiens_adamw
from hyper_sapiens_jax.training.partition import Trainable
from hyper_sapiens_jax.training.state import TrainState
from hyper_sapiens_jax.training.step import make_train_step
from tests.helpers import REPO, subprocess_env, tiny_data_config


def create_state(model, tx, trainable_blocks):
    """(graphdef, TrainState) of ``model`` for the given trainable subset."""
    trainable = Trainable(model.config.spec.num_layers, trainable_blocks)
    graphdef, params, frozen = nnx.split(model, trainable.filter, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        frozen=frozen,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params),
    )
    return graphdef, state


MODEL = ModelConfig(arch="tiny", image_size=(64, 48), heads=("pose", "depth", "normal"))


def first_batch(testbed_root: Path, stage: int = 2, image_size=MODEL.image_size):
    """One stage-`stage` batch (16 samples, default 64x48) from a testbed folder, as jnp arrays."""
    config = tiny_data_config(Paths.under(testbed_root, 2), stage=stage)
    config.model.image_size = tuple(image_size)
    mix, _ = inputs.build_train_mix(config)
    batch = next(train_iterator(train_dataset(mix, inputs.sample_config(config), seed=0, num_batches=1)))
    return {k: jnp.asarray(v) for k, v in step_inputs(batch).items()}


def make_step_and_state(
    trainable_blocks=None,
    micro_batches=1,
    weights=None,
    lr=1e-3,
    seed=0,
    sgd=False,
    image_size=MODEL.image_size,
    float64=False,
):
    """(step, state) for the tiny model; ``sgd`` swaps in plain SGD so updates are linear in the grads.

    The depth head's output bias starts at 0.5 (mid-range relative depth), as a trained head would
    predict, instead of ~0 where the log loss's 1 / pred gradients are ill-conditioned. ``float64``
    (needs ``jax_enable_x64``): float64 parameters and compute, the same initial values rounded up
    from float32 (see ``hyper_sapiens_jax.precision``)."""
    weights = LossWeights() if weights is None else weights
    config = MODEL.replace(image_size=tuple(image_size), dtype="float64" if float64 else "float32")
    model = Sapiens(config, rngs=nnx.Rngs(seed))
    model.heads["depth"].conv_seg.bias[...] = jnp.full((1,), 0.5)
    if float64:
        assert jax.config.jax_enable_x64, "float64=True needs jax_enable_x64"
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model)))
    # The optimizer is built for the trainable tree only (its per-parameter LR scales need the paths).
    trainable = nnx.state(model, Trainable(MODEL.spec.num_layers, trainable_blocks).filter)
    tx = optax.sgd(lr) if sgd else sapiens_adamw(trainable, num_layers=MODEL.spec.num_layers, learning_rate=lr)
    graphdef, state = create_state(model, tx, trainable_blocks)

    def obj(outputs, batch, normalizers, key, step):
        return objective(outputs, batch, weights, normalizers, key=key)

    prepare = functools.partial(complete_batch, heatmap_sigma=base_config("tiny").data.heatmap_sigma)
    step = make_train_step(graphdef, tx, obj, micro_batches=micro_batches, dropout=False, prepare_batch=prepare)
    return step, state


def data_overrides(p) -> list[str]:
    """``--config.data.*`` flags pointing a stage config at a testbed's ``Paths``."""
    return [
        "--config.data.source=files",
        f"--config.data.syrip_syn_ann={p.train_syn_json}",
        f"--config.data.syrip_syn_images={p.train_syn_images}",
        f"--config.data.syrip_real_ann={p.train_real_json}",
        f"--config.data.syrip_real_images={p.train_real_images}",
        f"--config.data.val_ann={p.val_json}",
        f"--config.data.val_images={p.val_images}",
        f"--config.data.mini_rgbd_root={p.mini_rgbd}",
        "--config.data.mini_rgbd_sequences=(1,2)",
        f"--config.data.skeletons={p.skeletons}",
    ]


def stage_command(paths, workdir, stage: int = 1, **overrides) -> list[str]:
    """``python -m hyper_sapiens_jax.main`` for configs/stageN.py:tiny on a testbed at 64x48, batch 8."""
    settings = {
        "model.image_size": "(64,48)",
        "batch_size": 8,
        "eval_batch_size": 8,
        "log_every": 1,
        "eval.every": 1000,
        "checkpoint.every": 1000,
        **overrides,
    }
    return (
        [
            sys.executable,
            "-m",
            "hyper_sapiens_jax.main",
            f"--config={REPO}/configs/stage{stage}.py:tiny",
            f"--workdir={workdir}",
        ]
        + data_overrides(paths)
        + [f"--config.{k}={v}" for k, v in settings.items()]
    )


def with_unlabeled(batch: dict, flip_half: bool = True) -> dict:
    """A labelled batch plus ``u_*`` keys built from its own images: the weak view is the image, the
    strong view the image mirrored for every second sample (``flip_half``) with the matching affine."""

    images = np.asarray(batch["image"])
    n, _, w, _ = images.shape
    flipped = np.zeros(n, np.float32)
    if flip_half:
        flipped[1::2] = 1.0
    strong = np.where(flipped[:, None, None, None] > 0, images[:, :, ::-1], images)
    affine = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32), (n, 1, 1))
    affine[flipped > 0] = [[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]
    return {
        **batch,
        "u_weak": jnp.asarray(images),
        "u_strong": jnp.asarray(np.ascontiguousarray(strong)),
        "u_view_affine": jnp.asarray(affine),
        "u_view_flipped": jnp.asarray(flipped),
        "u_valid": jnp.ones(n, jnp.float32),
        "u_intrinsics": jnp.asarray(batch["intrinsics"]),
    }


def semisup_parts(seed: int = 0, **spec_changes):
    """(graphdef, start params (an nnx.State), spec, reference, prior, objective) for semi-supervised
    step tests on the tiny model: the full method (hybrid teacher, L_dev, both geometry terms,
    the 'copy' geometry teacher) unless ``spec_changes`` say otherwise; an untrained (perturbed) prior."""

    skeletons = sample_skeleton_keypoints(3, 200, (64, 48))
    reference = compute_reference(skeletons[..., :2] / 63.0, skeletons[..., 2] > 0)
    p = DiffusionPrior.create(PriorSpec(DenoiserSpec(width=32, depth=1)), seed=1)
    leaves, tree = jax.tree.flatten(p.params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    prior = DiffusionPrior(
        p.graphdef,
        jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]),
        p.spec,
    )
    settings = dict(
        teacher="hybrid",
        conf_threshold=0.0,
        kps_threshold=0.0,
        keypoint_conf=0.0,
        dev=1.0,
        rigidity=1.0,
        orthogonality=1.0,
    )
    spec = SemisupSpec(**{**settings, **spec_changes})
    model = Sapiens(MODEL, rngs=nnx.Rngs(seed))
    model.heads["depth"].conv_seg.bias[...] = jnp.full((1,), 0.5)
    graphdef, params = nnx.split(model)

    def obj(outputs, batch, normalizers, key, step):
        return objective(outputs, batch, LossWeights(depth=0.0, normal=0.0), normalizers, key=key)

    return graphdef, params, spec, reference, prior, obj


def parity_rows(script: str, testbed_root: Path, *args: str, devices: int = 8) -> dict[str, dict[str, str]]:
    """Run ``tests/scripts/SCRIPT TESTBED_ROOT ARGS...`` on ``devices`` fake CPU devices; its
    ``objective=NAME k=v ...`` lines, keyed by NAME."""
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/scripts" / script), str(testbed_root), *args],
        env=subprocess_env(devices),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {}
    for line in r.stdout.splitlines():
        if line.startswith("objective="):
            values = dict(kv.split("=") for kv in line.split())
            rows[values["objective"]] = values
    return rows
