"""The prior training job (``config.job = 'prior'``), run by ``hyper_sapiens_jax.main``.

  python -m hyper_sapiens_jax.main --config configs/prior.py --workdir W [--config.data.skeletons=PATH]

Writes into W: ``prior_config.json`` (what ``DiffusionPrior.load`` needs), ``checkpoints/`` (Orbax:
params, EMA params, optimiser state; a restart resumes from the latest), ``metrics.jsonl`` (train
and held-out denoising losses), and at the end ``prior_report.json`` + ``prior_samples.png``.
``--mode eval`` only (re)writes the report from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hyper_sapiens_jax.config import config_to_dict
from hyper_sapiens_jax.data.keypoints import KEYPOINT_SUBSETS
from hyper_sapiens_jax.data.sources import load_skeletons
from hyper_sapiens_jax.jobs.inputs import resolved_paths
from hyper_sapiens_jax.prior import checkpoint, report
from hyper_sapiens_jax.prior import normalize as norm
from hyper_sapiens_jax.prior.augment import AugmentSpec, training_poses
from hyper_sapiens_jax.prior.ddpm import q_sample
from hyper_sapiens_jax.prior.denoiser import DenoiserSpec
from hyper_sapiens_jax.prior.model import (
    CHECKPOINT_DIR,
    DiffusionPrior,
    PriorSpec,
    apply_denoiser,
    init_params,
    write_spec,
)
from hyper_sapiens_jax.training import checkpoint as ckpt
from hyper_sapiens_jax.training.monitor import MetricsWriter, StopFlag

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


class PriorTrainingError(RuntimeError):
    """The prior run cannot go on (a non-finite loss); the message says why."""


# =============================================================================================
# Data: skeletons -> (train, held-out) arrays
# =============================================================================================
def load_split(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Skeletons from ``config.data.skeletons`` (or the testbed), filtered and split.

    Returns ``train_xy`` (N, K, 2), ``train_vis`` (N, K), ``heldout_xy``, ``heldout_vis`` (float32).
    A pose needs ``min_visible`` joints; the held-out part is a seeded random fraction.
    """
    path = resolved_paths(config.data, ["skeletons"])["skeletons"]
    skel = load_skeletons(path)
    keep = (skel[..., 2] > 0).sum(-1) >= config.data.min_visible
    skel = skel[keep]
    if len(skel) < 2:
        raise ValueError(f"{path}: only {len(skel)} skeletons with >= {config.data.min_visible} joints")
    order = np.random.default_rng(config.seed).permutation(len(skel))
    n_held = min(max(1, round(config.data.heldout_fraction * len(skel))), len(skel) - 1)
    held, train = skel[order[:n_held]], skel[order[n_held:]]
    log.info(
        "skeletons: %d from %s (%d dropped: < %d joints); %d train, %d held out",
        len(skel),
        path,
        int((~keep).sum()),
        config.data.min_visible,
        len(train),
        len(held),
    )
    return {
        "path": str(path),
        "train_xy": train[..., :2],
        "train_vis": train[..., 2],
        "heldout_xy": held[..., :2],
        "heldout_vis": held[..., 2],
    }


# =============================================================================================
# Specs from the config
# =============================================================================================
def prior_spec(config: ml_collections.ConfigDict, data: dict[str, np.ndarray]) -> PriorSpec:
    m = config.model
    denoiser = DenoiserSpec(
        num_keypoints=data["train_xy"].shape[1],
        width=m.width,
        depth=m.depth,
        hidden_mult=m.hidden_mult,
        time_dim=m.time_dim,
    )
    norm_spec = norm.fit_spec(data["train_xy"], data["train_vis"], config.norm.min_torso_frac, config.norm.align_torso)
    z, _ = norm.normalize(data["train_xy"], data["train_vis"], norm_spec)
    x0_clip = config.diffusion.x0_clip_factor * float(jnp.sqrt(jnp.max(jnp.sum(z * z, -1))))
    return PriorSpec(denoiser, norm_spec, config.diffusion.schedule, config.diffusion.num_steps, x0_clip)


