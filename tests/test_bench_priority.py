"""`nmtrec bench priority`: the per-world criteria on hand-made numbers, and one tiny smoke run of the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import import_benchmark
from nmtrec.components.common.overrides import parse_override

ROOT = Path(__file__).resolve().parents[1]
priority = import_benchmark("priority")
worlds = import_benchmark("worlds")

TASKS = ["like", "click"]
GRID = [f"weight_grid:{g}" for g in ("0.9:0.1", "0.7:0.3", "0.5:0.5", "0.3:0.7", "0.1:0.9")]


def seed(single, nmt, grid, breach=False, equal=(0.70, 0.80)):
    """One training seed: single-task primary, NMT (primary, secondary), grid [(primary, secondary)...]."""
    run = {"single_task": {"auc": {"like": single}}, "nmt": {"auc": dict(zip(TASKS, nmt)), "breach": breach},
           "equal_weights": {"auc": dict(zip(TASKS, equal))}}
    run.update({g: {"auc": dict(zip(TASKS, pt))} for g, pt in zip(GRID, grid)})
    return run


# a grid that trades like for click, monotonically
TRADE = [(0.760, 0.70), (0.750, 0.75), (0.740, 0.78), (0.720, 0.80), (0.700, 0.81)]


def test_nmt_on_the_front_passes_everything():
    j = priority.judge_world([seed(0.760, (0.759, 0.74), TRADE)], TASKS, GRID)
    assert j["gap"] == pytest.approx(-0.001)
    assert j["primary_ok"] and j["not_dominated"] and j["audit_ok"]
    # grid points with like >= 0.760 - 0.002: only 0.9:0.1 (click 0.70); NMT's 0.74 beats it
    assert j["best_qualifying"] == "weight_grid:0.9:0.1" and j["secondary_ok"]
    assert not j["no_grid_point_qualifies"]


def test_dominated_when_a_grid_point_is_at_least_as_good_on_both():
    j = priority.judge_world([seed(0.760, (0.750, 0.75), TRADE)], TASKS, GRID)
    assert j["dominated_by"] == ["weight_grid:0.7:0.3"]  # ties count: both AUCs >= NMT's
    assert not j["not_dominated"]
    assert not j["primary_ok"]  # gap -0.010
    j = priority.judge_world([seed(0.760, (0.7549, 0.90), TRADE)], TASKS, GRID)
    assert j["not_dominated"] and not j["primary_ok"]  # gap -0.0051


def test_domination_margin_is_the_smaller_seed_paired_difference_with_its_standard_error():
    import numpy as np

    # 0.7:0.3 ahead of NMT on both tasks in every seed, by less on click: click's differences decide
    nmt = [(0.750, 0.745), (0.752, 0.741), (0.748, 0.747)]
    runs = [seed(0.760, (p, s), [TRADE[0], (p + 0.004, s + d), *TRADE[2:]])
            for (p, s), d in zip(nmt, (0.001, 0.003, 0.002))]
    j = priority.judge_world(runs, TASKS, GRID)
    assert j["dominated_by"] == ["weight_grid:0.7:0.3"]
    m = j["domination"]
    diffs = np.array([0.001, 0.003, 0.002])
    assert m["by"] == "weight_grid:0.7:0.3" and m["task"] == "click"
    assert m["margin"] == pytest.approx(diffs.mean())
    assert m["se"] == pytest.approx(diffs.std(ddof=1) / np.sqrt(3))
    assert m["t"] == pytest.approx(diffs.mean() / (diffs.std(ddof=1) / np.sqrt(3)))
    assert j["dominated_beyond_noise"]  # t = 3.5
    # one seed: no standard error, so never called beyond noise
    one = priority.judge_world(runs[:1], TASKS, GRID)
    assert one["domination"]["se"] is None and not one["dominated_beyond_noise"]
    # not dominated: no margin
    free = priority.judge_world([seed(0.760, (0.759, 0.74), TRADE)], TASKS, GRID)
    assert free["domination"] is None and not free["dominated_beyond_noise"]


def test_domination_margin_leaves_out_seeds_with_a_null_auc():
    runs = [seed(0.760, (0.750, 0.745), [TRADE[0], (0.754, 0.746), *TRADE[2:]]),
            seed(0.760, (0.750, 0.745), [TRADE[0], (0.754, 0.748), *TRADE[2:]])]
    runs[1]["nmt"]["auc"]["click"] = None  # one class in that seed's split: no AUC
    m = priority.judge_world(runs, TASKS, GRID)["domination"]
    assert m["by"] == "weight_grid:0.7:0.3" and m["task"] == "click"
    assert m["margin"] == pytest.approx(0.001) and m["se"] is None  # one seed pairs on click


def test_secondary_rule_uses_only_grid_points_that_keep_the_primary():
    grid = [(0.765, 0.76), (0.759, 0.79), (0.740, 0.82), (0.72, 0.83), (0.70, 0.84)]
    # qualifying: like >= 0.758 -> 0.9:0.1 (0.76) and 0.7:0.3 (0.79): best 0.79; 0.82+ do not count
    ok = priority.judge_world([seed(0.760, (0.760, 0.786), grid)], TASKS, GRID)
    assert ok["best_qualifying"] == "weight_grid:0.7:0.3" and ok["secondary_ok"]
    assert ok["secondary_margin"] == pytest.approx(-0.004)
    bad = priority.judge_world([seed(0.760, (0.760, 0.784), grid)], TASKS, GRID)
    assert not bad["secondary_ok"]


def test_secondary_ok_when_no_grid_point_qualifies():
    grid = [(0.70, 0.80)] * 5
    j = priority.judge_world([seed(0.760, (0.760, 0.50), grid)], TASKS, GRID)
    assert j["no_grid_point_qualifies"] and j["secondary_ok"] and j["best_qualifying"] is None


def test_seed_means_then_criteria_and_audit_over_seeds():
    a = seed(0.760, (0.750, 0.74), TRADE)
    b = seed(0.760, (0.766, 0.74), TRADE, breach=True)
    j = priority.judge_world([a, b], TASKS, GRID)
    assert j["nmt_primary"] == pytest.approx(0.758) and j["gap"] == pytest.approx(-0.002)
    assert j["primary_ok"] and j["not_dominated"]
    assert j["audit_breaches"] == 1 and not j["audit_ok"]
    assert j["seeds"] == 2


def test_summary_fractions_and_targets():
    judged = {
        "w1": priority.judge_world([seed(0.760, (0.759, 0.74), TRADE)], TASKS, GRID),  # all ok
        "w2": priority.judge_world([seed(0.760, (0.740, 0.70), TRADE)], TASKS, GRID),  # gap -0.02, dominated
        "w3": priority.judge_world([seed(0.760, (0.760, 0.74), TRADE, breach=True)], TASKS, GRID),
        "w4": priority.judge_world([seed(0.760, (0.761, 0.60), TRADE)], TASKS, GRID),  # secondary too low
    }
    s = priority.summarize(judged, 12.34)
    assert s["worlds"] == 4
    assert s["mean_primary_gap"] == pytest.approx((-0.001 - 0.020 + 0.0 + 0.001) / 4)
    assert s["primary_ok_fraction"] == 0.75
    assert s["not_dominated_fraction"] == 0.75
    assert s["secondary_ok_fraction"] == 0.75
    assert s["audit_ok_fraction"] == 0.75
    assert s["failing"] == {"primary_ok": ["w2"], "not_dominated": ["w2"], "secondary_ok": ["w4"], "audit_ok": ["w3"]}
    assert not s["targets_met"] and s["seconds"] == 12.3
    good = priority.summarize({"w1": judged["w1"]}, 1.0)
    assert good["targets_met"]


def test_reference_fractions_judge_equal_weights_in_nmts_place():
    """w1: equal weights sits on the grid's curve between two points, dominated by neither; w2: below the
    curve, dominated (by the 0.7:0.3 and 0.5:0.5 points). Both lose over 0.005 of the primary."""
    runs = {"w1": [seed(0.760, (0.759, 0.74), TRADE, equal=(0.745, 0.77))],
            "w2": [seed(0.760, (0.759, 0.74), TRADE, equal=(0.735, 0.74))]}
    ref = priority.reference_fractions(runs, {"w1": TASKS, "w2": TASKS}, GRID)
    assert ref["method"] == "equal_weights" and ref["worlds"] == 2
    assert ref["mean_primary_gap"] == pytest.approx((-0.015 - 0.025) / 2)
    assert ref["not_dominated_fraction"] == 0.5 and ref["primary_ok_fraction"] == 0.0
    assert ref["secondary_ok_fraction"] == 1.0  # the one qualifying point (0.9:0.1) has secondary 0.70
    md = priority.markdown({}, {}, {**priority.summarize({}, 1.0), "mean_primary_gap": 0.0, "primary_ok_fraction": 0.0,
                                    "not_dominated_fraction": 0.0, "secondary_ok_fraction": 0.0,
                                    "audit_ok_fraction": 0.0, "dominated_beyond_noise_fraction": 0.0, "reference": ref}, [1], "")
    assert "equal weights in NMT's place" in md and "not dominated 0.50" in md


def test_set_overrides_and_world_configs():
    import yaml

    base = yaml.safe_load((ROOT / "configs" / "bench_priority.yaml").read_text())
    sets = [parse_override("nmt.relative_tolerance=0.02"), parse_override("train.max_epochs=3")]
    fam = {w.name: w for w in worlds.family()}
    assert len(fam) >= 16 and len({w.setting for w in fam.values()}) >= 4
    dense = priority.world_config(base, fam["dense-1"], sets, priority.GRID)
    online = priority.world_config(base, fam["online-1"], sets, priority.GRID)
    assert dense.nmt.relative_tolerance == 0.02 and dense.train.max_epochs == 3
    assert online.model.head == "shared_score" and online.train.loss == "pairwise"
    assert dense.model.head == "towers" and dense.train.loss == "bce"
    # one config: model, train (but the online loss) and nmt are the same in every world
    for name in fam:
        c = priority.world_config(base, fam[name], sets, priority.GRID)
        assert c.nmt == dense.nmt and c.model.embedding_dim == dense.model.embedding_dim
        assert c.train.lr == dense.train.lr and c.seed == fam[name].seed
        assert list(c.data.split) == base["data"]["split"]  # the world's data, the config's split
    split = parse_override("data.split=[0.6,0.2,0.2]")
    assert priority.world_config(base, fam["online-1"], [split], priority.GRID).data.split == (0.6, 0.2, 0.2)
    other = {**base, "data": {**base["data"], "split": [0.5, 0.25, 0.25]}}  # the config is the one definition
    assert all(priority.world_config(other, w, [], priority.GRID).data.split == (0.5, 0.25, 0.25) for w in fam.values())
    with pytest.raises(ValueError):
        parse_override("no-equals-sign")
    # --set nmt.* changes only NMT's key: stage 1 and the baselines are reused
    plain = priority.world_config(base, fam["dense-1"], [], priority.GRID)
    k1 = priority.method_keys(plain, "d", 1)
    k2 = priority.method_keys(plain.updated(nmt={"relative_tolerance": 0.05}), "d", 1)
    assert k1["nmt"] != k2["nmt"]
    assert {m: k for m, k in k1.items() if m != "nmt"} == {m: k for m, k in k2.items() if m != "nmt"}
    assert priority.method_keys(plain, "d", 2)["single_task"] != k1["single_task"]


def test_the_bench_and_the_demo_judge_the_package_nmt_defaults():
    """What `nmtrec bench priority` measures and the demo shows is NMT as a config without an nmt section
    gets it: a setting the bench's config added would be judged there but not shipped."""
    import yaml

    from nmtrec.components.common.config import Config, load_config

    base = yaml.safe_load((ROOT / "configs" / "bench_priority.yaml").read_text())
    default = Config.model_validate({"tasks": TASKS}).nmt
    assert all(priority.world_config(base, w, [], priority.GRID).nmt == default for w in worlds.family())
    assert load_config(ROOT / "configs" / "demo.yaml").nmt == default
    assert default.aim == "audit" and len(default.alternatives) == 1


