"""The ablation study (jobs/study.py, configs/study.py): row definitions, statistics, merging."""

import json

import numpy as np
import pytest

from hyper_sapiens_jax.config import config_to_dict, load_config_file
from hyper_sapiens_jax.jobs import study
from hyper_sapiens_jax.training import adapters
from tests.helpers import REPO


def demo_config(arch="tiny"):
    """configs/study.py: the demo's config plus the study's own settings."""
    return load_config_file(REPO / "configs/study.py", arch)


def test_rows_differ_only_in_data_and_loss():
    config = demo_config()
    s2, s3 = config.stage2, config.stage3
    rows = study.study_rows(config)
    assert list(rows) == ["z", "a", "b", "c", "d", "e", "f", "s"]
    assert rows["z"].runs == () and not rows["f"].from_scratch and rows["s"].from_scratch
    assert [rel for rel, _ in rows["a"].runs] == ["stage1"]
    assert [rel for rel, _ in rows["f"].runs] == ["stage1", "f/stage2", "f/stage3"]
    assert [rel for rel, _ in rows["s"].runs] == ["scratch/stage1", "scratch/stage2", "scratch/stage3"]
    assert [c.to_dict() for _, c in rows["s"].runs] == [c.to_dict() for _, c in rows["f"].runs]
    assert rows["f"].runs[1][1].to_dict() == s2.to_dict() and rows["f"].runs[2][1].to_dict() == s3.to_dict()
    for key in "bcde":
        assert rows[key].runs[0] == rows["a"].runs[0]  # every row starts from the same stage 1
        c = rows[key].runs[1][1]
        assert c.num_steps == s2.num_steps + s3.num_steps == 500
        assert c.eval.every == c.checkpoint.every == 500
        assert c.unfreeze == s2.unfreeze == ((0.5, "all"),)  # a fraction: mid-run of the longer run
        assert adapters.unfreeze_schedule(c)[1] == (250, None) and adapters.unfreeze_schedule(s2)[1] == (125, None)
        assert c.optim.to_dict() == s2.optim.to_dict() and c.trainable_blocks == s2.trainable_blocks
        assert c.loss.sds_final < 0  # no annealing in b-e
    b, c, d, e = (rows[k].runs[1][1] for k in "bcde")
    assert dict(b.data.mix) == {"syrip_real": 2}
    assert dict(c.data.mix) == dict(d.data.mix) == dict(e.data.mix) == dict(s2.data.mix)
    assert (b.loss.depth_normal, b.loss.bone_ratio, b.loss.sds) == (0, 0, 0)
    assert (c.loss.depth_normal, c.loss.bone_ratio, c.loss.sds) == (0, 0, 0)
    assert (d.loss.depth_normal, d.loss.bone_ratio, d.loss.sds) == (0.1, 0.1, 0)
    assert (e.loss.depth_normal, e.loss.bone_ratio, e.loss.sds) == (0.1, 0.1, 0.01)
    assert s2.loss.sds == 0.01 and s2.data.mix.syrip_syn == 1  # the study did not edit the demo config


def test_summary_and_table():
    results = {
        "a": {
            0: {"pck@0.05": 0.1, "ap": 0.2, "pck@0.2": 0.5, "g_error": 0.3},
            1: {"pck@0.05": 0.3, "ap": 0.4, "pck@0.2": 0.7, "g_error": 0.1},
        },
        "c": {2: {"pck@0.05": 0.25, "ap": 0.0, "pck@0.2": 0.6, "g_error": 0.2}},
    }
    summary = study.summarize(results)
    assert summary["a"]["seeds"] == [0, 1]
    assert summary["a"]["pck@0.05"]["mean"] == pytest.approx(0.2)
    assert summary["a"]["pck@0.05"]["std"] == pytest.approx(np.sqrt(0.02))  # sample std (ddof=1)
    # 95% CI half-width: t(0.975, 1 dof) = 12.706 times std / sqrt(2)
    assert summary["a"]["pck@0.05"]["ci95"] == pytest.approx(12.7062 * np.sqrt(0.02) / np.sqrt(2), rel=1e-4)
    assert summary["c"]["pck@0.05"]["ci95"] == 0.0
    assert summary["a"]["ap"]["values"] == [0.2, 0.4]
    assert summary["c"]["pck@0.05"]["std"] == 0.0  # one seed
    rows = study.study_rows(demo_config())
    table = study.study_table(rows, summary, {"pck@0.05": 0.01, "ap": 0.0, "pck@0.2": 0.19, "g_error": 0.0})
    lines = table.splitlines()
    assert lines[0].startswith("| row | run | PCK@0.05 | AP | PCK@0.2 | G-Error | seeds |")
    assert lines[2].startswith("| - | mean pose (val) | 0.010 | 0.000 | 0.190 |")
    assert lines[3] == (
        "| a | stage 1 only (synthetic) | 0.200 ± 1.271 | 0.300 ± 1.271 | 0.600 ± 1.271 | 0.2000 ± 1.2706 | 2 |"
    )
    assert lines[4].startswith("| c | mixed fine-tune, no prior / geometry | 0.250 | 0.000 |")  # one seed: no CI


