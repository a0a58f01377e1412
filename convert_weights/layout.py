"""The Sapiens state-dict layout and its one-to-one mapping onto the Flax parameter tree.

One table of ``Rule``s serves both directions, so torch -> flax -> torch is bit-exact by
construction (every transform is a pure axis permutation). Keys follow docs/design.md §2-3:

  backbone.*        the ViT (``backbone.ln1`` is the final norm, Flax ``backbone/norm``)
  head.*            the pose heatmap head (mmpose)
  decode_head.*     the depth or normal head (mmseg)

Flax paths are tuples into ``nnx.state(model, nnx.Param)``: e.g.
``('backbone', 'layers', 3, 'attn', 'qkv', 'kernel')`` or ``('heads', 'pose', 'final_layer', 'bias')``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import numpy as np

from hyper_sapiens_jax.models.arch import PATCH_SIZE, ArchSpec, ModelConfig, arch_from_shapes, num_deconvs

log = logging.getLogger(__name__)
TASK_PREFIX = {"pose": "head.", "depth": "decode_head.", "normal": "decode_head."}
BACKBONE_PREFIX = "backbone."
# Sapiens heads use Sequential(deconv/conv, InstanceNorm, SiLU) * n: the weights sit at 0, 3, 6, ...
_SEQ_STRIDE = 3
# Pretrain (*_clean.pth) files carry these MAE-only entries; the fine-tuned model has no cls token.
PRETRAIN_DROPPED_KEYS = ("cls_token", "mask_token")


class LayoutError(ValueError):
    """A state dict does not match the Sapiens layout; the message names the key at fault."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """torch ``key`` <-> Flax ``path``; ``kind`` says how the array is laid out on each side."""

    key: str
    path: tuple
    kind: str  # 'linear' | 'conv' | 'vector' | 'pos_embed'


def to_flax(kind: str, w: np.ndarray) -> np.ndarray:
    """Torch layout -> Flax layout for one tensor."""
    if kind == "linear":  # (out, in) -> (in, out)
        return np.ascontiguousarray(w.T)
    if kind == "conv":  # Conv2d OIHW -> HWIO; ConvTranspose2d (in, out, kh, kw) -> (kh, kw, out, in)
        return np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    return w


def to_torch(kind: str, w: np.ndarray) -> np.ndarray:
    """Flax layout -> torch layout for one tensor (the exact inverse of ``to_flax``)."""
    if kind == "linear":
        return np.ascontiguousarray(w.T)
    if kind == "conv":
        return np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    return w


def _dense(prefix: str, path: tuple, kind: str, bias: bool = True) -> list[Rule]:
    torch_w = "weight"
    flax_w = "scale" if kind == "norm" else "kernel"
    kind = "vector" if kind == "norm" else kind
    rules = [Rule(prefix + torch_w, path + (flax_w,), kind)]
    if bias:
        rules.append(Rule(prefix + "bias", path + ("bias",), "vector"))
    return rules


def backbone_rules(spec: ArchSpec) -> list[Rule]:
    """Rules for every ``backbone.*`` key of a preset."""
    b, fb = BACKBONE_PREFIX, ("backbone",)
    rules = _dense(b + "patch_embed.projection.", fb + ("patch_embed",), "conv")
    rules.append(Rule(b + "pos_embed", fb + ("pos_embed",), "pos_embed"))
    for i in range(spec.num_layers):
        p, fp = f"{b}layers.{i}.", fb + ("layers", i)
        rules += _dense(p + "ln1.", fp + ("ln1",), "norm")
        rules += _dense(p + "attn.qkv.", fp + ("attn", "qkv"), "linear")
        rules += _dense(p + "attn.proj.", fp + ("attn", "proj"), "linear")
        rules += _dense(p + "ln2.", fp + ("ln2",), "norm")
        rules += _dense(p + "ffn.layers.0.0.", fp + ("ffn", "fc1"), "linear")
        rules += _dense(p + "ffn.layers.1.", fp + ("ffn", "fc2"), "linear")
    rules += _dense(b + "ln1.", fb + ("norm",), "norm")
    return rules


# (number of 1x1 convs, name of the output conv) per head; the deconvs follow the patch size.
_HEAD_SHAPES = {"pose": (2, "final_layer"), "depth": (2, "conv_seg"), "normal": (3, "conv_seg")}


def head_rules(task: str, patch_size: int = PATCH_SIZE) -> list[Rule]:
    """Rules for one head's keys (``head.*`` for pose, ``decode_head.*`` for depth / normal) on a
    ``patch_size`` grid (``config.num_deconvs``: Sapiens' 2 / 4 / 3 deconvs at patch 16)."""
    n_conv, out_name = _HEAD_SHAPES[task]
    n_deconv = num_deconvs(task, patch_size)
    p, fp = TASK_PREFIX[task], ("heads", task)
    rules = []
    for i in range(n_deconv):
        rules += _dense(f"{p}deconv_layers.{_SEQ_STRIDE * i}.", fp + ("deconv_layers", i), "conv", bias=False)
    for i in range(n_conv):
        rules += _dense(f"{p}conv_layers.{_SEQ_STRIDE * i}.", fp + ("conv_layers", i), "conv")
    rules += _dense(f"{p}{out_name}.", fp + (out_name,), "conv")
    return rules


def model_rules(config: ModelConfig, tasks: Iterable[str] | None = None) -> list[Rule]:
    """Backbone rules plus the rules of ``tasks`` (default: every head of the model)."""
    rules = backbone_rules(config.spec)
    for task in config.heads if tasks is None else tasks:
        rules += head_rules(task, config.patch_size)
    return rules


def strip_ddp_prefix(state_dict: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A state dict saved from a DistributedDataParallel-wrapped model (every key ``module.``-
    prefixed) -> the plain keys, with a log line; any other dict unchanged."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        log.info("%s: keys saved through DistributedDataParallel; removing their 'module.' prefix", source)
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def add_backbone_prefix(state_dict: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Pretrain ``*_clean.pth`` files store backbone keys without ``backbone.``: add it back.

    Returns the prefixed dict and the MAE-only keys that were dropped (cls/mask tokens).
    """
    if not any(k.startswith("patch_embed.") for k in state_dict):
        return state_dict, []
    dropped = [k for k in state_dict if k in PRETRAIN_DROPPED_KEYS]
    return {BACKBONE_PREFIX + k: v for k, v in state_dict.items() if k not in dropped}, dropped


def infer_backbone(state_dict: dict[str, np.ndarray], source: str) -> tuple[str, int, int]:
    """(arch, embed_dims, num_layers) read off the backbone tensors of ``state_dict`` (the patch size
    from the patch embedding's kernel)."""
    key = BACKBONE_PREFIX + "patch_embed.projection.weight"
    if key not in state_dict:
        raise LayoutError(f"{source}: no backbone found (missing key {key!r})")
    embed_dims = int(state_dict[key].shape[0])
    layer_ids = {
        int(k.split(".")[2])
        for k in state_dict
        if k.startswith(BACKBONE_PREFIX + "layers.") and k.split(".")[2].isdigit()
    }
    num_layers = max(layer_ids) + 1 if layer_ids else 0
    patch_size = int(state_dict[key].shape[-1])
    try:
        return arch_from_shapes(embed_dims, num_layers, patch_size), embed_dims, num_layers
    except ValueError as e:
        raise LayoutError(f"{source}: cannot infer the arch: {e}; pass --arch") from None


def infer_num_keypoints(state_dict: dict[str, np.ndarray], source: str) -> int:
    key = TASK_PREFIX["pose"] + "final_layer.weight"
    if key not in state_dict:
        raise LayoutError(f"{source}: not a pose checkpoint (missing key {key!r})")
    return int(state_dict[key].shape[0])


def check_keys(
    state_dict: dict[str, np.ndarray], rules: list[Rule], source: str, allowed_prefixes: tuple[str, ...]
) -> None:
    """Refuse missing keys, and unexpected keys under ``allowed_prefixes`` or outside every prefix."""
    wanted = {r.key for r in rules}
    missing = [k for k in (r.key for r in rules) if k not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LayoutError(f"{source}: missing key {missing[0]!r}{more}")
    known_prefixes = (BACKBONE_PREFIX, *set(TASK_PREFIX.values()))
    for k in state_dict:
        ours = k.startswith(allowed_prefixes)
        if (ours and k not in wanted) or not k.startswith(known_prefixes):
            raise LayoutError(f"{source}: unexpected key {k!r} (shape {tuple(state_dict[k].shape)})")


def torch_to_flax_params(
    state_dict: dict[str, np.ndarray],
    rules: list[Rule],
    expected: dict[tuple, tuple[int, ...]],
    source: str,
    resize_pos_embed=None,
) -> dict[tuple, np.ndarray]:
    """Map torch tensors onto Flax paths, checking every shape against ``expected`` (path -> shape).

    ``resize_pos_embed(array) -> array`` adapts a pos_embed stored for another grid.
    """
    out = {}
    for r in rules:
        w = np.asarray(state_dict[r.key])
        if not np.issubdtype(w.dtype, np.floating):
            raise LayoutError(f"{source}: key {r.key!r} holds {w.dtype} values; model weights must be floating point")
        if r.kind == "pos_embed" and resize_pos_embed is not None:
            if w.ndim != 3 or w.shape[-1] != expected[r.path][-1]:
                raise LayoutError(
                    f"{source}: key {r.key!r} has shape {tuple(w.shape)}, expected (1, N, {expected[r.path][-1]})"
                )
            try:
                w = resize_pos_embed(w)
            except ValueError as e:
                raise LayoutError(f"{source}: key {r.key!r}: {e}") from None
        w = to_flax(r.kind, w)
        want = tuple(expected[r.path])
        if tuple(w.shape) != want:
            raise LayoutError(
                f"{source}: key {r.key!r} has shape {tuple(to_torch(r.kind, w).shape)}, "
                f"expected {tuple(to_torch(r.kind, np.empty(want)).shape)}"
            )
        out[r.path] = w
    return out


def flax_to_torch_state_dict(params: dict[tuple, np.ndarray], rules: list[Rule]) -> dict[str, np.ndarray]:
    """Flax params (flat path -> array) -> torch-layout arrays keyed as in Sapiens, in rule order."""
    return {r.key: to_torch(r.kind, np.asarray(params[r.path])) for r in rules}