def augment_spec(config: ml_collections.ConfigDict) -> AugmentSpec:
    a, d = config.augment, config.dropout
    return AugmentSpec(
        rotate=a.rotate,
        max_rotation_deg=a.max_rotation_deg,
        flip=a.flip,
        dropout_prob=d.prob,
        dropout_max_rate=d.max_rate,
        subset_prob=d.subset_prob,
        subset=d.subset,
        min_visible=d.min_visible,
    )


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    o = config.optim
    lr = optax.warmup_cosine_decay_schedule(
        0.0, o.lr, o.warmup_steps, max(config.num_steps, o.warmup_steps + 1), o.lr * o.final_lr_frac
    )
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adamw(lr, weight_decay=o.weight_decay))


# =============================================================================================
# The pure train step (graphdef closed over, state in and out, several steps per call)
# =============================================================================================
def denoising_loss(graphdef, params, schedule, z, visible, t, noise) -> jax.Array:
    """Mean ε-MSE per visible coordinate; z, noise (N, K, 2), visible (N, K), t (N,)."""
    eps = apply_denoiser(graphdef, params, q_sample(schedule, z, t, noise), visible, t)
    err = jnp.sum((eps - noise) ** 2, -1) * visible
    return jnp.sum(err) / (2.0 * jnp.maximum(jnp.sum(visible), 1.0))


def make_train_chunk(graphdef, spec: PriorSpec, aug: AugmentSpec, tx, batch_size: int, ema_decay: float):
    """jit(state, data, keys (S,)) -> (state, per-step losses (S,)): S train steps in one call."""
    schedule = spec.make_schedule()

    def step(state, data, key, step_number):
        pick_key, aug_key, t_key, noise_key = jax.random.split(key, 4)
        idx = jax.random.randint(pick_key, (batch_size,), 0, data["xy"].shape[0])
        z, v = training_poses(aug_key, data["xy"][idx], data["vis"][idx], spec.norm, aug)
        t = jax.random.randint(t_key, (batch_size,), 0, spec.num_steps)
        noise = jax.random.normal(noise_key, z.shape, jnp.float32)
        loss, grads = jax.value_and_grad(lambda p: denoising_loss(graphdef, p, schedule, z, v, t, noise))(
            state["params"]
        )
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # Warm-up of the EMA decay so short runs (tests) still get sensible EMA weights.
        decay = jnp.minimum(ema_decay, (1.0 + step_number) / (10.0 + step_number))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        return {"params": params, "ema": ema, "opt_state": opt_state}, loss

    def chunk(state, data, keys, steps):
        return jax.lax.scan(lambda s, xs: step(s, data, *xs), state, (keys, steps))

    return jax.jit(chunk, donate_argnums=0)


def step_inputs(seed: int, start: int, count: int) -> tuple[jax.Array, jax.Array]:
    """Per-step keys fold_in(seed, step) and step numbers (S,): a resumed run sees the same randomness."""
    base, steps = jax.random.key(seed), jnp.arange(start, start + count)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(steps), steps.astype(jnp.float32)


# =============================================================================================
# Held-out denoising loss (fixed t and noise, so the curve is comparable across steps)
# =============================================================================================
def heldout_sets(data: dict[str, np.ndarray], spec: PriorSpec, seed: int, reps: int = 4) -> dict[str, tuple]:
    """Fixed evaluation inputs for 'all' visible joints and MINI-RGBD's 'common13' subset."""
    xy, vis = jnp.asarray(data["heldout_xy"]), jnp.asarray(data["heldout_vis"])
    subset = np.zeros(vis.shape[1], np.float32)
    subset[list(KEYPOINT_SUBSETS["common13"])] = 1.0
    out = {}
    for i, (name, v) in enumerate({"all": vis, "common13": vis * subset}.items()):
        z, _ = norm.normalize(xy, v, spec.norm)
        z, v = jnp.tile(z, (reps, 1, 1)), jnp.tile(v, (reps, 1))
        t_key, n_key = jax.random.split(jax.random.fold_in(jax.random.key(seed + 1), i))
        t = jax.random.randint(t_key, (z.shape[0],), 0, spec.num_steps)
        out[name] = (z, v, t, jax.random.normal(n_key, z.shape))
    return out


def make_eval(graphdef, spec: PriorSpec):
    schedule = spec.make_schedule()
    return jax.jit(lambda params, z, v, t, noise: denoising_loss(graphdef, params, schedule, z, v, t, noise))


