r"""The MAE pretraining job (``config.job = 'pretrain'``, configs/pretrain.py), run by ``main.py``.

  python -m hyper_sapiens_jax.main --config configs/pretrain.py:tiny --workdir W \
      --config.data.source=files --config.data.images=/path/to/frames
  python -m hyper_sapiens_jax.main --config configs/pretrain.py:sapiens_0.3b --workdir W \
      --config.data.source=files --config.data.images=/data/infant_frames --config.init_from=ckpts/pre
  python -m hyper_sapiens_jax.main --config configs/pretrain.py:tiny --workdir W --mode eval

Sapiens pretrains each ViT with a masked autoencoder (``models.mae``); this job does the same, from
scratch (``config.init_from`` empty) or continuing from a Sapiens pretrain backbone converted with
``python -m convert_weights.torch_to_flax --pretrain FILE --image-size S,S --out DIR`` (domain-adaptive
pretraining, e.g. on a folder of infant video frames).

What it does:
  * builds the ('data', 'fsdp') mesh and the ``MAE`` model (a ``SapiensViT`` backbone + cls token +
    decoder); the optimised parameters and AdamW state live in a ``TrainState`` of pure dicts; with
    ``mae.learn_pos_embed=False`` the position embeddings sit in its ``frozen`` part (MAEViT keeps
    them fixed) and get no gradients or optimizer state;
  * streams Grain batches (``data.unlabeled``: random-resized / person-centred square crops, flips),
    takes jitted train steps (graphdef closed over, ``nnx.merge`` inside, donated state, FSDP /
    data-parallel shardings from ``hyper_sapiens_jax.sharding``), with masks drawn from
    ``fold_in(seed, step)`` so a resumed run sees the same masks;
  * logs the loss to ``train_log.jsonl`` and the console every ``log_every`` steps; saves Orbax
    checkpoints (state + Grain iterator, every ``checkpoint.every`` steps, on SIGTERM and at the end)
    and resumes from the workdir on restart; stops with an error on a non-finite loss (no save);
  * at the end exports the backbone (see ``export_backbone``).

``--mode eval`` restores the latest checkpoint, appends the mean loss over ``eval_batches`` batches
(fixed masks) to ``metrics.jsonl`` and (re)writes the export.

Workdir: ``config.json``, ``checkpoints/``, ``train_log.jsonl``; at the end ``params/`` +
``model_config.json`` (the backbone as a weights directory: ``config.init_from`` of the fine-tuning
stages, or of another pretraining run, can point at the workdir itself) and
``backbone_pretrain.safetensors`` (the Sapiens ``*_clean.pth`` layout: flat keys without
``backbone.``, ``cls_token`` (1, 1, D), ``pos_embed`` (1, 1 + N, D) with the cls entry first; torch
tensor layouts; ``meta`` as JSON strings in the metadata). Convert that file back with
``python -m convert_weights.torch_to_flax --pretrain W/backbone_pretrain.safetensors --image-size H,W``.
No torch is imported here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx, traverse_util
from jax.experimental import multihost_utils
from safetensors import SafetensorError
from safetensors.numpy import load_file

from convert_weights import layout
from convert_weights.torch_io import write_safetensors
from hyper_sapiens_jax.config import config_to_dict
from hyper_sapiens_jax.data.pipeline import train_iterator
from hyper_sapiens_jax.data.unlabeled import ImageFolderSource, crop_params, pretrain_dataset
from hyper_sapiens_jax.jobs.inputs import pretrain_source
from hyper_sapiens_jax.models.arch import ModelConfig
from hyper_sapiens_jax.models.mae import MAE
from hyper_sapiens_jax.models.pos_embed import infer_grid, resize_pos_embed
from hyper_sapiens_jax.models.weights import CONFIG_FILE, PARAMS_DIR, WeightsError, fill_state, state_to_flat
from hyper_sapiens_jax.sharding import batch_sharding, global_batch, make_mesh, param_shardings, replicated
from hyper_sapiens_jax.training import adapters
from hyper_sapiens_jax.training import checkpoint as ckpt
from hyper_sapiens_jax.training.monitor import IntervalClock, MetricsWriter, StopFlag, interval_means
from hyper_sapiens_jax.training.optim import map_params
from hyper_sapiens_jax.training.state import TrainState
from hyper_sapiens_jax.training.trainer import put

log = logging.getLogger(__name__)
TRAIN_LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.jsonl"
EXPORT_FILE = "backbone_pretrain.safetensors"
# MAE-only parameters; the rest (paths under 'backbone') is the fine-tuned model's backbone.
CLS_TOKEN, CLS_POS = ("cls_token",), ("cls_pos",)
POS_EMBED = ("backbone", "pos_embed")
_NO_DECAY_NAMES = ("bias", "pos_embed", "cls_token", "cls_pos", "mask_token")


class PretrainError(RuntimeError):
    """The pretraining run cannot go on (bad config, init checkpoint, non-finite loss); says why."""


# =============================================================================================
# Config -> pieces
# =============================================================================================
def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The backbone's ``ModelConfig`` (no heads: ``config.model.heads`` is ignored) from ``config.arch``
    and ``config.model`` (unknown fields refused); square."""
    mcfg = adapters.model_config(config, ignore=("heads",)).replace(heads=())
    if mcfg.image_size[0] != mcfg.image_size[1]:
        raise PretrainError(f"config.model.image_size {mcfg.image_size}: MAE pretraining uses square inputs")
    return mcfg


