"""Which parameters train in a stage, and splitting the parameter tree accordingly.

A stage trains the last N transformer blocks, the position embedding, the final norm and the heads;
everything before (the patch embedding and the first L - N blocks) is frozen. Gradients are taken
only with respect to the trainable tree, so the frozen weights get no weight-gradient computation
and no optimizer state. A trainable position embedding sits before every block, so activation
gradients still flow back through the frozen ones; ``pos_embed=False`` freezes it with the prefix,
and the backward then stops at the first trainable block (N = 0: only the final norm and the heads
train, the backbone runs forward only).
"""

from __future__ import annotations

from typing import Any

# A parameter's key path, e.g. ('backbone', 'layers', 3, 'attn', 'qkv', 'kernel').
KeyPath = tuple


def is_trainable(
    path: KeyPath,
    num_layers: int,
    trainable_blocks: int | None,
    pos_embed: bool = True,
    frozen_heads: tuple[str, ...] = (),
) -> bool:
    """``trainable_blocks`` None (or >= L) trains everything; else the last N blocks + final norm +
    heads, and pos_embed unless ``pos_embed`` is False. The heads named in ``frozen_heads`` (e.g. the
    semi-supervised mode's geometry teachers, 'depth' and 'normal') never train."""
    if path[0] == "heads" and path[1] in frozen_heads:
        return False
    if trainable_blocks is None or trainable_blocks >= num_layers:
        return True
    if path[0] != "backbone":
        return True  # heads
    if path[1] == "patch_embed":
        return False
    if path[1] == "layers":
        return int(path[2]) >= num_layers - trainable_blocks
    if path[1] == "pos_embed":
        return pos_embed
    return True  # final norm


def split_flat(
    flat: dict[KeyPath, Any],
    num_layers: int,
    trainable_blocks: int | None,
    pos_embed: bool = True,
    frozen_heads: tuple[str, ...] = (),
) -> tuple[dict[KeyPath, Any], dict[KeyPath, Any]]:
    """Flat params -> (trainable, frozen) flat dicts (see ``is_trainable``)."""
    train = {p: v for p, v in flat.items() if is_trainable(p, num_layers, trainable_blocks, pos_embed, frozen_heads)}
    return train, {p: v for p, v in flat.items() if p not in train}


def trainable_blocks_at(step: int, schedule: list[tuple[int, int | None]]) -> int | None:
    """Progressive unfreezing: ``schedule`` is [(from_step, trainable_blocks), ...] sorted by step."""
    current = schedule[0][1]
    for start, blocks in schedule:
        if step >= start:
            current = blocks
    return current
