"""Convert Sapiens PyTorch checkpoints into a hyper-sapiens-jax weights directory.

  python -m convert_weights.torch_to_flax [--arch A] --image-size H,W [--pretrain P] [--pose P]
      [--depth P] [--normal P] [--patch-padding N] --out DIR

The backbone comes from --pose, else --pretrain, else the first file given; each head from its own
file. The arch is read off the tensor shapes unless --arch is given. Every key is accounted for: a
missing or unexpected key, or a shape that does not match, stops the conversion with a message naming
it. A position embedding stored for another grid (e.g. pretrain's cls + 64x64) is resized with
PyTorch-exact bicubic interpolation. The output is an Orbax parameter tree plus model_config.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from convert_weights import layout
from convert_weights.layout import LayoutError
from convert_weights.torch_io import CheckpointFileError, load_state_dict
from hyper_sapiens_jax.logs import setup_logging
from hyper_sapiens_jax.models.arch import HEADS, ModelConfig, arch_spec
from hyper_sapiens_jax.models.pos_embed import infer_grid, resize_pos_embed
from hyper_sapiens_jax.models.weights import WeightsError, param_shapes, save_weights

log = logging.getLogger("convert_weights.torch_to_flax")

ROLES = ("pretrain", *HEADS)  # the file arguments, by name


def pick_backbone_source(files: dict[str, str], order: list[str] | None = None) -> str:
    """The role whose file provides the backbone: pose, else pretrain, else the first given."""
    for role in ("pose", "pretrain"):
        if role in files:
            return role
    order = [r for r in (order or []) if r in files] or [r for r in ROLES if r in files]
    return order[0]


def _check_arch(sd: dict[str, np.ndarray], source: str, arch: str | None) -> str:
    """The arch of the backbone in ``sd``; with ``arch`` given, refuse a checkpoint of another size."""
    key = layout.BACKBONE_PREFIX + "patch_embed.projection.weight"
    if arch is None:
        return layout.infer_backbone(sd, source)[0]
    spec = arch_spec(arch)
    if key not in sd:
        raise LayoutError(f"{source}: missing key {key!r}")
    d = int(sd[key].shape[0])
    try:
        found = layout.infer_backbone(sd, source)
        found_txt = f"{found[0]} (D={found[1]}, L={found[2]})"
    except LayoutError:
        found = None
        found_txt = "an unknown arch"
    if d != spec.embed_dims or (found and found[0] != arch):
        raise LayoutError(
            f"{source}: checkpoint is {found_txt} but --arch {arch} was given: key {key!r} "
            f"has shape {tuple(sd[key].shape)}, {arch} expects "
            f"({spec.embed_dims}, 3, {spec.patch_size}, {spec.patch_size}) and {spec.num_layers} layers"
        )
    return arch


def check_finite(state_dicts: dict[str, dict[str, np.ndarray]], sources: dict[str, str]) -> None:
    """``LayoutError`` naming the file and the key of the first floating-point tensor that holds
    NaN or inf (a converted model would predict NaN); ``--allow-nonfinite`` skips this check."""
    for role, sd in state_dicts.items():
        for key, value in sd.items():
            arr = np.asarray(value)
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                n = int(arr.size - np.isfinite(arr).sum())
                raise LayoutError(
                    f"{sources[role]}: tensor {key!r} holds {n} NaN or infinite values of {arr.size}; "
                    "pass --allow-nonfinite to convert it anyway"
                )


def load_files(files: dict[str, str | Path]) -> dict[str, dict[str, np.ndarray]]:
    """Read each role's file into a ``backbone.``-prefixed state dict (pretrain-only tokens dropped)."""
    state_dicts = {}
    for role, path in files.items():
        sd, _ = load_state_dict(path)
        sd = layout.strip_ddp_prefix(sd, str(path))
        sd, dropped = layout.add_backbone_prefix(sd)
        if dropped:
            log.info("%s: dropping pretrain-only %s", path, ", ".join(dropped))
        state_dicts[role] = sd
    return state_dicts


def convert(
    files: dict[str, str | Path], image_size: tuple[int, int], **kwargs: Any
) -> tuple[ModelConfig, dict[tuple, np.ndarray], dict[str, Any]]:
    """Read the given files (role -> path) and convert them; see ``convert_state_dicts``."""
    if not files:
        raise LayoutError("give at least one of --pretrain, --pose, --depth, --normal")
    sources = {r: str(p) for r, p in files.items()}
    return convert_state_dicts(load_files(files), sources, image_size, **kwargs)