def build_model(config: ml_collections.ConfigDict, mcfg: ModelConfig, *, seed: int | None = None) -> MAE:
    """The ``MAE`` of the config (random MAE init with ``seed``, default ``config.seed``)."""
    m = config.mae
    return MAE(
        mcfg,
        mask_ratio=m.mask_ratio,
        decoder_dim=m.decoder_dim,
        decoder_depth=m.decoder_depth,
        decoder_heads=m.decoder_heads,
        norm_pix=m.norm_pix,
        sincos_init=not m.learn_pos_embed,
        rngs=nnx.Rngs(config.seed if seed is None else seed),
    )


def build_source(config: ml_collections.ConfigDict):
    """The unlabelled image source of ``config.data.source``: 'files' or 'testbed'."""
    d = config.data
    if d.source == "files":
        if not d.images:
            raise PretrainError(
                "config.data.source='files' needs config.data.images (a folder of "
                ".jpg/.jpeg/.png images, searched recursively): set "
                "--config.data.images=/path/to/frames"
            )
        return ImageFolderSource(d.images)
    if d.source == "testbed":
        return pretrain_source(d)
    raise PretrainError(f"config.data.source={d.source!r} must be 'files' or 'testbed'")


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up (from lr x 1e-3) then cosine to lr x final_lr_frac; lr = optim.lr, times
    batch_size / 256 when ``optim.scale_lr`` (MAE's rule)."""
    o = config.optim
    peak = o.lr * (config.batch_size / 256 if o.scale_lr else 1.0)
    return adapters.cosine_schedule(peak, o, config.num_steps)


def applies_weight_decay(path: tuple, value: Any) -> bool:
    """mmpretrain's MAE recipe: no decay on 1-D parameters (norms), biases, tokens, position embeddings."""
    return jnp.ndim(value) > 1 and path[-1] not in _NO_DECAY_NAMES


def make_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """AdamW (optim.b1 / b2 / weight_decay) on ``params`` (an ``nnx.State``), optional global-norm clip."""
    o = config.optim
    mask = map_params(applies_weight_decay, params)
    chain = [optax.clip_by_global_norm(o.grad_clip)] if o.grad_clip else []
    chain.append(optax.adamw(learning_rate(config), b1=o.b1, b2=o.b2, eps=1e-8, weight_decay=o.weight_decay, mask=mask))
    return optax.chain(*chain)


def fixed_paths(config: ml_collections.ConfigDict) -> set[tuple]:
    """Parameters kept out of the optimizer: the position embeddings unless ``mae.learn_pos_embed``."""
    return set() if config.mae.learn_pos_embed else {POS_EMBED, CLS_POS}


def trainable_filter(config: ml_collections.ConfigDict) -> nnx.filterlib.Filter:
    """The NNX filter of the parameters the optimizer updates (all but ``fixed_paths``)."""
    fixed = fixed_paths(config)
    return nnx.All(nnx.Param, lambda path, _: tuple(path) not in fixed)


# =============================================================================================
# Initial weights
# =============================================================================================
def _backbone_from_safetensors(path: Path, mcfg: ModelConfig, shapes: dict[tuple, tuple]) -> dict[tuple, np.ndarray]:
    """A Sapiens pretrain-layout .safetensors file (flat keys, cls + grid pos_embed) -> flat MAE params
    for the backbone, ``cls_token`` and ``cls_pos`` (when the file has them)."""
    try:
        raw = {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}
    except (SafetensorError, OSError) as e:
        raise PretrainError(f"config.init_from={path}: not a readable safetensors file: {e}") from None
    sd, _ = layout.add_backbone_prefix(raw)
    rules = layout.backbone_rules(mcfg.spec)
    out: dict[tuple, np.ndarray] = {}
    try:
        arch = layout.infer_backbone(sd, str(path))[0]
        if arch != mcfg.arch:
            raise PretrainError(
                f"config.init_from={path} holds a {arch} backbone, the config pretrains "
                f"{mcfg.arch} (use configs/pretrain.py:{arch})"
            )
        layout.check_keys(sd, rules, str(path), (layout.BACKBONE_PREFIX,))
        pos = sd[layout.BACKBONE_PREFIX + "pos_embed"]
        _, extra = infer_grid(pos.shape[1], mcfg.grid)
        if extra and CLS_TOKEN[0] in raw:
            out[CLS_POS] = pos[:, :1].astype(np.float32)
        out.update(layout.torch_to_flax_params(sd, rules, shapes, str(path), lambda w: resize_pos_embed(w, mcfg.grid)))
    except layout.LayoutError as e:
        raise PretrainError(f"config.init_from: {e}") from None
    if CLS_TOKEN[0] in raw:
        out[CLS_TOKEN] = raw[CLS_TOKEN[0]].reshape(shapes[CLS_TOKEN])
    return out


def _backbone_from_dir(path: Path, mcfg: ModelConfig, shapes: dict[tuple, tuple]) -> dict[tuple, np.ndarray]:
    """The backbone of a weights directory / training workdir (``checkpoint.load_any``)."""
    try:
        src_cfg, src, info = ckpt.load_any(path)
    except WeightsError as e:
        raise PretrainError(f"config.init_from: {e}") from None
    if src_cfg.arch != mcfg.arch:
        raise PretrainError(
            f"config.init_from={path} holds a {src_cfg.arch} model, the config pretrains "
            f"{mcfg.arch} (use configs/pretrain.py:{src_cfg.arch})"
        )
    out = {}
    for p, value in src.items():
        if p[0] != "backbone":
            continue
        if p == POS_EMBED and value.shape != shapes[p]:
            value = resize_pos_embed(value, mcfg.grid, src_cfg.grid)
        if p not in shapes or value.shape != shapes[p]:
            raise PretrainError(
                f"config.init_from={path}: {'/'.join(map(str, p))} has shape {value.shape}, "
                f"the model needs {shapes.get(p)}"
            )
        out[p] = value
    log.info("init_from %s (%s)", info["source"], info["kind"])
    return out


def initial_params(config: ml_collections.ConfigDict, mcfg: ModelConfig) -> dict[tuple, np.ndarray]:
    """Flat float32 MAE parameters: random (MAE init), with the backbone (and the cls token, from a
    .safetensors file) replaced by ``config.init_from``'s when set."""
    # Jitted: an eager init dispatches (and compiles) every random op on its own.
    flat = state_to_flat(jax.jit(lambda: nnx.state(build_model(config, mcfg), nnx.Param))())
    if not config.init_from:
        log.info("init: random (MAE init, seed %d)", config.seed)
        return flat
    path = Path(config.init_from).expanduser()
    shapes = {p: v.shape for p, v in flat.items()}
    if path.is_file() and path.suffix == ".safetensors":
        loaded = _backbone_from_safetensors(path, mcfg, shapes)
    elif path.is_dir():
        loaded = _backbone_from_dir(path, mcfg, shapes)
    else:
        raise PretrainError(f"config.init_from={path}: neither a weights directory nor a .safetensors file")
    missing = [p for p in flat if p[0] == "backbone" and p not in loaded]
    if missing:
        raise PretrainError(f"config.init_from={path}: no {'/'.join(map(str, missing[0]))}")
    flat.update(loaded)
    fresh = sorted({"/".join(map(str, p[:1])) for p in flat if p not in loaded})
    log.info("init: backbone from %s; %s start fresh", path, ", ".join(fresh))
    return flat


# =============================================================================================
# The train step
# =============================================================================================
def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation):
    """``step(state, images (B, S, S, 3), key) -> (state, metrics)``: one MAE step (jit it, donating state).

    The model is rebuilt from the closed-over graphdef and the state's parameters
    (``nnx.merge(graphdef, params, fixed)``); gradients flow only into ``state.params``.
    """

    def loss_fn(params, fixed, images, key):
        return nnx.merge(graphdef, params, fixed).loss(images, key)

    def step(state: TrainState, images: jax.Array, key: jax.Array):
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.frozen, images, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "nonfinite": jnp.logical_not(jnp.isfinite(loss)).astype(jnp.float32),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


