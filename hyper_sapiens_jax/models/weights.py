"""Model weights on disk: a directory with ``model_config.json`` and an Orbax ``params/`` tree.

This is the format ``convert_weights.torch_to_flax`` writes and ``inference.load_predictor`` reads.
Parameters are stored as float32 in the Flax layout (``nnx.state(model, nnx.Param)`` as a pure dict).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from hyper_sapiens_jax.models.arch import ModelConfig
from hyper_sapiens_jax.models.sapiens import Sapiens

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
INFO_FILE = "conversion.json"

KeyPath = tuple  # a Flax parameter path, e.g. ('backbone', 'layers', 0, 'attn', 'qkv', 'kernel')


def error_summary(e: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (Orbax / TensorStore errors run to pages), or its type."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


class WeightsError(ValueError):
    """A weights directory is missing, incomplete or does not match its config."""


def abstract_model(config: ModelConfig) -> Sapiens:
    """The model with ShapeDtypeStruct leaves: shapes without allocating or initialising anything."""
    return nnx.eval_shape(lambda: Sapiens(config, rngs=nnx.Rngs(0)))


def abstract_params(config: ModelConfig, sharding: Any = None) -> nnx.State:
    """The model's parameter ``nnx.State`` as float32 ShapeDtypeStructs (optionally all on ``sharding``)."""
    to_sds = lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=sharding)
    return jax.tree.map(to_sds, nnx.state(abstract_model(config), nnx.Param))


def param_shapes(config: ModelConfig) -> dict[KeyPath, tuple[int, ...]]:
    """Flat map from every parameter path of the model to its shape."""
    flat = nnx.to_flat_state(nnx.state(abstract_model(config), nnx.Param))
    return {path: tuple(v.get_value().shape) for path, v in flat}


def flat_params(model: nnx.Module) -> dict[KeyPath, np.ndarray]:
    """Flat map path -> numpy array of the model's parameters."""
    return state_to_flat(nnx.state(model, nnx.Param))


def fill_state(abstract: nnx.State, params: dict[KeyPath, Any], what: str = "the model") -> nnx.State:
    """A copy of ``abstract`` (a parameter state of ShapeDtypeStructs) holding exactly ``params``
    (flat path -> array, as float32), checked path by path and shape by shape: the one way in from a
    flat, file-side map (converted weights, Sapiens files) to the ``nnx.State`` training uses."""
    expected = {p: tuple(v.get_value().shape) for p, v in nnx.to_flat_state(abstract)}
    if set(expected) != set(params):
        missing = sorted(set(expected) - set(params), key=str)
        extra = sorted(set(params) - set(expected), key=str)
        raise WeightsError(f"parameters do not match {what}: missing {missing[:3]}, unexpected {extra[:3]}")
    for path, shape in expected.items():
        if tuple(np.shape(params[path])) != shape:
            raise WeightsError(
                f"parameter {'/'.join(map(str, path))} has shape {tuple(np.shape(params[path]))}, expected {shape}"
            )
    state = jax.tree.map(lambda x: x, abstract)  # a copy: filled in place
    nnx.replace_by_pure_dict(
        state, traverse_util.unflatten_dict({p: jnp.asarray(v, jnp.float32) for p, v in params.items()})
    )
    return state


def params_state(config: ModelConfig, params: dict[KeyPath, Any]) -> nnx.State:
    """The Sapiens model's parameter state holding exactly ``params`` (see ``fill_state``)."""
    return fill_state(abstract_params(config), params)


def state_to_flat(state: nnx.State) -> dict[KeyPath, np.ndarray]:
    """A parameter state -> flat path -> numpy array map (the file-side form; host copies)."""
    return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(state)}


def build_model(config: ModelConfig, params: dict[KeyPath, Any]) -> Sapiens:
    """A model with exactly ``params`` (flat path -> array), without a random initialisation pass."""
    return nnx.merge(nnx.graphdef(abstract_model(config)), params_state(config, params))


def save_weights(
    directory: str | Path,
    config: ModelConfig,
    params: dict[KeyPath, Any],
    info: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``config`` and ``params`` (flat path -> array) to ``directory``; returns its path.

    The config is written last, so a directory holding ``model_config.json`` is always complete.
    """
    directory = Path(directory).absolute()
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise WeightsError(f"{directory} exists and is not empty (use --overwrite)")
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tree = traverse_util.unflatten_dict({p: np.asarray(v, np.float32) for p, v in params.items()})
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, tree)
        ckptr.wait_until_finished()
    if info is not None:
        (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    config.save(directory / CONFIG_FILE)
    return directory


def resolve_weights_dir(path: str | Path) -> Path:
    """The weights directory ``path`` names (a converted checkpoint directory)."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise WeightsError(f"{path} is not a directory")
    if (path / CONFIG_FILE).is_file() and (path / PARAMS_DIR).is_dir():
        return path
    raise WeightsError(f"{path} holds no model weights (expected {CONFIG_FILE} and {PARAMS_DIR}/)")


def load_weights(path: str | Path) -> tuple[ModelConfig, dict[KeyPath, np.ndarray]]:
    """Read a weights directory: its config and flat float32 parameters (validated against the config)."""
    directory = resolve_weights_dir(path)
    try:
        config = ModelConfig.load(directory / CONFIG_FILE)
    except (ValueError, KeyError) as e:  # names the file: unreadable, bad JSON, bad fields
        raise WeightsError(str(e)) from None
    target = nnx.to_pure_dict(abstract_params(config))
    try:
        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore(directory / PARAMS_DIR, target)
    except Exception as e:  # damaged (Orbax re-raises TensorStore read errors as bare Exception), or another model's
        raise WeightsError(
            f"{directory / PARAMS_DIR} is damaged or does not match {CONFIG_FILE} ({config.arch}, heads "
            f"{list(config.heads)}): {error_summary(e)}"
        ) from None
    return config, {path: np.asarray(leaf) for path, leaf in traverse_util.flatten_dict(tree).items()}