def test_a_changed_unread_default_keeps_the_baselines_keys(monkeypatch):
    """A new nmt.* default (what a new key or a changed default is to the other steps) changes every
    step's given config, but the bench keys hash only what a step reads: stage 1 and the joint baselines
    keep their cached results, NMT's stage 2 (which reads nmt) retrains."""
    import yaml

    from nmtrec.components.common import step_inputs as si

    base = yaml.safe_load((ROOT / "configs" / "bench_priority.yaml").read_text())
    cfg = priority.world_config(base, worlds.family()[0], [], priority.GRID)
    before = priority.method_keys(cfg, "d", 1)
    s1_given = si.step_inputs_json(cfg, si.Step("stage", 0))
    defaults = si._defaults()

    def changed():
        d = json.loads(json.dumps(defaults))
        d["nmt"]["feasible_z"] = -3.0
        return d

    monkeypatch.setattr(si, "_defaults", changed)
    cfg_new = cfg.updated(nmt={"feasible_z": -3.0})  # the config as read under the new default
    after = priority.method_keys(cfg_new, "d", 1)
    assert si.step_inputs_json(cfg, si.Step("stage", 0)) != s1_given  # the given config did change
    assert after["nmt"] != before["nmt"]
    assert {m: k for m, k in after.items() if m != "nmt"} == {m: k for m, k in before.items() if m != "nmt"}


