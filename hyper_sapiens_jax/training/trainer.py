"""The training engine of the fine-tuning jobs: ``Trainer`` (one run, set-up to checkpoints), its
phases (one compiled step per trainable split) and ``Extension`` (what a job on top adds: the
semi-supervised teachers). The job that drives it is ``jobs/finetune.py``.

What a run does:
  * builds the ('data', 'fsdp') mesh, the model (``config.init_from``: a converted Sapiens checkpoint
    or the previous stage's workdir; random otherwise) and the trainable split (last N blocks +
    pos_embed + final norm + heads, progressive unfreezing by ``config.unfreeze``);
  * streams the exact-ratio Grain mix, takes jitted FSDP train steps (donated state), logs step
    time / images/s / MFU, evaluates the EMA weights (flip test, DARK-UDP, PCK / OKS AP / G-Error);
  * checkpoints with Orbax (train state, EMA, data iterator; latest + best by PCK; preemption and
    SIGTERM saves) and resumes from the workdir on restart, exactly;
  * never saves a checkpoint after a non-finite loss: it stops with an error instead.

Workdir: ``config.json``, ``model_config.json``, ``bone_ratios.json`` (the bone-ratio reference),
``checkpoints/``, ``metrics.jsonl`` (one row per evaluation), ``train_log.jsonl`` (one row per log
interval), ``tensorboard/``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from hyper_sapiens_jax.config import config_to_dict
from hyper_sapiens_jax.data.pipeline import MixEntry, eval_batches, train_dataset, train_iterator
from hyper_sapiens_jax.data.topdown import SampleConfig
from hyper_sapiens_jax.evaluation.evaluate import evaluate, flip_test
from hyper_sapiens_jax.evaluation.metrics import check_coco_ground_truth
from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.models.pos_embed import resize_pos_embed
from hyper_sapiens_jax.models.weights import (
    WeightsError,
    abstract_model,
    abstract_params,
    param_shapes,
    params_state,
    state_to_flat,
)
from hyper_sapiens_jax.sharding import batch_sharding, global_batch, make_mesh, param_shardings, replicated
from hyper_sapiens_jax.training import checkpoint as ckpt
from hyper_sapiens_jax.training import flops, reference
from hyper_sapiens_jax.training.adapters import (
    check_sections,
    learning_rate,
    loss_weights,
    make_optimizer,
    model_config,
    sds_scale,
    unfreeze_schedule,
)
from hyper_sapiens_jax.training.batch import complete_batch, dense_plan, normalize_images, step_inputs
from hyper_sapiens_jax.training.monitor import IntervalClock, MetricsWriter, StopFlag, interval_means
from hyper_sapiens_jax.training.objective import objective
from hyper_sapiens_jax.training.partition import Trainable, trainable_blocks_at
from hyper_sapiens_jax.training.state import TrainState
from hyper_sapiens_jax.training.step import make_train_step

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, bad init checkpoint, ...); the message says why."""


# =============================================================================================
# Set-up: the parameters to start from, host trees onto the mesh
# =============================================================================================
def initial_params(config: ml_collections.ConfigDict, mcfg: ModelConfig) -> nnx.State:
    """The parameters to start from (float32 ``nnx.State``): ``config.init_from``'s where it has
    them (the position embedding resized to this grid), a random initialisation elsewhere."""
    random = lambda: nnx.state(Sapiens(mcfg, rngs=nnx.Rngs(config.seed)), nnx.Param)
    if not config.init_from:
        log.info("init: random (seed %d); set config.init_from to start from Sapiens weights", config.seed)
        return random()
    try:
        src_cfg, src, info = ckpt.load_any(config.init_from, raw=not config.init_from_ema)
    except WeightsError as e:
        raise TrainingError(f"config.init_from: {e}") from None
    if src_cfg.arch != mcfg.arch:
        raise TrainingError(
            f"config.init_from={config.init_from} holds a {src_cfg.arch} model, "
            f"the config trains {mcfg.arch} (set the config argument, e.g. stage2.py:{src_cfg.arch})"
        )
    shapes = param_shapes(mcfg)
    missing = sorted({"/".join(map(str, p[:2])) for p in shapes if p not in src})  # e.g. heads/depth
    # A random model only when something is missing (a 2B init is not free).
    out = state_to_flat(random()) if missing else {}
    for path, shape in shapes.items():
        if path not in src:
            continue
        value = src[path]
        if path == ("backbone", "pos_embed") and value.shape != shape:
            value = resize_pos_embed(value, mcfg.grid, src_cfg.grid)
        if value.shape != shape:
            raise TrainingError(
                f"config.init_from: {'/'.join(map(str, path))} has shape {value.shape}, the model needs {shape}"
            )
        out[path] = value
    log.info(
        "init: %s (%s%s)%s",
        info["source"],
        info["kind"],
        f", step {info['step']}, {info['weights']} weights" if info["kind"] == "run" else "",
        f"; {', '.join(missing)} start random" if missing else "",
    )
    return params_state(mcfg, out)


