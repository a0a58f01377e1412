"""The ablation study on the demo's setting: rows z, a-f and s over seeds, with 95% intervals.

  python -m hyper_sapiens_jax.main --config configs/study.py --workdir /tmp/study
  python -m hyper_sapiens_jax.main --config configs/study.py --workdir /tmp/study \\
      --config.study.seeds=0,1,2 --config.study.rows=a,c,e,f --config.stage1.num_steps=1000

``arg`` is the arch, as for configs/demo.py, whose config this is (every ``--config.stage2.…``
override works the same), plus ``study``:

  seeds  comma-separated seeds; every row runs once per seed
  rows   which rows (z, a-f, s; see ``hyper_sapiens_jax/jobs/study.py``)
  merge  comma-separated study.json files of the same study run elsewhere, whose seeds join the table
"""

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.config import load_config_file

HERE = Path(__file__).parent


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = load_config_file(HERE / "demo.py", arg)
    c.job = "study"
    c.study = ml_collections.ConfigDict({"seeds": "0,1,2,3,4", "rows": "z,a,b,c,d,e,f,s", "merge": ""})
    return c