# =============================================================================================
# The job
# =============================================================================================
def run(config: ml_collections.ConfigDict, workdir: str, mode: str = "train") -> int:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_split(config)
    spec = prior_spec(config, data)
    write_spec(
        workdir,
        spec,
        {
            "skeletons": data["path"],
            "num_train": len(data["train_xy"]),
            "num_heldout": len(data["heldout_xy"]),
            "config": config_to_dict(config),
        },
    )

    graphdef, params = init_params(spec, config.seed)
    tx = optimizer(config)
    state = {"params": params, "ema": jax.tree.map(jnp.copy, params), "opt_state": tx.init(params)}
    mngr = checkpoint.manager(workdir / CHECKPOINT_DIR, config.checkpoint_every, config.keep_checkpoints)
    start, restored = ckpt.newest_readable(mngr, lambda step: checkpoint.restore(mngr, step, state), set_aside=True)
    if restored is not None:
        state = restored
        log.info("resumed from step %d", start)

    if mode == "eval" and not start:
        raise FileNotFoundError(f"--mode eval: no checkpoint in {workdir / CHECKPOINT_DIR}")
    finished = True
    if mode == "train" and start < config.num_steps:
        state, finished = train(config, workdir, spec, graphdef, tx, state, data, start, mngr)
    mngr.wait_until_finished()
    mngr.close()
    if not finished:
        return 0

    prior = DiffusionPrior(graphdef, state["ema"], spec)
    summary = report.write_report(prior, data, workdir, config.report, config.seed)
    log.info("report: %s", json.dumps(summary))
    return 0


def train(config, workdir: Path, spec: PriorSpec, graphdef, tx, state, data, start: int, mngr):
    """Train from ``start`` to ``config.num_steps``; returns (state, finished): the final state (saved),
    or, after a SIGTERM, the state saved at the chunk where it stopped and False. A non-finite loss
    raises before any save."""
    chunk_fn = make_train_chunk(graphdef, spec, augment_spec(config), tx, config.batch_size, config.ema_decay)
    eval_fn = make_eval(graphdef, spec)
    train_data = {"xy": jnp.asarray(data["train_xy"]), "vis": jnp.asarray(data["train_vis"])}
    evalsets = heldout_sets(data, spec, config.seed)
    log.info(
        "training the prior: %d -> %d steps, batch %d, %s",
        start,
        config.num_steps,
        config.batch_size,
        json.dumps(dataclasses.asdict(spec.denoiser)),
    )
    t0, step, losses = time.perf_counter(), start, []
    events = (config.eval_every, config.checkpoint_every)
    stop = StopFlag()
    try:
        while step < config.num_steps:
            # Chunks end on eval / checkpoint boundaries; most have the same length (one compile).
            n = min([config.steps_per_call, config.num_steps - step] + [e - step % e for e in events])
            state, chunk_losses = chunk_fn(state, train_data, *step_inputs(config.seed, step, n))
            step += n
            if not np.isfinite(float(jnp.sum(chunk_losses))):
                raise PriorTrainingError(
                    f"prior: non-finite loss between steps {step - n} and {step}; "
                    f"no checkpoint written after step {mngr.latest_step()}"
                )
            losses.append(chunk_losses)
            if step % config.eval_every == 0 or step == config.num_steps:
                row = {
                    "step": step,
                    "train_loss": float(jnp.mean(jnp.concatenate(losses))),
                    "elapsed_s": round(time.perf_counter() - t0, 2),
                }
                for name, args in evalsets.items():
                    row[f"heldout_loss_{name}"] = float(eval_fn(state["ema"], *args))
                losses = []
                MetricsWriter(workdir, tensorboard=False).row(METRICS_FILE, row)
                log.info(
                    "step %d  train %.4f  held-out (EMA) all %.4f  common13 %.4f  %.1fs",
                    step,
                    row["train_loss"],
                    row["heldout_loss_all"],
                    row["heldout_loss_common13"],
                    row["elapsed_s"],
                )
            final = step == config.num_steps
            stop_now = not final and stop.agreed()
            if final or stop_now or mngr.should_save(step):
                # A copy: the async save must not read buffers the next (donating) call overwrites.
                checkpoint.save(mngr, step, jax.tree.map(jnp.copy, state), force=final or stop_now)
            if stop_now:
                log.warning("prior: stopped at step %d on request; restart with the same command to resume", step)
                return state, False
    finally:
        stop.restore()
    log.info("trained %d steps in %.1fs", config.num_steps - start, time.perf_counter() - t0)
    return state, True