# =============================================================================================
# Export
# =============================================================================================
def pretrain_state_dict(flat: dict[tuple, np.ndarray], mcfg: ModelConfig) -> dict[str, np.ndarray]:
    """Flat MAE params -> the Sapiens pretrain (``*_clean.pth``) state dict: keys without ``backbone.``,
    torch layouts, ``cls_token`` (1, 1, D) and ``pos_embed`` (1, 1 + N, D) = [cls_pos, grid]."""
    out = {}
    for rule in layout.backbone_rules(mcfg.spec):
        key = rule.key[len(layout.BACKBONE_PREFIX) :]
        value = layout.to_torch(rule.kind, np.asarray(flat[rule.path], np.float32))
        if rule.path == POS_EMBED:
            value = np.concatenate([np.asarray(flat[CLS_POS], np.float32), value], axis=1)
        out[key] = np.ascontiguousarray(value)
    out[CLS_TOKEN[0]] = np.ascontiguousarray(np.asarray(flat[CLS_TOKEN], np.float32))
    return out


def export_meta(config: ml_collections.ConfigDict, mcfg: ModelConfig, step: int) -> dict[str, Any]:
    """The ``meta`` of the exported file (like ``convert_weights.flax_to_torch.export_meta``)."""
    spec = mcfg.spec
    return {
        "arch": mcfg.arch,
        "embed_dims": spec.embed_dims,
        "num_layers": spec.num_layers,
        "num_heads": spec.num_heads,
        "image_size": list(mcfg.image_size),
        "patch_padding": mcfg.patch_padding,
        "task": "pretrain",
        "step": int(step),
        "pos_embed": f"1 cls + {mcfg.grid[0]}x{mcfg.grid[1]} grid",
        "mae": config.mae.to_dict(),
        "exported_by": "hyper_sapiens_jax.jobs.pretrain",
    }


