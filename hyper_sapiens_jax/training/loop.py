"""The fine-tuning job (``config.job = 'finetune'``): one stage of the curriculum, run by ``main.py``.

  python -m hyper_sapiens_jax.main --config configs/stage2.py:tiny --workdir W [--mode eval]

What it does:
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
from hyper_sapiens_jax.data import builders
from hyper_sapiens_jax.data.pipeline import eval_batches, train_dataset, train_iterator
from hyper_sapiens_jax.evaluation.evaluate import evaluate, flip_test
from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.models.pos_embed import resize_pos_embed
from hyper_sapiens_jax.models.weights import WeightsError, abstract_model, flat_params, flatten, nest, param_shapes
from hyper_sapiens_jax.sharding import batch_sharding, global_batch, make_mesh, param_shardings, replicated
from hyper_sapiens_jax.training import checkpoint as ckpt
from hyper_sapiens_jax.training import flops, reference
from hyper_sapiens_jax.training.adapters import (
    learning_rate,
    loss_weights,
    make_optimizer,
    model_config,
    sds_scale,
    unfreeze_schedule,
)
from hyper_sapiens_jax.training.batch import complete_batch, normalize_images, step_inputs
from hyper_sapiens_jax.training.monitor import IntervalClock, MetricsWriter, StopFlag, interval_means
from hyper_sapiens_jax.training.objective import objective
from hyper_sapiens_jax.training.partition import split_flat, trainable_blocks_at
from hyper_sapiens_jax.training.state import TrainState, merge_model
from hyper_sapiens_jax.training.step import make_train_step

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, bad init checkpoint, ...); the message says why."""


# =============================================================================================
# Config -> pieces
# =============================================================================================
def initial_params(config: ml_collections.ConfigDict, mcfg: ModelConfig) -> dict[tuple, np.ndarray]:
    """Flat float32 parameters to start from: ``config.init_from`` where it has them, random elsewhere."""
    if not config.init_from:
        log.info("init: random (seed %d); set config.init_from to start from Sapiens weights", config.seed)
        return flat_params(Sapiens(mcfg, rngs=nnx.Rngs(config.seed)))
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
    out = flat_params(Sapiens(mcfg, rngs=nnx.Rngs(config.seed))) if missing else {}
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
    return out


def put(tree: Any, shardings: Any) -> Any:
    """Host arrays (identical on every process) -> global arrays with the given shardings."""

    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


# =============================================================================================
# The state layout of one trainable split, and the jitted functions over it
# =============================================================================================
@dataclasses.dataclass
class Extension:
    """What a job built on this loop adds to it (the semi-supervised job, ``semisup.job``).

    ``make_step(graphdef, template, tx, objective_fn)`` returns ``step(state, batch, key, *consts)``
    in place of ``make_train_step``'s; ``consts`` (with ``const_shardings``) are device trees passed
    to every step (e.g. a frozen teacher's weights); ``dataset`` wraps the labelled training
    dataset (e.g. zips in the unlabelled batches); ``batch_keys`` are the extra batch keys the step
    reads."""

    make_step: Callable[..., Callable]
    consts: tuple = ()
    const_shardings: tuple = ()
    dataset: Callable[[Any], Any] = lambda ds: ds
    batch_keys: tuple[str, ...] = ()


@dataclasses.dataclass
class Layout:
    """Everything that depends on which blocks train: optimizer, shardings, jitted step / eval."""

    blocks: int | None
    pos_embed: bool
    frozen_heads: tuple[str, ...]
    tx: optax.GradientTransformation
    abstract: TrainState
    shardings: TrainState
    step: Any
    heatmaps: Any


