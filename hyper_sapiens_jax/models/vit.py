"""The Sapiens ViT backbone (mmpretrain ``VisionTransformer`` as Sapiens configures it), in Flax NNX.

Pre-norm blocks, LayerNorm eps 1e-6, exact GELU, fused qkv with bias, no cls token, a learnable
(1, H/16 * W/16, D) position embedding added after the patch embedding, a final LayerNorm, and the
tokens returned as a (B, H/16, W/16, D) feature map. See docs/design.md §2.

Dtype policy: parameters are float32; activations run in ``dtype`` (bfloat16 on accelerators);
LayerNorm statistics and the attention softmax are computed in float32 by Flax/JAX.

Execution modes (numerically identical forward, same parameter layout, so any checkpoint loads in
any mode): a Python loop over blocks, or ``jax.lax.scan`` over the stacked block parameters (one
block compiled instead of L, which matters at 40-48 layers), each with optional per-block
rematerialisation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from hyper_sapiens_jax.models.arch import ArchSpec

Array = jax.Array

_REMAT_POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


class Attention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (q, k, v stacked in that order)."""

    def __init__(self, dim: int, num_heads: int, *, dtype, attention: str, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.attention = attention
        self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        """x: (B, T, D) -> (B, T, D)."""
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, T, N, Dh)
        if q.dtype == jnp.float64:  # a float64 check: dot_product_attention's softmax is float32 always
            logits = jnp.einsum("btnh,bsnh->bnts", q, k) / jnp.sqrt(float(q.shape[-1]))
            out = jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(logits, axis=-1), v)
        else:
            out = jax.nn.dot_product_attention(q, k, v, implementation=self.attention)
        return self.proj(out.reshape(b, t, d))


class FFN(nnx.Module):
    """fc1 -> exact (erf) GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + ffn(ln2(x))."""

    def __init__(self, spec: ArchSpec, *, dtype, attention: str, rngs: nnx.Rngs):
        d = spec.embed_dims
        self.ln1 = nnx.LayerNorm(d, epsilon=1e-6, dtype=dtype, rngs=rngs)
        self.attn = Attention(d, spec.num_heads, dtype=dtype, attention=attention, rngs=rngs)
        self.ln2 = nnx.LayerNorm(d, epsilon=1e-6, dtype=dtype, rngs=rngs)
        self.ffn = FFN(d, spec.mlp_dims, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


def _apply_block(graphdef: nnx.GraphDef, state: nnx.State, x: Array) -> Array:
    """Pure function form of one block, so it can be remat-ed and scanned."""
    return nnx.merge(graphdef, state)(x)


class SapiensViT(nnx.Module):
    """Sapiens ViT backbone: images (B, H, W, 3) normalised RGB -> features (B, H/p, W/p, D), p the
    preset's patch size (16 for Sapiens)."""

    def __init__(
        self,
        spec: ArchSpec,
        image_size: tuple[int, int],
        *,
        patch_padding: int = 2,
        dtype=jnp.float32,
        attention: str = "xla",
        remat: bool = False,
        remat_policy: str = "nothing_saveable",
        scan_blocks: bool = False,
        rngs: nnx.Rngs,
    ):
        if remat_policy not in _REMAT_POLICIES:
            raise ValueError(f"remat_policy {remat_policy!r} must be one of {_REMAT_POLICIES}")
        self.image_size = tuple(image_size)
        p = spec.patch_size
        self.grid = (image_size[0] // p, image_size[1] // p)
        self.dtype = dtype
        self.remat = remat
        self.remat_policy = remat_policy
        self.scan_blocks = scan_blocks
        d = spec.embed_dims
        pad = patch_padding
        self.patch_embed = nnx.Conv(
            3,
            d,
            (p, p),
            strides=(p, p),
            padding=((pad, pad), (pad, pad)),
            dtype=dtype,
            rngs=rngs,
        )
        num_tokens = self.grid[0] * self.grid[1]
        self.pos_embed = nnx.Param(
            nnx.initializers.truncated_normal(0.02)(rngs.params(), (1, num_tokens, d), jnp.float32)
        )
        self.layers = nnx.List(
            [Block(spec, dtype=dtype, attention=attention, rngs=rngs) for _ in range(spec.num_layers)]
        )
        self.norm = nnx.LayerNorm(d, epsilon=1e-6, dtype=dtype, rngs=rngs)

    def embed(self, images: Array) -> Array:
        """images (B, H, W, 3) -> tokens (B, H/p * W/p, D), position embedding added."""
        if images.shape[1:3] != self.image_size:
            raise ValueError(
                f"input images are {images.shape[1]}x{images.shape[2]} but the model "
                f"was built for {self.image_size[0]}x{self.image_size[1]}"
            )
        x = self.patch_embed(images.astype(self.dtype))
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        return x + self.pos_embed[...].astype(self.dtype)

    def run_blocks(self, x: Array, start: int = 0, stop: int | None = None) -> Array:
        """Apply blocks ``start:stop`` to tokens x (B, T, D), honouring the remat/scan options."""
        blocks = list(self.layers)[start:stop]
        if not blocks:
            return x
        graphdef = nnx.graphdef(blocks[0])
        states = [nnx.state(b) for b in blocks]
        step = functools.partial(_apply_block, graphdef)
        if self.remat:
            policy = getattr(jax.checkpoint_policies, self.remat_policy)
            # Under scan the loop already stops CSE across iterations, so prevent_cse is not needed.
            step = jax.checkpoint(step, policy=policy, prevent_cse=not self.scan_blocks)
        if self.scan_blocks:
            stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
            x, _ = jax.lax.scan(lambda carry, s: (step(s, carry), None), x, stacked)
            return x
        for s in states:
            x = step(s, x)
        return x

    def __call__(self, images: Array) -> Array:
        """images (B, H, W, 3) -> features (B, H/p, W/p, D) in the compute dtype."""
        x = self.run_blocks(self.embed(images))
        x = self.norm(x)
        return x.reshape(x.shape[0], self.grid[0], self.grid[1], x.shape[-1])