def _host(tree: Any) -> Any:
    """Global arrays -> numpy on every process (an all-gather when they span processes)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def export_backbone(workdir: Path, config: ml_collections.ConfigDict, mcfg: ModelConfig, state: TrainState) -> Path:
    """Write the pretrained backbone into ``workdir`` (call on every process); returns the .safetensors path.

    ``params/`` + ``model_config.json``: the backbone as a weights directory (grid pos_embed, no cls),
    loadable by ``models.weights.load_weights`` / ``checkpoint.load_any``; the config is written last.
    ``backbone_pretrain.safetensors``: ``pretrain_state_dict`` with ``export_meta`` as JSON strings.
    """
    flat = {**state_to_flat(_host(state.frozen)), **state_to_flat(_host(state.params))}
    step = int(jax.device_get(state.step))
    backbone = traverse_util.unflatten_dict({p: v for p, v in flat.items() if p[0] == "backbone"})
    main = jax.process_index() == 0
    if main:
        (workdir / CONFIG_FILE).unlink(missing_ok=True)  # incomplete until rewritten below
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(workdir / PARAMS_DIR, backbone, force=True)
        ckptr.wait_until_finished()
    out = workdir / EXPORT_FILE
    if main:
        write_safetensors(out, pretrain_state_dict(flat, mcfg), export_meta(config, mcfg, step))
        mcfg.save(workdir / CONFIG_FILE)
        log.info("exported the backbone at step %d: %s and %s/ + %s", step, out, workdir / PARAMS_DIR, CONFIG_FILE)
    return out


# =============================================================================================
# The model, state and compiled step
# =============================================================================================
@dataclasses.dataclass
class CompiledMAE:
    """The MAE's parameter template, trainable split, optimizer, state shardings and jitted step."""

    graphdef: nnx.GraphDef
    template: nnx.State  # every parameter, float32 ShapeDtypeStructs
    trainable: Any  # the NNX filter of what the optimizer updates
    tx: optax.GradientTransformation
    abstract: TrainState
    shardings: TrainState
    step: Any  # jitted (state, images, key) -> (state, metrics), state donated

    def fresh_state(self, params: nnx.State) -> TrainState:
        """Step 0 from all the MAE's parameters, placed in the state's shardings."""
        train, fixed = nnx.split_state(params, self.trainable, ...)
        init = jax.jit(lambda p, f: _initial_state(p, f, self.tx), out_shardings=self.shardings)
        return init(put(train, self.shardings.params), put(fixed, self.shardings.frozen))


