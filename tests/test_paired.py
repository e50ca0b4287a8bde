"""Paired constraints (components/train/paired.py), the warm-up and the out-of-sample audit."""
import numpy as np
import pytest
import torch

from nmtrec.components.train import paired
from nmtrec.components.train.objectives.nmt import INFEASIBLE, NMTStage


def test_bce_row_losses_match_a_float64_reference():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(50, 2)), (rng.random((50, 2)) < 0.3).astype(np.float32)
    p = 1 / (1 + np.exp(-z))
    ref = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(paired.row_losses(z, y, "bce"), ref, rtol=1e-10)


def test_pairwise_row_losses_pair_each_row_with_the_other_class_of_its_chunk(monkeypatch):
    monkeypatch.setattr(paired, "CHUNK", 6)
    rng = np.random.default_rng(1)
    z, y = rng.normal(size=(12, 1)), np.array([[1], [0], [0], [1], [0], [0], [0], [0], [0], [0], [0], [0]], float)
    got = paired.row_losses(z, y, "pairwise")
    sp = lambda x: np.log1p(np.exp(x))  # noqa: E731
    assert got[0, 0] == pytest.approx(np.mean([sp(z[n, 0] - z[0, 0]) for n in (1, 2, 4, 5)]))
    assert got[1, 0] == pytest.approx(np.mean([sp(z[1, 0] - z[p, 0]) for p in (0, 3)]))
    assert np.isnan(got[6:]).all()  # the second chunk has no positive: no pair, no loss


def test_paired_mean_and_standard_error():
    rng = np.random.default_rng(2)
    ref = rng.random(1000).astype(np.float32).astype(np.float64)  # references are stored as float32
    cur = (ref + 0.01 + rng.normal(0, 0.05, 1000)).astype(np.float32).astype(np.float64)
    c = paired.compare(cur, ref)
    d = cur - ref
    assert c.mean == pytest.approx(d.mean()) and c.se == pytest.approx(d.std(ddof=1) / np.sqrt(1000))
    assert c.degraded(2.0) and not paired.compare(ref, ref).degraded(2.0) and paired.compare(ref, ref).t() == 0.0


def test_a_task_tolerance_is_an_allowance_on_the_mean_loss_increase():
    rng = np.random.default_rng(3)
    ref = rng.random(1000).astype(np.float32).astype(np.float64)
    cur = (ref + 0.01 + rng.normal(0, 0.05, 1000)).astype(np.float32).astype(np.float64)
    d = cur - ref
    se = d.std(ddof=1) / np.sqrt(1000)
    assert paired.compare(cur, ref).degraded(2.0)  # 0.01 worse, SE ~0.0016: significant
    within = paired.compare(cur, ref, allowance=0.01)
    assert within.t() == pytest.approx((d.mean() - 0.01) / se) and not within.degraded(2.0)
    c = paired.paired_audit(["like"], cur[:, None], {"like": ref}, [0.7], {"like": 0.71}, 2.0, {"like": 1.0},
                            {"like": 0.01})[0]
    assert not c["breach"] and c["tolerance"] == pytest.approx(0.01 + 2.0 * se)
    assert paired.paired_audit(["like"], cur[:, None], {"like": ref}, [0.7], {"like": 0.71}, 2.0, {})[0]["breach"]


def test_paired_auc_change_matches_sklearn_and_a_bootstrap_of_its_spread():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    n = 3000
    y = (rng.random(n) < 0.2).astype(np.float32)
    ref = (y + rng.normal(0, 1.2, n)).astype(np.float32).astype(np.float64)
    cur = (ref + rng.normal(0, 0.6, n)).astype(np.float32).astype(np.float64)
    cur[:5] = cur[5]  # ties count one half
    change, se = paired.auc_change(cur, ref, y)
    assert change == pytest.approx(roc_auc_score(y, cur) - roc_auc_score(y, ref), abs=1e-12)
    boot = []
    for _ in range(400):  # rows resampled: the same rows for both models, as the paired test assumes
        i = rng.integers(0, n, n)
        boot.append(roc_auc_score(y[i], cur[i]) - roc_auc_score(y[i], ref[i]))
    assert se == pytest.approx(np.std(boot), rel=0.2)
    assert paired.auc_change(ref, ref, y) == (0.0, 0.0)
    assert all(np.isnan(paired.auc_change(cur, ref, np.zeros(n))))