def convert_state_dicts(
    state_dicts: dict[str, dict[str, np.ndarray]],
    sources: dict[str, str],
    image_size: tuple[int, int],
    *,
    arch: str | None = None,
    patch_padding: int | None = None,
    source_grid: tuple[int, int] | None = None,
    order: list[str] | None = None,
    allow_nonfinite: bool = False,
) -> tuple[ModelConfig, dict[tuple, np.ndarray], dict[str, Any]]:
    """Map Sapiens state dicts (role -> key -> array) onto a model; returns (config, flat params, info).

    Args:
      state_dicts: any of 'pretrain', 'pose', 'depth', 'normal' -> ``backbone.``-prefixed state dict.
      sources: role -> file name, used in messages.
      image_size: model input (H, W).
      arch: preset name; inferred from the backbone tensors when None.
      patch_padding: patch-embed padding; default 2, or 0 when the backbone comes from a depth model.
      source_grid: token grid of the stored pos_embed when it cannot be inferred from its length.
      order: the roles in command-line order (decides "the first file given").
      allow_nonfinite: convert tensors holding NaN or inf (refused by default, naming the key).
    """
    if not state_dicts:
        raise LayoutError("give at least one of --pretrain, --pose, --depth, --normal")
    if not allow_nonfinite:
        check_finite(state_dicts, sources)
    backbone_role = pick_backbone_source(state_dicts, order)
    bsrc = sources[backbone_role]
    log.info("backbone from --%s %s", backbone_role, bsrc)
    arch = _check_arch(state_dicts[backbone_role], bsrc, arch)
    heads = tuple(h for h in HEADS if h in state_dicts)
    num_keypoints = layout.infer_num_keypoints(state_dicts["pose"], sources["pose"]) if "pose" in state_dicts else 17
    if patch_padding is None:
        patch_padding = 0 if backbone_role == "depth" else 2
        log.info("patch padding %d (default for a %s backbone)", patch_padding, backbone_role)
    config = ModelConfig(
        arch=arch, image_size=tuple(image_size), heads=heads, patch_padding=patch_padding, num_keypoints=num_keypoints
    )
    expected = param_shapes(config)
    info: dict[str, Any] = {"backbone_from": {"role": backbone_role, "file": bsrc}, "files": dict(sources)}

    def resize(pos: np.ndarray) -> np.ndarray:
        grid, extra = (
            (source_grid, pos.shape[1] - source_grid[0] * source_grid[1])
            if source_grid
            else infer_grid(pos.shape[1], config.grid)
        )
        if tuple(grid) != config.grid or extra:
            log.info(
                "pos_embed: %d tokens = %d cls + %dx%d grid, resized to %dx%d", pos.shape[1], extra, *grid, *config.grid
            )
            info["pos_embed_resized"] = {"from_grid": list(grid), "cls_tokens": extra, "to_grid": list(config.grid)}
        return resize_pos_embed(pos, config.grid, source_grid)

    params: dict[tuple, np.ndarray] = {}
    for role, sd in state_dicts.items():
        src = sources[role]
        parts = ([layout.BACKBONE_PREFIX] if role == backbone_role else []) + (
            [layout.TASK_PREFIX[role]] if role in HEADS else []
        )
        rules = (layout.backbone_rules(config.spec) if role == backbone_role else []) + (
            layout.head_rules(role, config.patch_size) if role in HEADS else []
        )
        layout.check_keys(sd, rules, src, tuple(parts))
        unused = sorted({k.split(".")[0] for k in sd} - {p.rstrip(".") for p in parts})
        if unused:
            log.info("%s: ignoring its %s weights", src, ", ".join(unused))
        params.update(layout.torch_to_flax_params(sd, rules, expected, src, resize))
    return config, params, info


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 1024,768), got {text!r}") from None
    if h <= 0 or w <= 0 or h % 16 or w % 16:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be positive multiples of 16 (the patch size)")
    return h, w


def main(argv: list[str] | None = None) -> int:
    """The ``sapiens-torch-to-flax`` console script (``python -m convert_weights.torch_to_flax``);
    ``--help`` lists the flags."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m convert_weights.torch_to_flax",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--image-size",
        type=_parse_size,
        required=True,
        metavar="H,W",
        help="model input size, e.g. 1024,768 (multiples of 16)",
    )
    parser.add_argument(
        "--arch", help="sapiens_0.3b | sapiens_0.6b | sapiens_1b | sapiens_2b | tiny (default: read off the checkpoint)"
    )
    parser.add_argument("--pretrain", help="pretrain backbone (*_clean.pth, flat keys, 4097-token pos_embed)")
    parser.add_argument("--pose", help="fine-tuned pose checkpoint (mmpose: backbone.* + head.*)")
    parser.add_argument("--depth", help="fine-tuned depth checkpoint (mmseg: backbone.* + decode_head.*)")
    parser.add_argument("--normal", help="fine-tuned normal checkpoint (mmseg: backbone.* + decode_head.*)")
    parser.add_argument("--patch-padding", type=int, help="patch-embed padding (default 2; 0 for a depth backbone)")
    parser.add_argument(
        "--pos-embed-grid",
        type=_parse_size,
        metavar="h,w",
        help="token grid of the stored pos_embed, when it cannot be inferred",
    )
    parser.add_argument("--out", required=True, help="output weights directory")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--allow-nonfinite", action="store_true", help="convert tensors holding NaN or inf (refused by default)"
    )
    args = parser.parse_args(argv)
    setup_logging()
    files = {r: getattr(args, r) for r in ROLES if getattr(args, r)}
    order = sorted(
        files, key=lambda r: min((i for i, a in enumerate(argv) if a.split("=")[0] == f"--{r}"), default=len(argv))
    )
    try:
        config, params, info = convert(
            files,
            args.image_size,
            arch=args.arch,
            patch_padding=args.patch_padding,
            source_grid=args.pos_embed_grid,
            order=order,
            allow_nonfinite=args.allow_nonfinite,
        )
        out = save_weights(args.out, config, params, info, overwrite=args.overwrite)
    except (LayoutError, CheckpointFileError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(int(np.prod(v.shape)) for v in params.values())
    log.info(
        "wrote %s: %s, heads %s, %dx%d, %.1fM parameters",
        out,
        config.arch,
        list(config.heads),
        *config.image_size,
        n / 1e6,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