def _initial_state(params: nnx.State, fixed: nnx.State, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, frozen=fixed, opt_state=tx.init(params), ema=nnx.State({})
    )


def compile_mae(config: ml_collections.ConfigDict, mcfg: ModelConfig, mesh) -> CompiledMAE:
    """Everything the MAE job runs with, built from shapes only (no weights materialised)."""
    graphdef, template = nnx.split(nnx.eval_shape(lambda: build_model(config, mcfg)), nnx.Param)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), template)
    trainable = trainable_filter(config)
    train_sds, fixed_sds = nnx.split_state(template, trainable, ...)
    tx = make_optimizer(config, train_sds)
    abstract = jax.eval_shape(lambda p, f: _initial_state(p, f, tx), train_sds, fixed_sds)
    shardings = param_shardings(abstract, mesh)
    step = jax.jit(
        make_train_step(graphdef, tx),
        in_shardings=(shardings, batch_sharding(mesh), replicated(None, mesh)),
        out_shardings=(shardings, replicated(None, mesh)),
        donate_argnums=0,
    )
    return CompiledMAE(graphdef, template, trainable, tx, abstract, shardings, step)


# =============================================================================================
# The job
# =============================================================================================
def run(config: ml_collections.ConfigDict, workdir: str | Path, mode: str = "train") -> int:
    """Pretrain (resuming from ``workdir``'s latest checkpoint) and export; or, with ``mode='eval'``,
    evaluate and export the latest checkpoint. Returns 0; raises PretrainError when it cannot go on."""
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    mcfg = model_config(config)
    n_dev = mesh.devices.size
    if config.batch_size % n_dev:
        raise PretrainError(f"batch_size {config.batch_size} must be a multiple of the {n_dev} devices")
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(json.dumps(config_to_dict(config), indent=1))

    mae = compile_mae(config, mcfg, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(mae.template))
    n_backbone = sum(x.size for x in jax.tree.leaves(mae.template["backbone"]))
    log.info(
        "MAE pretraining: %s, %dx%d, mask %.2f, decoder %dx%d, %.2fM params (backbone %.2fM), "
        "%d devices (mesh data=%d fsdp=%d), %d process(es)",
        mcfg.arch,
        *mcfg.image_size,
        config.mae.mask_ratio,
        config.mae.decoder_depth,
        config.mae.decoder_dim,
        n_params / 1e6,
        n_backbone / 1e6,
        n_dev,
        mesh.shape["data"],
        mesh.shape["fsdp"],
        jax.process_count(),
    )

    source = build_source(config)
    params = crop_params(mcfg.image_size, config.data.aug)
    c = config.checkpoint
    mngr = ckpt.manager(workdir / ckpt.CHECKPOINT_DIR, every=c.every, keep=c.keep, keep_best=0)
    try:
        restore = lambda step, data_iter=None: ckpt.restore(mngr, step, mae.abstract, mae.shardings, data_iter)
        if mode == "eval":
            start, state = ckpt.newest_readable(mngr, restore)
            if state is None:
                raise PretrainError(f"--mode eval: no checkpoint in {workdir / ckpt.CHECKPOINT_DIR}")
            _evaluate(config, workdir, mesh, mae.graphdef, state, source, params)
            export_backbone(workdir, config, mcfg, state)
            return 0
        dataset = pretrain_dataset(
            source,
            params,
            seed=config.seed,
            global_batch=config.batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        data_iter = train_iterator(dataset, worker_count=config.data.worker_count)
        log.info("data: %s (%d images), crops %s", source, len(source), params)
        start, state = ckpt.newest_readable(mngr, lambda step: restore(step, data_iter), set_aside=True)
        if state is not None:
            log.info("resumed from %s at step %d", workdir / ckpt.CHECKPOINT_DIR, start)
        else:
            state = mae.fresh_state(fill_state(mae.template, initial_params(config, mcfg), "the MAE model"))
        if start < config.num_steps:
            state, finished = _train(config, workdir, mesh, state, mae.step, data_iter, mngr, start)
            if not finished:
                return 0
        else:
            log.info("already trained to step %d (num_steps %d)", start, config.num_steps)
        mngr.wait_until_finished()
        export_backbone(workdir, config, mcfg, state)
        return 0
    finally:
        mngr.wait_until_finished()
        mngr.close()


def _train(
    config, workdir: Path, mesh, state: TrainState, step_fn, data_iter, mngr, start: int
) -> tuple[TrainState, bool]:
    """Steps ``start`` -> ``num_steps``; returns (state, finished) (False after a SIGTERM stop)."""
    stop, writer = StopFlag(), MetricsWriter(workdir)
    lr = learning_rate(config)
    meta = {"job": "pretrain", "arch": config.arch, "trainable_blocks": None}
    key = jax.random.key(config.seed)
    pending: list[dict[str, jax.Array]] = []
    log.info(
        "training steps %d -> %d: batch %d, peak lr %.3g",
        start,
        config.num_steps,
        config.batch_size,
        float(lr(config.optim.warmup_steps)),
    )
    clock, step = IntervalClock(start), start
    try:
        while step < config.num_steps:
            batch = global_batch(next(data_iter), mesh)
            state, metrics = step_fn(state, batch["image"], jax.random.fold_in(key, step))
            pending.append(metrics)
            step += 1
            final = step == config.num_steps
            log_now = step % config.log_every == 0 or final
            stop_now = log_now and stop.agreed()
            save_now = final or stop_now or mngr.should_save(step)
            if log_now or save_now:
                means = interval_means(pending, clock.first_step, step, mngr.latest_step(), PretrainError)
                pending = []
                dt = clock.lap(step)
                row = {
                    "step": step,
                    **means,
                    "lr": float(lr(step)),
                    "step_s": round(dt, 4),
                    "images_per_s": round(config.batch_size / dt, 2),
                }
                writer.row(TRAIN_LOG_FILE, row, "train")
                log.info(
                    "step %5d/%d  loss %.4f  grad_norm %.3f  lr %.3g  %.3fs/step  %.1f img/s",
                    step,
                    config.num_steps,
                    means["loss"],
                    means["grad_norm"],
                    row["lr"],
                    dt,
                    row["images_per_s"],
                )
            if save_now:
                ckpt.save(mngr, state, data_iter, meta, force=final or stop_now)
                clock.restart()  # save time is not step time
            if stop_now and not final:
                log.warning("stopped at step %d on request; restart with the same command to resume", step)
                return state, False
    finally:
        stop.restore()
        writer.close()
    return state, True


def _evaluate(config, workdir: Path, mesh, graphdef, state: TrainState, source, params) -> float:
    """Mean MAE loss of the state over ``config.eval_batches`` batches (a fixed stream, fixed masks)."""
    dataset = pretrain_dataset(
        source,
        params,
        seed=config.seed + 1,
        global_batch=config.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    loss_fn = jax.jit(lambda p, f, x, k: nnx.merge(graphdef, p, f).loss(x, k))
    key = jax.random.key(config.seed + 1)
    losses = [
        float(loss_fn(state.params, state.frozen, global_batch(dataset[i], mesh)["image"], jax.random.fold_in(key, i)))
        for i in range(config.eval_batches)
    ]
    row = {"step": int(jax.device_get(state.step)), "loss": float(np.mean(losses)), "batches": len(losses)}
    MetricsWriter(workdir, tensorboard=False).row(METRICS_FILE, row)
    log.info("eval @ %d: MAE loss %.4f over %d batches", row["step"], row["loss"], row["batches"])
    return row["loss"]