def test_unknown_row_is_refused(tmp_path):
    config = demo_config()
    config.study.seeds, config.study.rows = "0", "a,x"
    with pytest.raises(ValueError, match=r"config.study.rows: unknown rows \['x'\]"):
        study.run(config, tmp_path)


def test_real_only_needs_a_real_source():
    config = demo_config()
    config.stage2.data.mix = {"syrip_syn": 1}
    with pytest.raises(ValueError, match="no real source"):
        study.study_rows(config)


def test_merge_adds_seeds_and_refuses_other_studies(tmp_path):
    config = demo_config()
    config.foundation.dir = "/checkout/a/foundation"
    rows = {k: r for k, r in study.study_rows(config).items() if k in ("a", "c")}
    here = {"a": {0: {"pck@0.05": 0.1, "ap": 0.0, "pck@0.2": 0.5, "g_error": 0.3}}, "c": {}}
    elsewhere = {
        "a": {1: {"pck@0.05": 0.3, "ap": 0.0, "pck@0.2": 0.7, "g_error": 0.1}},
        "c": {1: {"pck@0.05": 0.2, "ap": 0.1, "pck@0.2": 0.6, "g_error": 0.2}},
    }
    saved = {
        "rows": {k: {"label": rows[k].label, **v} for k, v in study.summarize(elsewhere).items()},
        "config": config_to_dict(config),
        "code": "elsewhere",
    }
    path = tmp_path / "study.json"
    path.write_text(json.dumps(saved))
    merged = study.merge_results(here, [path], config)
    assert sorted(merged["a"]) == [0, 1] and sorted(merged["c"]) == [1]
    assert merged["a"][1]["pck@0.05"] == pytest.approx(0.3) and merged["a"][0]["pck@0.05"] == 0.1
    assert study.summarize(merged)["a"]["pck@0.05"]["mean"] == pytest.approx(0.2)
    # The same seed with other values: not the same runs.
    clash = {"a": {1: {"pck@0.05": 0.9, "ap": 0.0, "pck@0.2": 0.7, "g_error": 0.1}}, "c": {}}
    with pytest.raises(ValueError, match="row a seed 1 disagrees"):
        study.merge_results(clash, [path], config)
    # Other settings (another step count) are another study; a moved path is not.
    other = demo_config()
    other.foundation.dir, other.stage2.num_steps = config.foundation.dir, other.stage2.num_steps + 1
    with pytest.raises(ValueError, match=r"other settings \(stage2.num_steps"):
        study.merge_results(here, [path], other)
    moved = demo_config()
    moved.foundation.dir = "/checkout/b/foundation"
    assert sorted(study.merge_results(here, [path], moved)["a"]) == [0, 1]
    # Nor are the study's own settings (which seeds and rows this run takes, what it merges).
    own = demo_config()
    own.foundation.dir, own.study.seeds, own.study.rows = config.foundation.dir, "7", "a"
    assert sorted(study.merge_results(here, [path], own)["a"]) == [0, 1]
    # A setting the file does not hold (added to the configs since it was written) is another study:
    # an old result file is regenerated, not guessed at.
    newer = demo_config()
    newer.foundation.dir = config.foundation.dir
    newer.stage2.model.unlock()
    newer.stage2.model.new_switch = False
    with pytest.raises(ValueError, match=r"other settings \(stage2.model.new_switch"):
        study.merge_results(here, [path], newer)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a study.json"):
        study.merge_results(here, [tmp_path / "bad.json"], config)
