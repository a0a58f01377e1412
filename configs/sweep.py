"""A sweep of the SDS weight alpha and the geometry weight beta on the demo's setting, scored on a
tuning split carved from the real training images (never the validation split).

  python -m hyper_sapiens_jax.main --config configs/sweep.py --workdir /tmp/sweep
  python -m hyper_sapiens_jax.main --config configs/sweep.py --workdir /tmp/sweep \\
      --config.sweep.alphas=0,0.01,0.03 --config.sweep.betas=0,0.1,0.3 --config.sweep.seeds=0,1

``arg`` is the arch, as for configs/demo.py, whose config this is, with a 50-image tuning split
(``data.tuning_images``) and ``sweep``: ``alphas``, ``betas`` and ``seeds``, comma-separated (every
point of the alphas x betas grid runs once per seed). See ``hyper_sapiens_jax/jobs/sweep.py``.
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import load_config_file

HERE = Path(__file__).parent


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(HERE / "demo.py", arg)
    c.job = "sweep"
    c.data.tuning_images = 50
    c.sweep = ml_collections.ConfigDict({"alphas": "0,0.01,0.03", "betas": "0,0.1,0.3", "seeds": "0"})
    return c