def test_multipliers_follow_the_standardized_excess_and_the_score_ranks_feasible_first():
    obj = NMTStage(1, {0: 0.5}, lambda_init=1.0, measure="paired", z=2.0, checks_per_epoch=4)
    lam0 = float(obj.lam[0])
    obj.after_check({0: paired.Paired(mean=0.01, se=0.001, rows=100)})  # t = 10: significantly worse
    assert float(obj.lam[0]) > lam0
    assert obj.valid_score(torch.tensor([0.5, 0.3])) > INFEASIBLE
    obj.after_check({0: paired.Paired(mean=-0.001, se=0.001, rows=100)})  # better than frozen
    assert obj.valid_score(torch.tensor([0.5, 0.3])) == pytest.approx(0.3)
    lam1 = float(obj.lam[0])
    for _ in range(20):
        obj.after_check({0: paired.Paired(mean=-0.001, se=0.001, rows=100)})
    assert float(obj.lam[0]) < lam1 and float(obj.lam[0]) >= 0.0


def test_audit_margin_makes_a_stage_held_there_breach_the_test_audit_at_the_nominal_rate():
    """Simulated: a stage holds its top task at t = -margin on validation rows, so its true change is
    -margin SE_v plus the validation sample's error; the test audit then sees that truth plus its own."""
    rng = np.random.default_rng(0)
    z, nominal = 2.0, 0.02275  # P(N(0,1) > 2)
    for valid_rows, test_rows in ((6_000, 18_000), (12_000, 12_000), (2_500, 7_500)):
        se_v, se_t = 1 / np.sqrt(valid_rows), 1 / np.sqrt(test_rows)
        truth_level = rng.normal(0, se_v, 400_000)  # held level: truth is the validation error, negated
        level_rate = np.mean((truth_level + rng.normal(0, se_t, truth_level.size)) / se_t > z)
        m = paired.audit_margin(z, valid_rows, test_rows)
        truth = -m * se_v + rng.normal(0, se_v, 400_000)
        rate = np.mean((truth + rng.normal(0, se_t, truth.size)) / se_t > z)
        assert rate == pytest.approx(nominal, abs=0.002)
        assert level_rate > 2.5 * nominal  # why: level on validation breaches far more than nominal
    assert paired.audit_margin(2.0, 6_000, 18_000) == pytest.approx(2.0 * (2.0 - 1.0) / np.sqrt(3.0))
    assert paired.audit_margin(2.0, 0, 100) == 0.0


def test_a_margin_moves_what_the_multipliers_and_the_feasible_epochs_aim_at():
    level = NMTStage(1, {0: 0.5}, lambda_init=1.0, measure="paired", z=2.0, checks_per_epoch=4, feasible_z=0.0)
    audit = NMTStage(1, {0: 0.5}, lambda_init=1.0, measure="paired", z=2.0, checks_per_epoch=4, feasible_z=0.0,
                     margin=1.0)
    check = {0: paired.Paired(mean=-0.0005, se=0.001, rows=100)}  # t = -0.5: better, but not by a margin of 1
    for obj in (level, audit):
        obj.after_check(check)
    assert level.valid_score(torch.tensor([0.5, 0.3])) == pytest.approx(0.3)
    assert audit.valid_score(torch.tensor([0.5, 0.3])) > INFEASIBLE
    assert float(audit.lam[0]) > float(level.lam[0])
    audit.after_check({0: paired.Paired(mean=-0.0015, se=0.001, rows=100)})  # t = -1.5: past the margin
    assert audit.valid_score(torch.tensor([0.5, 0.3])) == pytest.approx(0.3)