def make_layout(
    config,
    mcfg: ModelConfig,
    mesh,
    graphdef,
    template,
    blocks: int | None,
    objective_fn,
    extension: Extension | None = None,
) -> Layout:
    shapes = {p: jax.ShapeDtypeStruct(s, jnp.float32) for p, s in param_shapes(mcfg).items()}
    pos_embed = config.get("train_pos_embed", True)
    frozen_heads = tuple(config.get("frozen_heads", ()))
    train, frozen = split_flat(shapes, mcfg.spec.num_layers, blocks, pos_embed, frozen_heads)
    train, frozen = nest(train), nest(frozen)
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
            template,
            tx,
            objective_fn,
            micro_batches=config.micro_batches,
            ema_decay=config.ema_decay,
            prepare_batch=functools.partial(complete_batch, heatmap_sigma=config.data.heatmap_sigma),
        )
        const_sh = ()
    else:
        step_fn = extension.make_step(graphdef, template, tx, objective_fn)
        const_sh = extension.const_shardings
    step = jax.jit(
        step_fn, in_shardings=(shardings, b_sh, rep, *const_sh), out_shardings=(shardings, rep), donate_argnums=0
    )

    def heatmaps(ema, frozen, images):
        forward = lambda x: merge_model(graphdef, template, ema, frozen)(x)["pose"]
        images = normalize_images(images)
        return flip_test(forward, images) if config.eval.flip_test else forward(images)

    hm = jax.jit(heatmaps, in_shardings=(shardings.ema, shardings.frozen, b_sh), out_shardings=b_sh)
    return Layout(blocks, pos_embed, frozen_heads, tx, abstract, shardings, step, hm)


def fresh_state(layout: Layout, flat: dict[tuple, np.ndarray], num_layers: int) -> TrainState:
    train, frozen = split_flat(flat, num_layers, layout.blocks, layout.pos_embed, layout.frozen_heads)
    params = put(nest(train), layout.shardings.params)
    frozen = put(nest(frozen), layout.shardings.frozen)
    init = jax.jit(
        lambda p, f: TrainState(
            step=jnp.zeros((), jnp.int32),
            params=p,
            frozen=f,
            opt_state=layout.tx.init(p),
            ema=jax.tree.map(jnp.copy, p),
        ),
        out_shardings=layout.shardings,
    )
    return init(params, frozen)


def _transplant(new: Any, old: Any) -> Any:
    """Leaves of ``new`` whose key path (and shape) exists in ``old`` take the old value."""
    old_leaves = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(old)[0]}
    paths, treedef = jax.tree_util.tree_flatten_with_path(new)
    leaves = [old_leaves.get(jax.tree_util.keystr(p), v) for p, v in paths]
    leaves = [o if o.shape == v.shape else v for o, (_, v) in zip(leaves, paths)]
    return jax.tree.unflatten(treedef, leaves)


def resplit(state: TrainState, old: Layout, new: Layout, num_layers: int) -> TrainState:
    """Progressive unfreezing: move parameters between the frozen and trainable trees; newly trainable
    ones start their EMA at their value and their Adam moments at 0, the others keep theirs."""

    def fn(state: TrainState) -> TrainState:
        every = {**flatten(state.frozen), **flatten(state.params)}
        train, frozen = split_flat(every, num_layers, new.blocks, new.pos_embed, new.frozen_heads)
        ema_old = flatten(state.ema)
        params = nest(train)
        opt_state = _transplant(new.tx.init(params), state.opt_state)
        return TrainState(
            step=state.step,
            params=params,
            frozen=nest(frozen),
            opt_state=opt_state,
            ema=nest({p: ema_old.get(p, v) for p, v in train.items()}),
        )

    return jax.jit(fn, in_shardings=(old.shardings,), out_shardings=new.shardings, donate_argnums=0)(state)


# =============================================================================================
# Objective (losses + prior), data, evaluation
# =============================================================================================
def load_prior(config: ml_collections.ConfigDict):
    if config.loss.sds <= 0:
        return None
    if not config.prior_ckpt:
        raise TrainingError("config.loss.sds > 0 needs config.prior_ckpt (a workdir of configs/prior.py)")
    return load_prior_from(config.prior_ckpt)


def load_prior_from(workdir: str, field: str = "config.prior_ckpt"):
    """The frozen ``DiffusionPrior`` of a prior workdir; a TrainingError naming it (as ``field``) if
    unreadable."""
    from hyper_sapiens_jax.prior import DiffusionPrior

    try:
        prior = DiffusionPrior.load(workdir)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise TrainingError(f"{field}={workdir}: {e}") from None
    log.info("prior: %s (%d keypoints)", workdir, prior.num_keypoints)
    return prior


