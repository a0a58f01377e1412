"""The ablation study (jobs/study.py) run end to end: two seeds, resumed, reported."""

import json

import pytest

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.jobs import study
from tests.helpers import REPO, point_at_testbed


def demo_config(arch="tiny"):
    """configs/study.py: the demo's config plus the study's own settings."""
    return load_config_file(REPO / "configs/study.py", arch)


def test_two_seeds_run_resume_and_report(testbed, tmp_path):
    config = point_at_testbed(demo_config(), testbed)  # config.data: shared by every stage
    for name in ("stage1", "stage2", "stage3"):
        s = config[name]
        s.num_steps, s.batch_size, s.eval_batch_size, s.log_every = 2, 8, 8, 1
        s.eval.every = s.checkpoint.every = 2
        s.unfreeze = ()
    config.study.seeds, config.study.rows = "0,1", "a,b"
    out = tmp_path / "study"
    assert study.run(config, out) == 0

    report = json.loads((out / "study.json").read_text())
    assert list(report["rows"]) == ["a", "b"]
    for key, rel in (("a", "stage1"), ("b", "b")):
        assert report["rows"][key]["seeds"] == [0, 1]
        for seed in (0, 1):  # the table holds each run's final eval
            last = json.loads((out / f"seed{seed}" / rel / "metrics.jsonl").read_text().splitlines()[-1])
            assert last["step"] == (2 if key == "a" else 4)
            assert report["rows"][key]["pck@0.2"]["values"][seed] == last["pck@0.2"]
    # b fine-tunes its own seed's stage-1 model, with that seed
    b_cfg = json.loads((out / "seed1" / "b" / "config.json").read_text())
    assert b_cfg["init_from"] == str(out / "seed1" / "stage1") and b_cfg["seed"] == 1
    assert dict(b_cfg["data"]["mix"]) == {"syrip_real": 2}
    # different seeds give different stage-1 models
    g = report["rows"]["a"]["g_error"]["values"]
    assert g[0] != g[1]
    table = (out / "study.md").read_text()
    assert "| a | stage 1 only (synthetic) |" in table and "| b | fine-tune on real only |" in table
    assert "mean pose (val)" in table
    assert report["g_error_gt"] == last["g_error_gt"] > 0
    assert f"G-Error of the ground truth itself: {last['g_error_gt']:.4f}" in table
    png = (out / "study.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (out / "prior").exists()  # no SDS row asked: no prior trained

    # re-running resumes: nothing retrains, the same table comes out
    sizes = {p: p.stat().st_size for p in out.rglob("metrics.jsonl")}
    (out / "study.md").unlink()
    assert study.run(config, out) == 0
    assert {p: p.stat().st_size for p in out.rglob("metrics.jsonl")} == sizes
    assert (out / "study.md").read_text() == table

    # ... but not into runs made with another config: that would mix old results into the table
    config.stage2.optim.lr = 0.5
    with pytest.raises(ValueError, match=r"seed0/b was trained with a different config \(optim.lr: 0.001 -> 0.5\)"):
        study.run(config, out)