def test_cached_results_follow_the_code_unless_told():
    results = {"k.old": {"key": "k", "code": "old", "finished": "2026-01-01 00:00:00"},
               "k.older": {"key": "k", "code": "older", "finished": "2025-01-01 00:00:00"}}
    assert priority.pick(results, "k", "new") is None
    assert priority.pick(results, "k", "new", any_code=True)["code"] == "old"  # the newest
    assert priority.pick(results, "k", "older")["code"] == "older"
    assert priority.pick(results, "other", "new", any_code=True) is None


@pytest.mark.slow
def test_quick_tiny_run_through_the_cli(tmp_path):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "nmtrec.pipelines.cli", "bench", "priority", "--quick", "--tiny",
           "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("worlds", "mean_primary_gap", "primary_ok_fraction", "not_dominated_fraction",
                "secondary_ok_fraction", "audit_ok_fraction", "seconds"):
        assert key in last
    assert last["worlds"] == 2
    data = json.loads((out / "priority.json").read_text())
    assert len(data["runs"]) == 1 and (out / "priority.png").is_file()
    # 2 worlds x 1 seed x (single_task, nmt, equal_weights, 3 grid points)
    assert len(data["results"]) == 12
    # every result keeps its kept model's validation losses, NMT its validation audit (a selection rule
    # read from validation can be replayed on the cache); the test AUCs are what the judging reads
    for rec in data["results"].values():
        assert set(rec["valid_loss"]) >= set(rec["tasks"][:1]) and rec["auc"]
        if rec["method"] == "nmt":
            assert [a["task"] for a in rec["valid_audit"]] == rec["tasks"][:1]
    # a rerun trains nothing (--ignore-code: others may edit components/ meanwhile)
    again = subprocess.run(cmd + ["--ignore-code"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "0 unit(s) to train" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1])["mean_primary_gap"] == last["mean_primary_gap"]


def test_other_world_seeds_and_training_seeds_give_worlds_the_bench_never_saw():
    """--world-seeds / --first-seed: the same settings on other data and seeds (a check of the defaults on
    worlds nobody tuned to); a bad value is one line and exit 2."""
    names = [w.name for w in worlds.family(world_seeds=(5, 6))]
    assert names == [f"{s}-{n}" for s in worlds.SETTINGS for n in (5, 6)]
    base = {w.name: w for w in worlds.family()}
    other = {w.name: w for w in worlds.family(world_seeds=(5,))}
    assert other["dense-5"].data == base["dense-1"].data and other["dense-5"].seed == 5
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "nmtrec.pipelines.cli", "bench", "priority", "--no-sbr", "--list"]
    listed = subprocess.run(cmd + ["--world-seeds", "7"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == [
        f"{s}-7" for s in worlds.SETTINGS]
    bad = subprocess.run(cmd + ["--world-seeds", "5,x"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "--world-seeds: expected comma-separated integers, got '5,x'"]
