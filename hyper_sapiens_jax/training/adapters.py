"""Config -> objects: the fine-tuning and pretraining jobs read their config only through these.

Each adapter refuses fields it does not know, naming them, so a typo in a config file or a
``--config.loss.bone_ratoi=...`` override fails at start-up instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hyper_sapiens_jax.config import base_config, check_values, parse_unfreeze
from hyper_sapiens_jax.models import ModelConfig
from hyper_sapiens_jax.training.objective import LossWeights
from hyper_sapiens_jax.training.optim import sapiens_adamw

# config.loss fields read elsewhere than LossWeights: the prior's schedule and timesteps (sds_scale,
# loop.make_objective) and the bone-ratio reference (training.reference).
LOSS_SETTINGS = frozenset({"sds_final", "sds_t_min", "sds_t_max", "sds_weighting", "bone_reference"})


# The fields the fine-tuning job reads from its plain sections (refused when unknown: ``check_sections``).
SECTION_FIELDS = {
    "optim": frozenset({"lr", "layer_decay", "weight_decay", "b1", "b2", "grad_clip", "warmup_steps", "final_lr_frac"}),
    "eval": frozenset({"every", "flip_test", "pck_threshold", "pck_norm", "blur_kernel"}),
    "checkpoint": frozenset({"every", "keep", "keep_best"}),
}


def refuse_unknown(section: str, keys, known) -> None:
    """ValueError naming the fields of ``config.<section>`` (``section`` '': the top level) that are
    not in ``known``."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        where = f"config.{section}" if section else "top-level config"
        raise ValueError(
            f"unknown {where} fields {unknown} (from the config file or a --config override); known: {sorted(known)}"
        )


def model_config(config: ml_collections.ConfigDict, *, ignore: tuple[str, ...] = ()) -> ModelConfig:
    """``config.arch`` + ``config.model`` -> ModelConfig (lists become tuples). Fields in ``ignore``
    are accepted and dropped (the pretraining job builds no heads); unknown ones are refused."""
    known = {f.name for f in dataclasses.fields(ModelConfig)} - {"arch"}
    refuse_unknown("model", config.model.keys(), known)
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.items() if k not in ignore}
    return ModelConfig(arch=config.arch, **fields)


def check_sections(config: ml_collections.ConfigDict) -> None:
    """Refuse unknown fields at the top level and in ``config.data``, ``config.optim``, ``config.eval``
    and ``config.checkpoint`` (a config file can add fields that no override check sees), and in
    ``config.model`` and ``config.loss`` (``model_config``, ``loss_weights``), step counts,
    batch sizes and intervals that are not positive, and any value outside its range
    (``config.check_values``): the fine-tuning job's start-up check."""
    for section, known in SECTION_FIELDS.items():
        refuse_unknown(section, config[section].keys(), known)
    defaults = base_config(config.arch)  # every fine-tuning config starts from these fields
    refuse_unknown("", config.keys(), set(defaults.keys()) | {"semisup"})
    refuse_unknown("data", config.data.keys(), defaults.data.keys())
    counts = {
        "num_steps": config.num_steps,
        "batch_size": config.batch_size,
        "eval_batch_size": config.eval_batch_size,
        "log_every": config.log_every,
        "micro_batches": config.micro_batches,
        "eval.every": config.eval.every,
        "checkpoint.every": config.checkpoint.every,
    }
    bad = {k: v for k, v in counts.items() if not (isinstance(v, int) and v > 0)}
    if bad:
        raise ValueError(f"config fields {bad} must be positive integers")
    check_values(config)  # every other value's range (config.CONSTRAINTS)
    model_config(config)
    loss_weights(config)


def loss_weights(config: ml_collections.ConfigDict) -> LossWeights:
    """``config.loss`` -> LossWeights; fields neither LossWeights nor ``LOSS_SETTINGS`` know are refused."""
    names = {f.name for f in dataclasses.fields(LossWeights)}
    refuse_unknown("loss", config.loss.keys(), names | LOSS_SETTINGS)
    return LossWeights(**{k: v for k, v in config.loss.items() if k in names})


def unfreeze_schedule(config: ml_collections.ConfigDict) -> list[tuple[int, int | None]]:
    """[(from_step, trainable_blocks)] from ``trainable_blocks`` and ``unfreeze``
    (``((FRACTION, BLOCKS), ...)``: from step round(FRACTION * num_steps) on)."""
    steps = [(round(f * config.num_steps), blocks) for f, blocks in parse_unfreeze(config.unfreeze)]
    return sorted([(0, config.trainable_blocks), *steps], key=lambda s: s[0])


def sds_scale(config: ml_collections.ConfigDict, step: jax.Array) -> jax.Array:
    """The prior weight's annealing factor at ``step`` (stage 3: linear from sds to sds_final)."""
    a, a_final = config.loss.sds, config.loss.sds_final
    if a <= 0 or a_final < 0:
        return jnp.float32(1.0)
    frac = jnp.clip(step.astype(jnp.float32) / max(config.num_steps, 1), 0.0, 1.0)
    return 1.0 + (a_final / a - 1.0) * frac


def cosine_schedule(peak: float, optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from ``peak`` x 1e-3 over ``optim.warmup_steps``, then cosine to ``peak`` x
    ``optim.final_lr_frac`` at ``num_steps`` (optax.warmup_cosine_decay_schedule)."""
    warmup = optim.warmup_steps
    return optax.warmup_cosine_decay_schedule(
        peak * 1e-3, peak, warmup, max(num_steps, warmup + 1), end_value=peak * optim.final_lr_frac
    )


def learning_rate(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The fine-tuning schedule: ``cosine_schedule`` at ``config.optim.lr``."""
    return cosine_schedule(config.optim.lr, config.optim, config.num_steps)


def make_optimizer(config: ml_collections.ConfigDict, trainable: Any, num_layers: int) -> optax.GradientTransformation:
    """The Sapiens AdamW (layer-wise LR decay, no decay on norms/biases/embeddings) for ``trainable``."""
    o = config.optim
    return sapiens_adamw(
        trainable,
        num_layers=num_layers,
        learning_rate=learning_rate(config),
        layer_decay=o.layer_decay,
        weight_decay=o.weight_decay,
        b1=o.b1,
        b2=o.b2,
        clip_norm=o.grad_clip or None,
    )
