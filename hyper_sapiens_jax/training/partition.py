"""Which parameters train in a stage: an NNX filter, and the trainable / frozen split it gives.

A stage trains the last N transformer blocks, the position embedding, the final norm and the heads;
everything before (the patch embedding and the first L - N blocks) is frozen. Gradients are taken
only with respect to the trainable tree, so the frozen weights get no weight-gradient computation
and no optimizer state. A trainable position embedding sits before every block, so activation
gradients still flow back through the frozen ones; ``pos_embed=False`` freezes it with the prefix,
and the backward then stops at the first trainable block (N = 0: only the final norm and the heads
train, the backbone runs forward only).

The parameters live as ``nnx.State`` throughout training: ``Trainable.filter`` is an NNX filter, so
``graphdef, params, frozen = nnx.split(model, trainable.filter, ...)`` splits a model and
``nnx.split_state(state, trainable.filter, ...)`` a state; ``nnx.merge(graphdef, params, frozen)``
rebuilds the model inside the train step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx

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


@dataclasses.dataclass(frozen=True)
class Trainable:
    """The trainable set of one unfreezing phase (see ``is_trainable``): the last ``blocks`` blocks
    (None: all), the position embedding unless ``pos_embed`` is False, never ``frozen_heads``."""

    num_layers: int
    blocks: int | None
    pos_embed: bool = True
    frozen_heads: tuple[str, ...] = ()

    @property
    def filter(self) -> nnx.filterlib.Filter:
        """The NNX filter of the trainable parameters (the rest, ``...``, is frozen)."""
        return nnx.All(
            nnx.Param,
            lambda path, _: is_trainable(path, self.num_layers, self.blocks, self.pos_embed, self.frozen_heads),
        )

    def split(self, params: nnx.State) -> tuple[nnx.State, nnx.State]:
        """All parameters -> (trainable, frozen) states."""
        return nnx.split_state(params, self.filter, ...)

    def meta(self) -> dict[str, Any]:
        """The checkpoint meta fields that name this set (``from_meta`` reads them back)."""
        return {
            "trainable_blocks": self.blocks,
            "train_pos_embed": self.pos_embed,
            "frozen_heads": list(self.frozen_heads),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], num_layers: int) -> Trainable:
        return cls(
            num_layers,
            meta.get("trainable_blocks"),
            meta.get("train_pos_embed", True),
            tuple(meta.get("frozen_heads", ())),
        )


def trainable_blocks_at(step: int, schedule: list[tuple[int, int | None]]) -> int | None:
    """Progressive unfreezing: ``schedule`` is [(from_step, trainable_blocks), ...] sorted by step."""
    current = schedule[0][1]
    for start, blocks in schedule:
        if step >= start:
            current = blocks
    return current