@pytest.mark.slow
def test_warmup_keeps_the_higher_task_bit_identical_and_stage_audits_out_of_sample(tiny_cfg, tiny_dataset, tmp_path):
    from nmtrec.components.train.stage import run_stage

    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(tmp_path / "s1"))
    rows = paired.load_rows(tmp_path / "s1", "valid")
    assert set(rows) == {"like"} and set(paired.load_rows(tmp_path / "s1", "test")) == {"like"}
    # one epoch that is all warm-up: like's predictions cannot move
    cfg = tiny_cfg.updated(train={"max_epochs": 1}, nmt={"warmup_epochs": 1, "init": "previous"})
    m = run_stage(cfg, 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"))
    (valid,) = m.stages[-1].constraint_audit
    (test,) = m.stages[-1].test_audit
    assert valid["task"] == test["task"] == "like"
    assert valid["mean_loss_change"] == 0.0 and test["mean_loss_change"] == 0.0 and test["auc_change"] == 0.0
    assert (test["auc_change_paired"], test["auc_se"], test["auc_z"]) == (0.0, 0.0, 0.0)  # DeLong, same rows
    assert not valid["breach"] and not test["breach"]
    # the click head did learn, and stage 2 carries both tasks' reference rows on
    assert set(paired.load_rows(tmp_path / "s2", "valid")) == {"like", "click"}
    assert set(paired.load_rows(tmp_path / "s2", "test", paired.scores_file)) == {"like", "click"}
    assert m.frozen_test_auc["like"] == pytest.approx(test["frozen_auc"])


def test_pairwise_standard_error_matches_the_spread_over_resampled_data(monkeypatch):
    """A `pairwise` task's per-row losses share pairs: over 300 independent draws of a split (5 % positives,
    four chunks) the spread of the paired mean change equals compare's DeLong standard error, while the
    rows-as-independent formula understates it."""
    monkeypatch.setattr(paired, "CHUNK", 1024)
    rng = np.random.default_rng(0)
    changes, se_delong, se_rows = [], [], []
    for _ in range(300):
        n = 4 * paired.CHUNK
        y = (rng.random(n) < 0.05).astype(np.float64)
        signal = rng.normal(size=n) + 1.2 * y
        reference = signal + rng.normal(scale=0.5, size=n)
        current = signal + rng.normal(scale=0.5, size=n) + 0.3 * y * rng.normal(size=n)
        rows_ref = paired.row_losses(reference[:, None], y[:, None], "pairwise")[:, 0]
        rows_now = paired.row_losses(current[:, None], y[:, None], "pairwise")[:, 0]
        rows_ref = rows_ref.astype(np.float32).astype(np.float64)  # the stored precision
        c = paired.compare(rows_now, rows_ref, positive=paired.pairwise_positives("pairwise", y[:, None], 0))
        changes.append(c.mean)
        se_delong.append(c.se)
        se_rows.append(paired.compare(rows_now, rows_ref).se)
    spread = np.std(changes, ddof=1)
    assert 0.8 < np.mean(se_delong) / spread < 1.25
    assert np.mean(se_rows) / spread < 0.6
    assert paired.pairwise_positives(["bce", "pairwise"], y[:, None].repeat(2, 1), 0) is None


def test_ranking_task_is_checked_by_its_paired_auc_change(monkeypatch):
    """nmt.rank_by_auc: a pairwise task in `ranking_reference` is judged by the AUC it lost against its frozen
    scores on the same rows (sklearn's AUCs), the other task by its per-row losses as before."""
    from types import SimpleNamespace

    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    n = 3000
    labels = (rng.random((n, 2)) < 0.1).astype(np.float32)
    reference = rng.normal(size=n) + 1.5 * labels[:, 0]
    now = np.stack([reference + rng.normal(scale=0.8, size=n), rng.normal(size=n) + labels[:, 1]], 1)
    monkeypatch.setattr(paired, "split_scores", lambda model, split, batch_size: now)
    frozen_rows = paired.row_losses(np.stack([reference, reference], 1), labels, "pairwise")
    check = paired.PairedCheck(SimpleNamespace(labels=labels), {0: frozen_rows[:, 0], 1: frozen_rows[:, 1]}, 512,
                               "pairwise", ranking_reference={0: reference})
    model = torch.nn.Linear(1, 1)
    got = check.measure(model)
    lost = roc_auc_score(labels[:, 0], reference) - roc_auc_score(labels[:, 0], now[:, 0])
    assert got[0].mean == pytest.approx(lost, abs=1e-9) and lost > 0 and got[0].t() > 2
    rows_now = paired.row_losses(now, labels, "pairwise")
    assert got[1] == paired.compare(rows_now[:, 1], frozen_rows[:, 1], positive=labels[:, 1] > 0.5)


def test_audits_judge_a_ranking_task_by_the_auc_it_lost():
    """`ranked` tasks (nmt.rank_by_auc): the audit's breach follows the paired AUC change, as the stage's checks
    do; halving a ranking score keeps its order (AUC unchanged) while its pairwise loss rises significantly,
    and a noisier order loses AUC significantly."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    n = 4000
    y = (rng.random((n, 1)) < 0.1).astype(np.float32)
    ref = rng.normal(size=n) + 1.5 * y[:, 0]
    ref_rows = paired.row_losses(ref[:, None], y, "pairwise")[:, 0]

    def audit(now, ranked):
        rows = paired.row_losses(now[:, None], y, "pairwise")
        return paired.paired_audit(["like"], rows, {"like": ref_rows}, [0.7], {"like": 0.7}, 2.0, {}, scores=now[:, None],
                                   labels=y, frozen_scores={"like": ref}, loss="pairwise", ranked=ranked)[0]

    flat = 0.5 * ref
    assert audit(flat, ())["breach"] and audit(flat, ())["judged_by"] == "loss"
    kept = audit(flat, ("like",))
    assert not kept["breach"] and kept["judged_by"] == "auc" and kept["auc_change_paired"] == pytest.approx(0.0, abs=1e-6)
    noisy = ref + 0.5 * rng.normal(size=n)
    lost = audit(noisy, ("like",))
    expected = roc_auc_score(y[:, 0], noisy) - roc_auc_score(y[:, 0], ref)
    assert lost["breach"] and lost["auc_change_paired"] == pytest.approx(expected, abs=1e-9)
    assert lost["auc_tolerance"] == pytest.approx(2.0 * lost["auc_se"])
