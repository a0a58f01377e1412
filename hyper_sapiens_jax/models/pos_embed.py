"""Position-embedding resizing that matches PyTorch's bicubic interpolation exactly.

``torch.nn.functional.interpolate(mode='bicubic', align_corners=False)`` uses Keys' cubic
convolution with a = -0.75, unclamped source coordinates ``(i + 0.5) * in / out - 0.5`` and
border-replicated taps, and no antialiasing when shrinking. ``jax.image.resize`` uses a = -0.5 and
a different boundary rule, so it cannot be used to load Sapiens checkpoints.
The resize is separable: out = Wh @ grid @ Ww^T, with the (out, in) weight matrices built in float64.
"""

from __future__ import annotations

import math

import numpy as np

_A = -0.75  # PyTorch's cubic convolution coefficient.


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic weights for the 4 taps at offsets -1, 0, 1, 2 from floor(x); t = x - floor(x).

    Evaluated in t's dtype (float32 to mirror PyTorch).
    """
    a = t.dtype.type(_A)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 matrix M with ``resized = M @ signal`` along one axis."""
    if in_size == out_size:
        return np.eye(in_size)
    # PyTorch computes the scale, source coordinates and tap weights in float32 (its "opmath" type
    # for float inputs); doing the same keeps us within float32 rounding of torch's own result.
    scale = np.float32(in_size) / np.float32(out_size)
    src = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    base = np.floor(src)
    weights = _cubic_weights(src - base).astype(np.float64)  # (out, 4)
    taps = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3), 0, in_size - 1)
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
    return m


def resize_grid(grid_hwd: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bicubic-resize a (h, w, D) grid to (H, W, D) exactly as PyTorch would (float32 result)."""
    h, w, _ = grid_hwd.shape
    mh = bicubic_matrix(h, out_hw[0])
    mw = bicubic_matrix(w, out_hw[1])
    out = np.einsum("Hh,hwd,Ww->HWd", mh, np.asarray(grid_hwd, np.float64), mw)
    return out.astype(np.float32)


def infer_grid(num_tokens: int, target_grid: tuple[int, int]) -> tuple[tuple[int, int], int]:
    """Guess the (h, w) token grid and number of extra (cls) tokens of a stored pos_embed.

    Tried in order: the target grid itself; a square grid plus one cls token (pretrain checkpoints,
    4097 = 1 + 64*64); a square grid; a grid with the target's aspect ratio, with or without a cls token.
    """
    th, tw = target_grid
    candidates = []
    for extra in (0, 1):
        n = num_tokens - extra
        if n == th * tw:
            candidates.append(((th, tw), extra))
    for extra in (1, 0):
        n = num_tokens - extra
        s = math.isqrt(n) if n > 0 else 0
        if s * s == n and s > 0:
            candidates.append(((s, s), extra))
    for extra in (0, 1):
        n = num_tokens - extra
        h = round(math.sqrt(n * th / tw)) if n > 0 else 0
        if h > 0 and n % h == 0 and (n // h) * th == h * tw:
            candidates.append(((h, n // h), extra))
    if not candidates:
        raise ValueError(f"cannot infer the token grid of a pos_embed with {num_tokens} tokens (target grid {th}x{tw})")
    return candidates[0]


def resize_pos_embed(
    pos_embed: np.ndarray, target_grid: tuple[int, int], source_grid: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize a (1, N, D) pos_embed to (1, H*W, D) for ``target_grid`` (H, W), dropping a cls entry.

    Args:
      pos_embed: (1, N, D) array, tokens in row-major (h, w) order, optionally led by a cls token.
      target_grid: (H, W) token grid of the model.
      source_grid: (h, w) of the stored grid; inferred from N when omitted.
    Returns:
      (1, H*W, D) float32 array; returned unchanged (as float32) when no resize is needed.
    """
    pos_embed = np.asarray(pos_embed)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, N, D), got {pos_embed.shape}")
    n, d = pos_embed.shape[1:]
    if source_grid is None:
        source_grid, extra = infer_grid(n, target_grid)
    else:
        extra = n - source_grid[0] * source_grid[1]
        if extra not in (0, 1):
            raise ValueError(f"pos_embed has {n} tokens, not {source_grid[0]}x{source_grid[1]} (+1 cls)")
    grid = pos_embed[0, extra:].astype(np.float32).reshape(source_grid[0], source_grid[1], d)
    if tuple(source_grid) == tuple(target_grid):
        return grid.reshape(1, -1, d)
    return resize_grid(grid, target_grid).reshape(1, -1, d)
