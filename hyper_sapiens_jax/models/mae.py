"""Masked-autoencoder (MAE) pretraining of the Sapiens ViT, as Sapiens pretrains each backbone.

Sapiens pretrains its ViTs from scratch with an MAE (mmpretrain ``MAE`` / ``MAEViT`` /
``MAEPretrainDecoder``) on human images: square inputs, 16x16 non-overlapping patches, a fixed mask
ratio of 0.75, and an MSE loss on the *masked* patches only against per-patch normalised pixels
(``norm_pix_loss``). The light decoder is thrown away afterwards; the encoder's weights become the
fine-tuned model's backbone.

Pieces (pure functions first, then the modules):

  patchify(images, p)                    (B, H, W, 3) -> (B, N, p*p*3), N = (H/p) * (W/p)
  random_masking(key, B, N, ratio)       keep_idx (B, n_keep) sorted, mask (B, N) with 1 = masked
  mae_loss(pred, target, mask)           float32 scalar: mean over masked patches of the patch MSE
  sincos_pos_embed(grid, dim)            fixed 2-D sin-cos position embedding (1, h*w, dim)
  MaeDecoder                             visible tokens -> per-patch pixel predictions
  MAE                                    SapiensViT backbone + cls token + decoder

The backbone is the very ``SapiensViT`` the fine-tuned ``Sapiens`` model holds (same parameter
paths under ``backbone/``), so its weights transfer as they are. Like mmpretrain's MAEViT, the
encoder has a cls token (``cls_token`` + its position entry ``cls_pos``, both (1, 1, D)) that the
fine-tuned model does not; the export to the Sapiens pretrain layout puts ``cls_pos`` in front of
the grid position embedding, giving the (1, 1 + N, D) ``pos_embed`` of ``*_clean.pth`` files.

Dtype policy as in ``models.vit``: float32 parameters, activations in the model config's compute
dtype (bfloat16 on accelerators), predictions and the loss in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyper_sapiens_jax.models.arch import PATCH_SIZE, ArchSpec, ModelConfig
from hyper_sapiens_jax.models.vit import Block, SapiensViT

Array = jax.Array

NORM_PIX_EPS = 1e-6


# =============================================================================================
# Pure functions
# =============================================================================================
def patchify(images: Array, p: int = PATCH_SIZE) -> Array:
    """Non-overlapping p x p patches in row-major grid order.

    Args:
      images: (B, H, W, C) with H and W multiples of ``p``.
      p: patch side.
    Returns:
      (B, N, p*p*C), N = (H/p) * (W/p); patch n = (row r, column c) with n = r * (W/p) + c, its
      pixels flattened in (y, x, channel) order (MAE's ``patchify``).
    """
    b, h, w, c = images.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Array, grid: tuple[int, int], p: int = PATCH_SIZE) -> Array:
    """The inverse of ``patchify``: (B, N, p*p*C) with N = gh * gw -> (B, gh*p, gw*p, C)."""
    b, n, ppc = patches.shape
    gh, gw = grid
    c = ppc // (p * p)
    if n != gh * gw or ppc != p * p * c:
        raise ValueError(f"patches {patches.shape} do not match a {gh}x{gw} grid of {p}x{p} patches")
    x = patches.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * p, gw * p, c)


def num_masked(num_tokens: int, mask_ratio: float) -> int:
    """round(mask_ratio * num_tokens) (halves rounded up), at most ``num_tokens - 1``."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio {mask_ratio} must be in [0, 1)")
    return min(int(math.floor(mask_ratio * num_tokens + 0.5)), num_tokens - 1)


def random_masking(key: Array, batch: int, num_tokens: int, mask_ratio: float) -> tuple[Array, Array]:
    """A uniformly random subset of ``num_masked(num_tokens, mask_ratio)`` masked tokens per sample.

    Args:
      key: a JAX PRNG key.
      batch: B.
      num_tokens: N, the patch tokens per image.
      mask_ratio: the masked fraction (0.75 in MAE and Sapiens).
    Returns:
      keep_idx: int32 (B, n_keep), the visible token indices of each sample in increasing order,
        n_keep = N - round(mask_ratio * N).
      mask: float32 (B, N), 1 for a masked token, 0 for a visible one.
    """
    n_keep = num_tokens - num_masked(num_tokens, mask_ratio)
    noise = jax.random.uniform(key, (batch, num_tokens))
    keep_idx = jnp.sort(jnp.argsort(noise, axis=1)[:, :n_keep], axis=1).astype(jnp.int32)
    rows = jnp.arange(batch)[:, None]
    mask = jnp.ones((batch, num_tokens), jnp.float32).at[rows, keep_idx].set(0.0)
    return keep_idx, mask


def normalize_patches(target: Array, eps: float = NORM_PIX_EPS) -> Array:
    """Per-patch pixel normalisation: (t - mean) / sqrt(var + eps) over the last axis.

    The variance is the unbiased one (``torch.Tensor.var``'s default), as MAE's and mmpretrain's
    ``norm_pix`` use it.
    """
    target = target.astype(jnp.float32)
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
    return (target - mean) / jnp.sqrt(var + eps)