def put(tree: Any, shardings: Any) -> Any:
    """Host arrays (identical on every process) -> global arrays with the given shardings."""

    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


@dataclasses.dataclass(frozen=True)
class RunData:
    """What a run reads, resolved from ``config.data`` by its job (``jobs/inputs.py: run_data``):
    the sample settings (crop size, heatmap sigma, augmentation), the dataset paths, the evaluation
    source and, when training, the mix (sources with their exact per-step counts)."""

    sample: SampleConfig
    paths: dict[str, Any]
    val: Any
    mix: list[MixEntry] | None = None


# =============================================================================================
# Model and state: one unfreezing phase (its trainable set, optimizer, shardings, compiled step)
# =============================================================================================
@dataclasses.dataclass
class Extension:
    """What a job built on this loop adds to it (the semi-supervised job, ``jobs/semisup.py``).

    ``make_step(graphdef, tx, objective_fn)`` returns ``step(state, batch, key, *consts)`` in place
    of ``make_train_step``'s; ``consts`` (with ``const_shardings``) are device trees passed to every
    step (e.g. a frozen teacher's weights); ``dataset`` wraps the labelled training dataset (e.g.
    zips in the unlabelled batches); ``batch_keys`` are the extra batch keys the step reads."""

    make_step: Callable[..., Callable]
    consts: tuple = ()
    const_shardings: tuple = ()
    dataset: Callable[[Any], Any] = lambda ds: ds
    batch_keys: tuple[str, ...] = ()


@dataclasses.dataclass
class Phase:
    """One phase of progressive unfreezing: what trains, and everything that depends on it (the
    optimizer, the state's shapes and shardings, the compiled train step and eval forward)."""

    trainable: Trainable
    tx: optax.GradientTransformation
    abstract: TrainState
    shardings: TrainState
    step: Any  # jitted (state, batch, key, *consts) -> (state, metrics)
    heatmaps: Any  # jitted (ema, frozen, uint8 images) -> pose heatmaps (flip-tested if configured)


def compile_phase(
    config: ml_collections.ConfigDict,
    mcfg: ModelConfig,
    mesh,
    graphdef: nnx.GraphDef,
    blocks: int | None,
    objective_fn,
    extension: Extension | None = None,
) -> Phase:
    """The phase training the last ``blocks`` blocks (None: all), with the config's pos_embed and
    frozen-heads choices; its step and eval forward are jitted (compiled on first call)."""
    trainable = Trainable(
        mcfg.spec.num_layers, blocks, config.get("train_pos_embed", True), tuple(config.get("frozen_heads", ()))
    )
    train, frozen = trainable.split(abstract_params(mcfg))
    tx = make_optimizer(config, train, mcfg.spec.num_layers)
    abstract = jax.eval_shape(
        lambda p, f: TrainState(step=jnp.zeros((), jnp.int32), params=p, frozen=f, opt_state=tx.init(p), ema=p),
        train,
        frozen,
    )
    shardings = param_shardings(abstract, mesh)
    b_sh, rep = batch_sharding(mesh), replicated(None, mesh)
    if extension is None:
        step_fn = make_train_step(
            graphdef,
            tx,
            objective_fn,
            micro_batches=config.micro_batches,
            ema_decay=config.ema_decay,
            prepare_batch=functools.partial(complete_batch, heatmap_sigma=config.data.heatmap_sigma),
        )
        const_sh = ()
    else:
        step_fn = extension.make_step(graphdef, tx, objective_fn)
        const_sh = extension.const_shardings
    step = jax.jit(
        step_fn, in_shardings=(shardings, b_sh, rep, *const_sh), out_shardings=(shardings, rep), donate_argnums=0
    )

    def heatmaps(ema, frozen, images):
        forward = lambda x: nnx.merge(graphdef, ema, frozen)(x)["pose"]
        images = normalize_images(images)
        return flip_test(forward, images) if config.eval.flip_test else forward(images)

    hm = jax.jit(heatmaps, in_shardings=(shardings.ema, shardings.frozen, b_sh), out_shardings=b_sh)
    return Phase(trainable, tx, abstract, shardings, step, hm)


