"""The dtype policy, in one place.

- Parameters: float32.
- Activations: the model config's compute dtype (``ModelConfig.dtype``; bfloat16 on accelerators).
- Losses, normalisation statistics and the outputs handed to the losses: float32.

"float32" here means *at least* float32: ``widen`` keeps float64 as float64. That is used by one
thing only, the numerical checks that rerun a step in float64 (``jax_enable_x64``, float64
parameters and ``ModelConfig(dtype='float64')``) to tell float32 rounding from a real difference
(``tests/scripts/train_step_parity.py --float64``). Ordinary runs never see float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def widen(x: jax.Array) -> jax.Array:
    """``x`` as float32, or unchanged when it is already wider (float64 in an x64 check).

    Integers, booleans, float16 and bfloat16 become float32; the shape is unchanged."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