def mae_loss(pred: Array, target: Array, mask: Array, norm_pix: bool = True) -> Array:
    """The MAE reconstruction loss, in float32.

    Args:
      pred: (B, N, P) predicted patches (P = p*p*3).
      target: (B, N, P) the input image's patches (``patchify`` of the normalised image).
      mask: (B, N), 1 = masked; only masked patches count.
      norm_pix: normalise each target patch by its own mean and variance (``normalize_patches``).
    Returns:
      scalar: sum over masked patches of mean((pred - target)^2 over P), divided by the number of
      masked patches.
    """
    target = normalize_patches(target) if norm_pix else target.astype(jnp.float32)
    per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)  # (B, N)
    mask = mask.astype(jnp.float32)
    return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def sincos_pos_embed(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (mmpretrain ``build_2d_sincos_position_embedding``).

    Args:
      grid: (h, w) token grid; tokens in row-major order.
      dim: embedding width, a multiple of 4.
    Returns:
      float32 (1, h*w, dim): [sin(r w_k), cos(r w_k), sin(c w_k), cos(c w_k)] for token (row r,
      column c), w_k = temperature ** (-k / (dim/4)). (mmpretrain's meshgrid puts its "w" index on
      the rows; for the square grids MAE uses this is the same embedding.)
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float32) / quarter)
    out_r = rows.reshape(-1, 1) * omega[None]
    out_c = cols.reshape(-1, 1) * omega[None]
    emb = np.concatenate([np.sin(out_r), np.cos(out_r), np.sin(out_c), np.cos(out_c)], axis=1)
    return emb[None].astype(np.float32)


@functools.lru_cache(maxsize=8)
def _cached_sincos(grid: tuple[int, int], dim: int) -> np.ndarray:
    return sincos_pos_embed(grid, dim)