def fresh_state(phase: Phase, params: nnx.State) -> TrainState:
    """Step 0 of ``phase`` from all the model's parameters (host or device arrays): the trainable
    ones with zero Adam moments and their EMA at their value."""
    train, frozen = phase.trainable.split(params)
    init = jax.jit(
        lambda p, f: TrainState(
            step=jnp.zeros((), jnp.int32),
            params=p,
            frozen=f,
            opt_state=phase.tx.init(p),
            ema=jax.tree.map(jnp.copy, p),
        ),
        out_shardings=phase.shardings,
    )
    return init(put(train, phase.shardings.params), put(frozen, phase.shardings.frozen))


def enter_phase(state: TrainState, old: Phase, new: Phase) -> TrainState:
    """Progressive unfreezing: move parameters between the frozen and trainable states. Newly
    trainable ones start their EMA at their value and their Adam moments at 0; the others keep
    theirs (each per-parameter state of the optimizer is the new one, overlaid with the old one's
    entries for the parameters that stay trainable)."""
    keep = lambda old_tree: nnx.filter_state(old_tree, new.trainable.filter)

    def carry_over(fresh: Any, previous: Any) -> Any:
        return nnx.merge_state(fresh, keep(previous)) if isinstance(fresh, nnx.State) else previous

    def fn(state: TrainState) -> TrainState:
        params, frozen = new.trainable.split(nnx.merge_state(state.frozen, state.params))
        opt_state = jax.tree.map(
            carry_over, new.tx.init(params), state.opt_state, is_leaf=lambda x: isinstance(x, nnx.State)
        )
        return TrainState(
            step=state.step,
            params=params,
            frozen=frozen,
            opt_state=opt_state,
            ema=nnx.merge_state(params, keep(state.ema)),
        )

    return jax.jit(fn, in_shardings=(old.shardings,), out_shardings=new.shardings, donate_argnums=0)(state)


# =============================================================================================
# Objective (losses + prior), data, evaluation
# =============================================================================================
def make_objective(config: ml_collections.ConfigDict, bone_ref: dict | None, prior_loss: Callable | None = None):
    """The run's loss: ``objective`` with the config's weights, the bone-ratio reference ``bone_ref``
    (or None) and ``prior_loss(xy, visible, weight, key)`` (the SDS term, ``prior.sds.sds_term``;
    None without a prior)."""
    weights = loss_weights(config)
    ref = (
        None
        if bone_ref is None
        else (jnp.asarray(bone_ref["mean"], jnp.float32), jnp.asarray(bone_ref["std"], jnp.float32))
    )

    def fn(outputs, batch, normalizers, key, step):
        return objective(
            outputs,
            batch,
            weights,
            normalizers,
            bone_ref=ref,
            prior_loss=prior_loss,
            key=key,
            scales={"sds": sds_scale(config, step)},
        )

    return fn


def needs_bone_reference(config: ml_collections.ConfigDict) -> bool:
    return config.loss.bone_ratio > 0


