"""The model's own configuration: architecture presets and ``ModelConfig`` (saved as model_config.json).

Not the experiment config: that is ``hyper_sapiens_jax/config.py`` (defaults) and ``configs/*.py``.

The Sapiens presets follow docs/design.md §2 exactly; ``tiny`` is a small model of the same
structure for tests and CPU demos. Head widths are part of the preset because ``tiny`` shrinks them
too; for the real presets they are Sapiens' (pose 768, depth 384, normal 768).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

PATCH_SIZE = 16  # Sapiens' patch; a preset may set its own (ArchSpec.patch_size)
HEADS = ("pose", "depth", "normal")
# Output stride of each head relative to the input image (pose H/4, depth H/1, normal H/2), whatever
# the patch size: a head has one x2 deconvolution per halving from the token grid to its output.
HEAD_STRIDES = {"pose": 4, "depth": 1, "normal": 2}


def num_deconvs(task: str, patch_size: int = PATCH_SIZE) -> int:
    """The x2 deconvolutions of ``task``'s head on a ``patch_size`` grid (Sapiens, patch 16: pose 2,
    depth 4, normal 3; patch 8: one fewer each)."""
    n = (patch_size // HEAD_STRIDES[task]).bit_length() - 1
    if n < 0 or HEAD_STRIDES[task] << n != patch_size:
        raise ValueError(f"patch size {patch_size} is not a power-of-two multiple of the {task} stride")
    return n


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """Width/depth of one backbone preset, its patch size and the channel widths of its heads."""

    embed_dims: int
    num_layers: int
    num_heads: int
    pose_channels: int = 768
    depth_channels: int = 384
    normal_channels: int = 768
    patch_size: int = PATCH_SIZE

    @property
    def mlp_dims(self) -> int:
        return 4 * self.embed_dims

    @property
    def head_dim(self) -> int:
        return self.embed_dims // self.num_heads


ARCHS: dict[str, ArchSpec] = {
    "tiny": ArchSpec(64, 4, 4, pose_channels=32, depth_channels=16, normal_channels=32),
    # The testbed foundation: Sapiens' structure at a width and depth that train on 2 CPU cores.
    "cpu": ArchSpec(160, 6, 4, pose_channels=64, depth_channels=16, normal_channels=32),
    # The same at patch 8: 4x the tokens per person (the foundation ladder's tokens-per-person lever).
    "cpu_p8": ArchSpec(160, 6, 4, pose_channels=64, depth_channels=16, normal_channels=32, patch_size=8),
    "sapiens_0.3b": ArchSpec(1024, 24, 16),
    "sapiens_0.6b": ArchSpec(1280, 32, 16),
    "sapiens_1b": ArchSpec(1536, 40, 24),
    "sapiens_2b": ArchSpec(1920, 48, 32),
}

# float64 is for numerical checks only (needs jax_enable_x64; see hyper_sapiens_jax.precision).
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


def arch_spec(arch: str) -> ArchSpec:
    """The preset named ``arch``, with an error that lists the known names."""
    try:
        return ARCHS[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}") from None


def arch_from_shapes(embed_dims: int, num_layers: int, patch_size: int = PATCH_SIZE) -> str:
    """The preset whose width, depth and patch size match those read off a checkpoint's tensors."""
    for name, spec in ARCHS.items():
        if (spec.embed_dims, spec.num_layers, spec.patch_size) == (embed_dims, num_layers, patch_size):
            return name
    known = ", ".join(f"{n} (D={s.embed_dims}, L={s.num_layers}, patch {s.patch_size})" for n, s in ARCHS.items())
    raise ValueError(
        f"no preset has embed_dims={embed_dims}, {num_layers} layers and patch {patch_size}; known: {known}"
    )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a Sapiens model; saved as JSON next to its weights.

    Attributes:
      arch: preset name in ``ARCHS``.
      image_size: input (H, W); both multiples of the preset's patch size (16 for Sapiens).
      heads: subset of ``HEADS`` in any order.
      patch_padding: patch-embed conv padding (2 for pose/normal models, 0 for depth models).
      num_keypoints: K, the pose head's output channels.
      dtype: compute dtype ('float32' or 'bfloat16'; 'float64' for numerical checks under
        jax_enable_x64); parameters are float32.
      attention: 'xla' or 'cudnn' (GPU, bf16, head dim a multiple of 8).
      remat: rematerialise each transformer block in the backward pass.
      remat_policy: a ``jax.checkpoint_policies`` name used when ``remat`` is on.
      remat_heads: rematerialise each head layer (deconv / conv + InstanceNorm + SiLU): the backward
        keeps only each layer's input. The heads' full-resolution activations are most of a
        large-image step's memory (benchmarks/fsdp_memory.py).
      scan_blocks: run the blocks with ``jax.lax.scan`` (one compiled block instead of L).
      head_dropout: Dropout2d rate before the depth/normal ``conv_seg`` (train mode only).
    """

    arch: str = "sapiens_0.3b"
    image_size: tuple[int, int] = (1024, 768)
    heads: tuple[str, ...] = ("pose",)
    patch_padding: int = 2
    num_keypoints: int = 17
    dtype: str = "float32"
    attention: str = "xla"
    remat: bool = False
    remat_policy: str = "nothing_saveable"
    remat_heads: bool = False
    scan_blocks: bool = False
    head_dropout: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "heads", tuple(self.heads))
        arch_spec(self.arch)
        h, w = self.image_size
        p = self.patch_size
        if h % p or w % p or h <= 0 or w <= 0:
            raise ValueError(f"image_size {self.image_size} must be positive multiples of {p} ({self.arch}'s patch)")
        unknown = set(self.heads) - set(HEADS)
        if unknown or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads {self.heads} must be distinct names from {HEADS}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype {self.dtype!r} must be one of {sorted(_DTYPES)}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("dtype 'float64' (a numerical check) needs jax.config.update('jax_enable_x64', True)")
        if self.attention not in ("xla", "cudnn"):
            raise ValueError(f"attention {self.attention!r} must be 'xla' or 'cudnn'")
        if not 0 <= self.patch_padding < p:
            raise ValueError(f"patch_padding {self.patch_padding} must be in [0, {p})")

    @property
    def spec(self) -> ArchSpec:
        return arch_spec(self.arch)

    @property
    def patch_size(self) -> int:
        """The preset's patch size p (16 for the Sapiens presets)."""
        return self.spec.patch_size

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid (H/p, W/p)."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    @property
    def compute_dtype(self):
        return _DTYPES[self.dtype]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read model config {path}: {e}") from e
        try:
            return cls.from_json(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"bad model config {path}: {e}") from e