# =============================================================================================
# Modules
# =============================================================================================
class MaeDecoder(nnx.Module):
    """The light MAE decoder: encoder tokens (cls + visible) -> pixel predictions for every patch.

    linear D -> Dd, a learnable mask token at each masked position, a fixed 2-D sin-cos position
    embedding (zero for the cls token), ``depth`` pre-norm ``models.vit.Block``s of width Dd, a final
    LayerNorm and a linear Dd -> p*p*3. ``remat`` recomputes each block in the backward pass.
    """

    def __init__(
        self,
        embed_dims: int,
        grid: tuple[int, int],
        *,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        patch_size: int = PATCH_SIZE,
        dtype=jnp.float32,
        attention: str = "xla",
        remat: bool = False,
        remat_policy: str = "nothing_saveable",
        rngs: nnx.Rngs,
    ):
        self.grid = tuple(grid)
        self.dtype = dtype
        self.remat = remat
        self.remat_policy = remat_policy
        self.embed = nnx.Linear(embed_dims, dim, dtype=dtype, rngs=rngs)
        self.mask_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, dim), jnp.float32))
        spec = ArchSpec(embed_dims=dim, num_layers=depth, num_heads=num_heads)
        self.blocks = nnx.List([Block(spec, dtype=dtype, attention=attention, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
        self.pred = nnx.Linear(dim, patch_size * patch_size * 3, dtype=dtype, rngs=rngs)
        self.dim = dim

    def __call__(self, x: Array, mask: Array) -> Array:
        """x: (B, 1 + n_keep, D) encoder output (cls first, then the visible tokens in increasing
        index order); mask: (B, N), 1 = masked. Returns float32 (B, N, p*p*3)."""
        x = self.embed(x.astype(self.dtype))  # (B, 1 + n_keep, Dd)
        cls, visible = x[:, :1], x[:, 1:]
        # Token n's slot among the visible ones = number of visible tokens before it (keep_idx is sorted).
        slot = jnp.clip(jnp.cumsum(1.0 - mask, axis=1).astype(jnp.int32) - 1, 0, visible.shape[1] - 1)
        gathered = jnp.take_along_axis(visible, slot[..., None], axis=1)  # (B, N, Dd)
        tokens = jnp.where(mask[..., None] > 0, self.mask_token[...].astype(x.dtype), gathered)
        tokens = tokens + jnp.asarray(_cached_sincos(self.grid, self.dim), x.dtype)  # a constant
        x = jnp.concatenate([cls, tokens], axis=1)
        blocks = list(self.blocks)
        if blocks:
            # As SapiensViT.run_blocks: with remat, each block is recomputed in the backward pass (the
            # decoder attends over all N tokens, so its activations dominate the memory at 1024 x 1024).
            graphdef = nnx.graphdef(blocks[0])
            apply = lambda state, h: nnx.merge(graphdef, state)(h)
            if self.remat:
                apply = jax.checkpoint(apply, policy=getattr(jax.checkpoint_policies, self.remat_policy))
            for block in blocks:
                x = apply(nnx.state(block), x)
        return self.pred(self.norm(x))[:, 1:].astype(jnp.float32)


def mae_init_(module: nnx.Module, key: Array) -> None:
    """MAE's initialisation, in place: xavier-uniform Linear kernels and patch projection (as a
    (D, 3*16*16) matrix, like mmpretrain), zero biases; LayerNorms and tokens keep their init."""
    xavier = jax.nn.initializers.xavier_uniform()
    conv_xavier = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)
    for i, (_, m) in enumerate(nnx.iter_modules(module)):
        if isinstance(m, nnx.Linear):
            m.kernel[...] = xavier(jax.random.fold_in(key, i), m.kernel[...].shape, jnp.float32)
        elif isinstance(m, nnx.Conv):
            m.kernel[...] = conv_xavier(jax.random.fold_in(key, i), m.kernel[...].shape, jnp.float32)
        else:
            continue
        if m.bias is not None:
            m.bias[...] = jnp.zeros_like(m.bias[...])


class MAE(nnx.Module):
    """The masked autoencoder: a ``SapiensViT`` encoder with a cls token, and a ``MaeDecoder``.

    ``model(images, key)`` returns ``(pred (B, N, p*p*3) float32, mask (B, N))`` for Sapiens-normalised
    images (B, H, W, 3); ``model.loss(images, key)`` the scalar MAE loss. The encoder sees only the
    visible tokens: patch embedding + grid ``pos_embed``, the ``keep_idx`` tokens kept, the cls token
    (+ ``cls_pos``) prepended, ``backbone.run_blocks`` (remat / scan options honoured) and
    ``backbone.norm``.

    Args:
      config: the backbone's ``ModelConfig`` (arch, image size, patch padding, dtype, attention,
        remat, scan); its heads are ignored.
      mask_ratio, decoder_dim, decoder_depth, decoder_heads, norm_pix: the MAE settings.
      sincos_init: start ``backbone.pos_embed`` as the fixed 2-D sin-cos embedding (MAEViT) and
        ``cls_pos`` at 0; otherwise both are truncated-normal(0.02).
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        norm_pix: bool = True,
        sincos_init: bool = True,
        rngs: nnx.Rngs,
    ):
        spec, dtype = config.spec, config.compute_dtype
        num_masked(config.grid[0] * config.grid[1], mask_ratio)  # validates the ratio
        self.config = config
        self.mask_ratio = mask_ratio
        self.norm_pix = norm_pix
        self.backbone = SapiensViT(
            spec,
            config.image_size,
            patch_padding=config.patch_padding,
            dtype=dtype,
            attention=config.attention,
            remat=config.remat,
            remat_policy=config.remat_policy,
            scan_blocks=config.scan_blocks,
            rngs=rngs,
        )
        d = spec.embed_dims
        self.cls_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, d), jnp.float32))
        if sincos_init:
            self.backbone.pos_embed[...] = jnp.asarray(sincos_pos_embed(config.grid, d))
            self.cls_pos = nnx.Param(jnp.zeros((1, 1, d), jnp.float32))
        else:
            self.cls_pos = nnx.Param(nnx.initializers.truncated_normal(0.02)(rngs.params(), (1, 1, d), jnp.float32))
        self.decoder = MaeDecoder(
            d,
            config.grid,
            dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_heads,
            patch_size=config.patch_size,
            dtype=dtype,
            attention=config.attention,
            remat=config.remat,
            remat_policy=config.remat_policy,
            rngs=rngs,
        )
        mae_init_(self, rngs.params())

    @property
    def num_tokens(self) -> int:
        return self.config.grid[0] * self.config.grid[1]

    def encode(self, images: Array, keep_idx: Array) -> Array:
        """images (B, H, W, 3), keep_idx (B, n_keep) -> normed encoder tokens (B, 1 + n_keep, D), cls first."""
        x = self.backbone.embed(images)  # (B, N, D), pos added
        x = jnp.take_along_axis(x, keep_idx[..., None], axis=1)  # (B, n_keep, D)
        cls = (self.cls_token[...] + self.cls_pos[...]).astype(x.dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
        return self.backbone.norm(self.backbone.run_blocks(x))

    def __call__(self, images: Array, key: Array) -> tuple[Array, Array]:
        """images (B, H, W, 3), a PRNG key for the mask -> (pred (B, N, p*p*3) float32, mask (B, N))."""
        keep_idx, mask = random_masking(key, images.shape[0], self.num_tokens, self.mask_ratio)
        return self.decoder(self.encode(images, keep_idx), mask), mask

    def loss(self, images: Array, key: Array) -> Array:
        """The float32 MAE loss of one batch (targets: the patches of ``images`` themselves)."""
        pred, mask = self(images, key)
        return mae_loss(pred, patchify(images.astype(jnp.float32), self.config.patch_size), mask, self.norm_pix)