# =============================================================================================
# The run, section by section
# =============================================================================================
class Trainer:
    """One fine-tuning run. Read top to bottom: set-up (``__init__``), data, model and state,
    the loop, evaluation, checkpoints."""

    # ---- set-up ------------------------------------------------------------------------------
    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | Path,
        data: RunData,
        mode: str = "train",
        extension: Callable[..., Extension] | None = None,
        prior_loss: Callable | None = None,
    ):
        """``data``: what the run reads (the job resolves it from ``config.data``); ``prior_loss``: the
        SDS term of the objective (``prior.sds.sds_term``), None without a prior; ``extension``: see
        ``Extension``."""
        self.config = config
        self.workdir = workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        check_sections(config)
        self.mesh = mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
        self.mcfg = mcfg = model_config(config)
        n_dev = mesh.devices.size
        if config.batch_size % (config.micro_batches * n_dev):
            raise ValueError(
                f"batch_size {config.batch_size} must be a multiple of micro_batches x devices = "
                f"{config.micro_batches} x {n_dev}"
            )
        if jax.process_index() == 0:
            mcfg.save(workdir / ckpt.MODEL_CONFIG_FILE)
            (workdir / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))
        log.info(
            "stage %d: %s, image %dx%d, heads %s, %d devices (mesh data=%d fsdp=%d), %d process(es)",
            config.stage,
            mcfg.arch,
            *mcfg.image_size,
            list(mcfg.heads),
            n_dev,
            mesh.shape["data"],
            mesh.shape["fsdp"],
            jax.process_count(),
        )
        self.graphdef = nnx.graphdef(abstract_model(mcfg))
        self.schedule = unfreeze_schedule(config)
        training = mode == "train"
        if training and data.mix is None:
            raise ValueError("a training run needs RunData.mix (jobs.inputs.run_data(config, 'train'))")
        self.sample_cfg, self.mix, self.paths, self.val = data.sample, data.mix, data.paths, data.val
        # Which mix sources' rows carry the dense targets to the device (training.batch).
        self.dense_plan = dense_plan([e.source for e in self.mix]) if training else None
        self.objective_fn = None  # evaluation needs neither the prior nor the bone reference
        self.ext = None
        if training:
            bone_ref = None
            if needs_bone_reference(config):
                bone_ref = reference.load_or_compute(workdir, config, self.mix, self.sample_cfg)
            self.objective_fn = make_objective(config, bone_ref, prior_loss)
            if extension is not None:
                self.ext = extension(
                    config=config,
                    workdir=workdir,
                    mesh=mesh,
                    mcfg=mcfg,
                    mix=self.mix,
                    paths=self.paths,
                    sample_cfg=self.sample_cfg,
                )
        self._phases: dict[int | None, Phase] = {}
        self.flops_per_step = flops.train_flops_per_image(mcfg) * config.batch_size  # for MFU
        self.peak = flops.peak_flops_per_device(config.peak_tflops)
        self.lr = learning_rate(config)
        c = config.checkpoint
        self.mngr = ckpt.manager(workdir / ckpt.CHECKPOINT_DIR, every=c.every, keep=c.keep, keep_best=c.keep_best)
        self.writer = MetricsWriter(workdir)
        if self.paths.get("val_ann"):  # OKS AP reads it at every evaluation: refuse a bad one now
            check_coco_ground_truth(self.paths["val_ann"])

    def close(self) -> None:
        """Wait for the last async save, then release the checkpoint manager and the writers."""
        self.mngr.wait_until_finished()
        self.mngr.close()
        self.writer.close()

    # ---- data --------------------------------------------------------------------------------
    def train_data(self):
        """The Grain iterator over this process's slice of the training mix (checkpointable)."""
        dataset = train_dataset(
            self.mix,
            self.sample_cfg,
            seed=self.config.seed,
            num_batches=self.config.num_steps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        if self.ext is not None:
            dataset = self.ext.dataset(dataset)
        return train_iterator(dataset, worker_count=self.config.data.worker_count)

    def device_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's host batch -> the global batch the step reads: only the keys it uses, and
        the dense targets only for the rows whose source carries them (``training.batch``)."""
        inputs = step_inputs(
            local,
            self.ext.batch_keys if self.ext else (),
            plan=self.dense_plan,
            row_offset=jax.process_index() * len(local["valid"]),
            multiple=len(self.mesh.local_devices),
            names=tuple(e.name for e in self.mix),
        )
        return global_batch(inputs, self.mesh)

    # ---- model and state ---------------------------------------------------------------------
    def phase(self, blocks: int | None) -> Phase:
        """The (cached) phase training the last ``blocks`` blocks."""
        if blocks not in self._phases:
            self._phases[blocks] = compile_phase(
                self.config, self.mcfg, self.mesh, self.graphdef, blocks, self.objective_fn, self.ext
            )
        return self._phases[blocks]

    def start_state(self, data_iter) -> tuple[TrainState, Phase, int]:
        """(state, phase, step): the workdir's newest readable checkpoint (``data_iter`` set to its
        position; damaged newer steps are set aside with a warning), else step 0 from
        ``config.init_from``."""
        start, restored = ckpt.newest_readable(self.mngr, lambda step: self.restore(step, data_iter), set_aside=True)
        if restored is not None:
            log.info("resumed from %s at step %d", self.workdir / ckpt.CHECKPOINT_DIR, start)
            return (*restored, start)
        phase = self.phase(trainable_blocks_at(0, self.schedule))
        return fresh_state(phase, initial_params(self.config, self.mcfg)), phase, 0

    def restore(self, step: int, data_iter=None) -> tuple[TrainState, Phase]:
        """The checkpoint at ``step`` and its phase (the trainable set it was saved with)."""
        phase = self.phase(ckpt.read_meta(self.mngr, step)["trainable_blocks"])
        return ckpt.restore(self.mngr, step, phase.abstract, phase.shardings, data_iter), phase

    # ---- the loop ----------------------------------------------------------------------------
    def train(self) -> int:
        """Train to ``config.num_steps`` (or until SIGTERM / preemption); returns 0."""
        config = self.config
        data_iter = self.train_data()
        state, phase, step = self.start_state(data_iter)
        if step >= config.num_steps:
            log.info("already trained to step %d (num_steps %d)", step, config.num_steps)
            return 0
        self._log_start(phase, step)
        stop = StopFlag()
        key = jax.random.key(config.seed)
        consts = self.ext.consts if self.ext else ()
        pending: list[dict[str, jax.Array]] = []
        clock = IntervalClock(step)
        try:
            while step < config.num_steps:
                blocks = trainable_blocks_at(step, self.schedule)
                if blocks != phase.trainable.blocks:
                    new = self.phase(blocks)
                    state = enter_phase(state, phase, new)
                    log.info("step %d: unfreezing -> trainable blocks %s", step, "all" if blocks is None else blocks)
                    phase = new
                batch = self.device_batch(next(data_iter))
                state, metrics = phase.step(state, batch, jax.random.fold_in(key, step), *consts)
                pending.append(metrics)
                step += 1
                final = step == config.num_steps
                log_now = step % config.log_every == 0 or final
                eval_now = step % config.eval.every == 0 or final
                stop_now = log_now and stop.agreed()
                save_now = final or eval_now or stop_now or self.mngr.should_save(step)
                if log_now or save_now:
                    means = interval_means(pending, clock.first_step, step, self.mngr.latest_step(), TrainingError)
                    pending = []
                    self._log_interval(step, means, clock.lap(step))
                row = self.evaluate(state, phase) if eval_now else None
                if save_now:
                    self.save(state, phase, data_iter, row, force=final or eval_now or stop_now)
                    clock.restart()  # evaluation / save time is not step time
                if stop_now:
                    log.warning("stopped at step %d on request; restart with the same command to resume", step)
                    return 0
        finally:
            stop.restore()
        return 0

    def _log_start(self, phase: Phase, step: int) -> None:
        config = self.config
        n_train = sum(x.size for x in jax.tree.leaves(phase.abstract.params))
        log.info(
            "training steps %d -> %d: batch %d (%d micro-batches), %.2fM trainable params (blocks: %s), "
            "%.1f GFLOPs/image (train)",
            step,
            config.num_steps,
            config.batch_size,
            config.micro_batches,
            n_train / 1e6,
            "all" if phase.trainable.blocks is None else phase.trainable.blocks,
            self.flops_per_step / config.batch_size / 1e9,
        )

    def _log_interval(self, step: int, means: dict[str, float], dt: float) -> None:
        """One ``train_log.jsonl`` row and console line for the interval ending at ``step``."""
        config = self.config
        util = flops.mfu(self.flops_per_step, dt, self.peak, self.mesh.devices.size)
        row = {
            "step": step,
            "stage": config.stage,
            **means,
            "lr": float(self.lr(step)),
            "step_s": round(dt, 4),
            "images_per_s": round(config.batch_size / dt, 2),
            **({"mfu": round(util, 4)} if util is not None else {}),
        }
        self.writer.row(TRAIN_LOG_FILE, row, "train")
        log.info(
            "step %5d/%d  loss %.4f  (%s)  %.3fs/step  %.1f img/s  MFU %s",
            step,
            config.num_steps,
            means["loss"],
            " ".join(f"{k} {v:.4f}" for k, v in means.items() if k not in ("loss", "grad_norm")),
            dt,
            config.batch_size / dt,
            "n/a" if util is None else f"{100 * util:.1f}%",
        )

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, state: TrainState, phase: Phase) -> dict[str, Any]:
        """Evaluate the EMA weights on the validation split; writes and returns the metrics row."""
        config, sample_cfg = self.config, self.sample_cfg
        t0 = time.perf_counter()
        local = config.eval_batch_size // jax.process_count()
        batches = eval_batches(
            self.val, sample_cfg, local, process_index=jax.process_index(), process_count=jax.process_count()
        )
        result = evaluate(
            lambda b: phase.heatmaps(state.ema, state.frozen, b["image"]),
            batches,
            lambda b: global_batch({"image": b["image"]}, self.mesh),
            input_wh=sample_cfg.input_wh,
            gt_file=self.paths.get("val_ann"),
            pck_threshold=config.eval.pck_threshold,
            pck_norm=config.eval.pck_norm,
            blur_kernel_size=config.eval.get("blur_kernel") or None,
            sigma=sample_cfg.heatmap_sigma,
        )
        step = int(jax.device_get(state.step))
        row = {"step": step, "stage": config.stage, **result, "eval_s": round(time.perf_counter() - t0, 2)}
        self.writer.row(METRICS_FILE, row, "val")
        log.info(
            "eval @ %d: PCK@%g %.4f (@0.2 %.3f)  AP %.4f  AP50 %.4f  G-Error %.5f (GT %.5f)  %d samples  %.1fs",
            step,
            config.eval.pck_threshold,
            row[f"pck@{config.eval.pck_threshold:g}"],
            row.get("pck@0.2", float("nan")),
            row.get("ap", float("nan")),
            row.get("ap50", float("nan")),
            row["g_error"],
            row["g_error_gt"],
            row["num_samples"],
            row["eval_s"],
        )
        orient = row["pck_by_orientation"]
        log.info(
            "  PCK@0.2 by body orientation: %s",
            "  ".join(f"{b}° {v:.3f} ({n})" for b, v, n in zip(orient["bins"], orient["pck@0.2"], orient["samples"])),
        )
        return row

    def evaluate_latest(self) -> int:
        """``--mode eval``: evaluate the workdir's newest readable checkpoint; returns 0."""
        _, restored = ckpt.newest_readable(self.mngr, self.restore)
        if restored is None:
            raise TrainingError(f"--mode eval: no checkpoint in {self.workdir / ckpt.CHECKPOINT_DIR}")
        self.evaluate(*restored)
        return 0

    # ---- checkpoints -------------------------------------------------------------------------
    def save(self, state: TrainState, phase: Phase, data_iter, row: dict | None, *, force: bool) -> None:
        """Checkpoint ``state`` (async), ranked by validation PCK when ``row`` has it."""
        pck_key = f"pck@{self.config.eval.pck_threshold:g}"
        best = None if row is None else {ckpt.BEST_METRIC: row[pck_key]}
        meta = {"stage": self.config.stage, **phase.trainable.meta(), "arch": self.mcfg.arch}
        ckpt.save(self.mngr, state, data_iter, meta, metrics=best, force=force)
