"""The alpha/beta sweep (jobs/sweep.py, configs/sweep.py): it scores on a tuning split, shares stage 1."""

import json

import pytest

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.jobs import sweep
from tests.helpers import REPO, point_at_testbed


def test_sweep_refuses_the_validation_split(tmp_path):
    config = load_config_file(REPO / "configs/sweep.py", "tiny")
    config.data.tuning_images = 0
    with pytest.raises(ValueError, match="tuning_images"):
        sweep.run(config, tmp_path)


def test_sweep_points_share_stage1_and_score_the_tuning_split(testbed, tmp_path):
    config = point_at_testbed(load_config_file(REPO / "configs/sweep.py", "tiny"), testbed)
    config.sweep.alphas, config.sweep.betas, config.sweep.seeds = "0", "0,0.1", "0"
    config.data.tuning_images, config.data.tuning_dir = 4, str(tmp_path / "tuning")
    for name, batch in (("stage1", 8), ("stage2", 8), ("stage3", 10)):
        s = config[name]
        s.num_steps, s.batch_size, s.eval_batch_size, s.log_every = 2, batch, 8, 1
        s.eval.every = s.checkpoint.every = 2
        s.unfreeze = ()
    out = tmp_path / "sweep"
    assert sweep.run(config, out) == 0
    report = json.loads((out / "sweep.json").read_text())
    assert [(p["alpha"], p["beta"]) for p in report["points"]] == [(0.0, 0.0), (0.0, 0.1)]
    best = max(report["points"], key=lambda p: (p["pck@0.05"]["mean"], p["ap"]["mean"]))
    assert report["chosen"] == {"alpha": best["alpha"], "beta": best["beta"]}
    seed = out / "seed0"
    assert sorted(p.name for p in seed.iterdir()) == ["a0_b0", "a0_b0.1", "stage1"]  # one stage 1
    for name, beta in (("a0_b0", 0.0), ("a0_b0.1", 0.1)):
        for stage in ("stage2", "stage3"):
            c = json.loads((seed / name / stage / "config.json").read_text())
            assert c["loss"]["depth_normal"] == c["loss"]["bone_ratio"] == beta and c["loss"]["sds"] == 0.0
        assert c["init_from"] == str(seed / name / "stage2")
    last = json.loads((seed / "a0_b0.1" / "stage3" / "metrics.jsonl").read_text().splitlines()[-1])
    tune = json.loads(next((tmp_path / "tuning").rglob("tune.json")).read_text())
    assert last["num_samples"] == len(tune["annotations"])  # scored on the held-out 4
    assert "Chosen: alpha 0" in (out / "sweep.md").read_text()