def make_objective(config: ml_collections.ConfigDict, bone_ref: dict | None, prior):
    weights = loss_weights(config)
    ref = (
        None
        if bone_ref is None
        else (jnp.asarray(bone_ref["mean"], jnp.float32), jnp.asarray(bone_ref["std"], jnp.float32))
    )
    prior_loss = None
    if prior is not None:
        from hyper_sapiens_jax.prior import sds_loss

        t_range = (config.loss.sds_t_min, config.loss.sds_t_max)

        def prior_loss(xy, visible, weight, key):
            value = sds_loss(
                prior, xy, visible * weight[:, None], key, t_range=t_range, weighting=config.loss.sds_weighting
            )
            return value / jnp.maximum(jnp.sum(weight), 1.0)

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
# The job
# =============================================================================================
def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    mode: str = "train",
    extension: Callable[..., Extension] | None = None,
) -> int:
    """Train (resuming from ``workdir`` when it holds checkpoints) or, with ``mode='eval'``, evaluate
    its latest checkpoint. Returns 0; raises TrainingError when the run cannot go on.

    ``extension(config=, workdir=, mesh=, mcfg=, mix=, paths=, sample_cfg=)`` -> ``Extension``
    builds what a job on top of this loop adds (training mode only)."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    mcfg = model_config(config)
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

    graphdef, template = nnx.split(abstract_model(mcfg))
    schedule = unfreeze_schedule(config)
    mix, paths = (
        builders.build_train_mix(config, ["val"]) if mode == "train" else (None, builders.resolved_paths(config.data))
    )
    objective_fn = None  # evaluation needs neither the prior nor the bone reference
    if mode == "train":
        bone_ref = None
        if needs_bone_reference(config):
            bone_ref = reference.load_or_compute(workdir, config, mix, builders.sample_config(config))
        objective_fn = make_objective(config, bone_ref, load_prior(config))
    ext = None
    if extension is not None and mode == "train":
        ext = extension(
            config=config,
            workdir=workdir,
            mesh=mesh,
            mcfg=mcfg,
            mix=mix,
            paths=paths,
            sample_cfg=builders.sample_config(config),
        )
    layouts: dict[Any, Layout] = {}

    def layout_for(blocks):
        if blocks not in layouts:
            layouts[blocks] = make_layout(config, mcfg, mesh, graphdef, template, blocks, objective_fn, ext)
        return layouts[blocks]

    c = config.checkpoint
    mngr = ckpt.manager(workdir / ckpt.CHECKPOINT_DIR, every=c.every, keep=c.keep, keep_best=c.keep_best)
    writer = MetricsWriter(workdir)
    val = builders.build_source("val", paths, config.data.skip_bad_records)
    sample_cfg = builders.sample_config(config)

    def run_eval(state: TrainState, layout: Layout) -> dict[str, Any]:
        t0 = time.perf_counter()
        local = config.eval_batch_size // jax.process_count()
        batches = eval_batches(
            val, sample_cfg, local, process_index=jax.process_index(), process_count=jax.process_count()
        )
        result = evaluate(
            lambda b: layout.heatmaps(state.ema, state.frozen, b["image"]),
            batches,
            lambda b: global_batch({"image": b["image"]}, mesh),
            input_wh=sample_cfg.input_wh,
            gt_file=paths.get("val_ann"),
            pck_threshold=config.eval.pck_threshold,
            pck_norm=config.eval.pck_norm,
        )
        step = int(jax.device_get(state.step))
        row = {"step": step, "stage": config.stage, **result, "eval_s": round(time.perf_counter() - t0, 2)}
        writer.row(METRICS_FILE, row, "val")
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
        return row

    try:
        start = mngr.latest_step() or 0
        if mode == "eval":
            if not start:
                raise TrainingError(f"--mode eval: no checkpoint in {workdir / ckpt.CHECKPOINT_DIR}")
            layout = layout_for(ckpt.read_meta(mngr, start)["trainable_blocks"])
            state = ckpt.restore(mngr, start, layout.abstract, layout.shardings)
            run_eval(state, layout)
            return 0
        dataset = train_dataset(
            mix,
            sample_cfg,
            seed=config.seed,
            num_batches=config.num_steps,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        if ext is not None:
            dataset = ext.dataset(dataset)
        data_iter = train_iterator(dataset, worker_count=config.data.worker_count)
        if start:
            layout = layout_for(ckpt.read_meta(mngr, start)["trainable_blocks"])
            state = ckpt.restore(mngr, start, layout.abstract, layout.shardings, data_iter)
            log.info("resumed from %s at step %d", workdir / ckpt.CHECKPOINT_DIR, start)
        else:
            layout = layout_for(trainable_blocks_at(0, schedule))
            state = fresh_state(layout, initial_params(config, mcfg), mcfg.spec.num_layers)
        if start >= config.num_steps:
            log.info("already trained to step %d (num_steps %d)", start, config.num_steps)
            return 0
        _train(config, mcfg, mesh, state, layout, layout_for, schedule, data_iter, mngr, writer, run_eval, start, ext)
        return 0
    finally:
        mngr.wait_until_finished()
        mngr.close()
        writer.close()


def _train(
    config, mcfg, mesh, state, layout, layout_for, schedule, data_iter, mngr, writer, run_eval, start: int, ext=None
) -> None:
    num_layers = mcfg.spec.num_layers
    stop = StopFlag()
    meta = lambda lay: {
        "stage": config.stage,
        "trainable_blocks": lay.blocks,
        "train_pos_embed": lay.pos_embed,
        "frozen_heads": list(lay.frozen_heads),
        "arch": mcfg.arch,
    }
    flops_per_step = flops.train_flops_per_image(mcfg) * config.batch_size
    peak = flops.peak_flops_per_device(config.peak_tflops)
    lr = learning_rate(config)
    n_train = sum(x.size for x in jax.tree.leaves(layout.abstract.params))
    log.info(
        "training steps %d -> %d: batch %d (%d micro-batches), %.2fM trainable params (blocks: %s), "
        "%.1f GFLOPs/image (train)",
        start,
        config.num_steps,
        config.batch_size,
        config.micro_batches,
        n_train / 1e6,
        "all" if layout.blocks is None else layout.blocks,
        flops_per_step / config.batch_size / 1e9,
    )
    key = jax.random.key(config.seed)
    pending: list[dict[str, jax.Array]] = []
    clock = IntervalClock(start)
    step = start
    try:
        while step < config.num_steps:
            blocks = trainable_blocks_at(step, schedule)
            if blocks != layout.blocks:
                new = layout_for(blocks)
                state = resplit(state, layout, new, num_layers)
                log.info("step %d: unfreezing -> trainable blocks %s", step, "all" if blocks is None else blocks)
                layout = new
            local = next(data_iter)
            batch = global_batch(step_inputs(local, ext.batch_keys if ext else ()), mesh)
            state, metrics = layout.step(state, batch, jax.random.fold_in(key, step), *(ext.consts if ext else ()))
            pending.append(metrics)
            step += 1
            final = step == config.num_steps
            log_now = step % config.log_every == 0 or final
            eval_now = step % config.eval.every == 0 or final
            stop_now = log_now and stop.agreed()
            save_now = final or eval_now or stop_now or mngr.should_save(step)
            if log_now or save_now:
                means = interval_means(pending, clock.first_step, step, mngr.latest_step(), TrainingError)
                pending = []
                dt = clock.lap(step)
                util = flops.mfu(flops_per_step, dt, peak, mesh.devices.size)
                row = {
                    "step": step,
                    "stage": config.stage,
                    **means,
                    "lr": float(lr(step)),
                    "step_s": round(dt, 4),
                    "images_per_s": round(config.batch_size / dt, 2),
                    **({"mfu": round(util, 4)} if util is not None else {}),
                }
                writer.row(TRAIN_LOG_FILE, row, "train")
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
            metrics_row = run_eval(state, layout) if eval_now else None
            if save_now:
                pck_key = f"pck@{config.eval.pck_threshold:g}"
                best = None if metrics_row is None else {ckpt.BEST_METRIC: metrics_row[pck_key]}
                ckpt.save(mngr, state, data_iter, meta(layout), metrics=best, force=final or eval_now or stop_now)
                clock.restart()  # evaluation / save time is not step time
            if stop_now:
                log.warning("stopped at step %d on request; restart with the same command to resume", step)
                return
    finally:
        stop.restore()
