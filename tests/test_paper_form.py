"""The paper's exact form: `nmt.preset: paper`, FAMO+NMT in the paper's form (FAMO balances the task loss
against the constraint term) against a float64 reference of FAMO's rule, and a small famo+nmt stage."""
import math

import pytest
import torch

from conftest import tiny_config
from nmtrec.components.common.config import NMT_PRESETS, Config, ConfigError, NMTConfig, load_config

PAPER = {"multiplier": "gradient", "constraint_data": "train", "ema": 0.0, "warmup_epochs": 0,
         "init": "previous", "anchor": "loss", "higher_weight": 0.0,
         "alternatives": [], "distill_variants": False}  # one model a stage as the paper trains it, no variants
# the keys the paper preset leaves as configured: the paper's own knobs (tau, lambda_init, r), the audit
# switch, the preset itself, keys that only the `paired` measurement reads (the preset measures `train`), and
# what patience counts (the paper trains a fixed number of epochs; every nmtrec stage stops on validation)
AS_CONFIGURED = {"tau", "lambda_init", "tolerance", "relative_tolerance", "fail_on_breach", "preset", "z",
                 "checks_per_epoch", "feasible_z", "catch_up", "patience_on", "rank_by_auc", "aim",
                 "fallback"}  # fallback: fresh stages only; the paper's form continues from the previous one


# --- the preset --------------------------------------------------------------------------------------

def test_paper_preset_resolves_to_exactly_the_paper_settings():
    assert NMT_PRESETS["paper"] == PAPER
    own = {"tau": 0.1, "lambda_init": 0.5, "tolerance": 0.002, "relative_tolerance": 0.01}
    cfg = Config.model_validate({"tasks": ["like", "click"], "nmt": {"preset": "paper", **own}})
    assert cfg.nmt.model_dump() == {**NMTConfig().model_dump(), **own, **PAPER, "preset": "paper"}
    # a dumped config (every key present, e.g. a KFP step's JSON input) validates to the same settings
    assert Config.from_json(cfg.to_json()) == cfg
    assert cfg.updated(nmt={"tau": 0.01}).nmt.tau == 0.01


def test_every_nmt_key_is_pinned_by_the_paper_preset_or_left_as_configured():
    """A new NMTConfig key needs a decision: what value is the paper's form (pin it in NMT_PRESETS['paper'])
    or does the paper's form leave it to the user (add it to AS_CONFIGURED here)?"""
    fields = set(NMTConfig.model_fields)
    assert set(PAPER) <= fields
    assert fields - set(PAPER) - AS_CONFIGURED == set(), "decide how nmt.preset: paper treats these keys"


@pytest.mark.parametrize("key,value", [("multiplier", "pi"), ("constraint_data", "valid"), ("ema", 0.9),
                                       ("warmup_epochs", 1), ("init", "fresh"), ("anchor", "distill"),
                                       ("higher_weight", 1.0)])
def test_a_key_conflicting_with_the_preset_is_an_error_naming_it(tmp_path, key, value):
    # an error, not a silent override either way: a run labelled "paper" must be the paper's form, and a
    # key the user wrote must not be dropped without a word
    path = tmp_path / "c.yaml"
    path.write_text(f"tasks: [like, click]\nnmt:\n  preset: paper\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"nmt\.{key}: .*conflicts with nmt\.preset 'paper'"):
        load_config(path)
    # the preset's own value may be repeated
    path.write_text(f"tasks: [like, click]\nnmt:\n  preset: paper\n  {key}: {PAPER[key]!r}\n")
    assert getattr(load_config(path).nmt, key) == PAPER[key]


def test_with_preset_keeps_the_other_keys():
    cfg = Config.model_validate({"tasks": ["a", "b"], "nmt": {"lambda_init": 1.0, "relative_tolerance": 0.01}})
    with pytest.raises(ValueError, match="nmt.multiplier"):  # a dumped section names multiplier: pi
        cfg.updated(nmt={"preset": "paper"})
    paper = cfg.updated(nmt=cfg.nmt.with_preset("paper").model_dump())
    assert paper.nmt.model_dump() == {**cfg.nmt.model_dump(), **PAPER, "preset": "paper"}


def test_bench_grid_is_the_papers_and_runs_the_preset():
    from conftest import import_benchmark

    bench = import_benchmark("nmt")
    assert bench.ETAS == (1e-4, 5e-4, 1e-3) and bench.TAUS == (1e-2, 5e-2, 1e-1)
    cfg = tiny_config(nmt={"lambda_init": 1.0, "relative_tolerance": 0.01})
    point = bench.paper_point(cfg, 5e-4, 0.1)
    assert point.train.lr == 5e-4 and point.nmt.tau == 0.1 and point.nmt.preset == "paper"
    assert point.nmt.model_dump() == {**cfg.nmt.model_dump(), **PAPER, "tau": 0.1, "preset": "paper"}


def test_paper_preset_builds_plain_ascent_on_training_losses():
    from nmtrec.components.train.objectives.registry import stage_objective

    nmt = Config.model_validate({"tasks": ["a", "b"], "nmt": {"preset": "paper", "tau": 0.1, "lambda_init": 0.5}}).nmt
    obj = stage_objective("nmt", 1, nmt, {0: 0.2}, {0: 0.01}, {0: 0.3}, {0: 0.0}, 10)
    assert not obj.needs_held_out_losses and not getattr(obj, "needs_paired_checks", False)
    obj.after_step(torch.tensor([0.4, 0.9], dtype=torch.float64))  # raw batch value: 0.4 - 0.2 - 0.01
    assert obj.state()["lambda"][0] == pytest.approx(0.5 + 0.1 * 0.19)
    obj.after_step(torch.tensor([0.1, 0.9], dtype=torch.float64))  # no memory of the last step (ema 0)
    assert obj.state()["lambda"][0] == pytest.approx(max(0.0, 0.519 + 0.1 * (0.1 - 0.21)))


# --- FAMO+NMT in the paper's form --------------------------------------------------------------------

class FamoReference:
    """FAMO's rule (Liu et al.) on the two parts of a constrained stage, in float64, written out:
    l = (f_k, sum_j lam_j (f_j - f_j* - r_j)), lower bounds l* = (0, -sum_j lam_j (f_j* + r_j)),
    D = l - l* + eps, z = softmax(w), c = sum z / D, L = sum z log D / c; after the step
    delta = log D - log D' (same batch, same lam), w takes an Adam step (lr 0.025, L2 weight decay 1e-3)
    on J^T delta, J = diag(z) - z z^T; then lam <- max(0, lam + tau (f_j - f_j* - r_j))."""

    def __init__(self, task, frozen, tol, lam, tau, lr=0.025, gamma=1e-3, eps=1e-8):
        self.task, self.frozen, self.tol, self.lam, self.tau = task, frozen, tol, list(lam), tau
        self.lr, self.gamma, self.eps = lr, gamma, eps
        self.w, self.m, self.v, self.t = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], 0

    def z(self):
        e = [math.exp(x) for x in self.w]
        return [x / sum(e) for x in e]

    def d(self, f):
        parts = [f[self.task], sum(l * (f[j] - self.frozen[j] - self.tol[j]) for j, l in enumerate(self.lam))]
        lower = [0.0, -sum(l * (self.frozen[j] + self.tol[j]) for j, l in enumerate(self.lam))]
        return [p - q + self.eps for p, q in zip(parts, lower)]

    def loss_and_grad(self, f):
        z, d = self.z(), self.d(f)
        c = sum(zi / di for zi, di in zip(z, d))
        loss = sum(zi * math.log(di) for zi, di in zip(z, d)) / c
        grad = [0.0] * len(f)  # dL/df with c held constant: (z_i / D_i) / c times dl_i/df
        grad[self.task] = z[0] / d[0] / c
        for j, l in enumerate(self.lam):
            grad[j] = z[1] / d[1] / c * l
        return loss, grad

    def after_step(self, f, f_post):
        delta = [math.log(a) - math.log(b) for a, b in zip(self.d(f), self.d(f_post))]
        z = self.z()
        self.t += 1
        for i in range(2):
            g = sum((z[i] * (i == k) - z[i] * z[k]) * delta[k] for k in range(2)) + self.gamma * self.w[i]
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            m_hat, v_hat = self.m[i] / (1 - 0.9 ** self.t), self.v[i] / (1 - 0.999 ** self.t)
            self.w[i] -= self.lr * m_hat / (math.sqrt(v_hat) + 1e-8)
        self.lam = [max(0.0, l + self.tau * (f[j] - self.frozen[j] - self.tol[j])) for j, l in enumerate(self.lam)]


def test_famo_nmt_matches_famos_rule_on_task_loss_and_constraint_term():
    from nmtrec.components.train.objectives import FAMONMTStage

    frozen, tol = {0: 0.20, 1: 0.50}, {0: 0.01, 1: 0.0}
    obj = FAMONMTStage(2, frozen, lambda_init=0.7, tau=5.0, tolerance=tol, ema=0.0, update="gradient")
    ref = FamoReference(2, frozen, tol, [0.7, 0.7], 5.0)
    # hand-made batches (before, after the step): constraint 0 violated then satisfied, constraint 1
    # mostly satisfied until its multiplier is projected to 0 (the last batch runs with lambda_1 = 0)
    batches = [([0.26, 0.45, 0.90], [0.25, 0.46, 0.84]),
               ([0.24, 0.49, 0.80], [0.22, 0.50, 0.77]),
               ([0.19, 0.52, 0.75], [0.20, 0.51, 0.74]),
               ([0.18, 0.40, 0.70], [0.17, 0.41, 0.69]),
               ([0.23, 0.45, 0.68], [0.22, 0.44, 0.66])]
    for before, after in batches:
        f = torch.tensor(before, dtype=torch.float64, requires_grad=True)
        loss = obj.loss(f)
        loss.backward()
        want_loss, want_grad = ref.loss_and_grad(before)
        assert loss.item() == pytest.approx(want_loss, rel=1e-12)
        assert f.grad.tolist() == pytest.approx(want_grad, rel=1e-10, abs=1e-12)
        obj.after_step(f.detach(), torch.tensor(after, dtype=torch.float64))
        ref.after_step(before, after)
        assert obj.famo.w.detach().tolist() == pytest.approx(ref.w, rel=1e-10, abs=1e-14)
        assert obj.state()["weights"] == pytest.approx(ref.z(), rel=1e-12)
        assert [obj.state()["lambda"][j] for j in (0, 1)] == pytest.approx(ref.lam, rel=1e-12, abs=1e-15)
    assert ref.lam == pytest.approx([0.95, 0.0]) and min(ref.w) < 0 < max(ref.w)  # weights moved


def test_famo_nmt_without_active_constraints_is_the_task_loss():
    from nmtrec.components.train.objectives import FAMONMTStage

    obj = FAMONMTStage(1, {0: 0.3}, lambda_init=0.0, tau=0.1, ema=0.0, update="gradient")
    f = torch.tensor([0.25, 0.8], dtype=torch.float64, requires_grad=True)
    obj.loss(f).backward()
    assert f.grad.tolist() == [0.0, 1.0]  # every lambda 0: no constraint term, FAMO's one-task limit
    obj.after_step(f.detach(), torch.tensor([0.2, 0.7], dtype=torch.float64))
    assert obj.famo.w.detach().tolist() == [0.0, 0.0] and obj.state()["lambda"][0] == 0.0
    with pytest.raises(ValueError, match="after the parameter step"):
        obj.after_step(f.detach())


def test_famo_nmt_stage_trains_with_the_paper_preset(tiny_dataset, tmp_path):
    from nmtrec.components.common.manifest import read_history
    from nmtrec.components.train.stage import run_stage

    cfg = tiny_config(tasks=["click", "like"], train={"max_epochs": 1},
                      nmt={"preset": "paper", "lambda_init": 1.0, "relative_tolerance": 0.01, "tau": 0.05})
    data = str(tiny_dataset / "dataset")
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    meta = run_stage(cfg, 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"), method="famo+nmt")
    stage = meta.stages[-1]
    assert stage.method == "famo+nmt" and set(meta.frozen_optima) == {"click", "like"}
    assert all(math.isfinite(v) for v in stage.valid_loss.values())
    history = read_history(tmp_path / "s2", stage)
    lam = [row.get(0, row.get("0")) for row in history["lambda"]]  # {task index: lambda} per step
    assert len(lam) == len(history["step"]) > 0 and min(lam) >= 0.0 and lam[0] != 1.0  # plain ascent moved it
    assert "held_out" not in history  # training-loss constraints


def test_bench_nmt_markdown_lists_every_setting_and_the_verdict():
    from conftest import import_benchmark

    bench = import_benchmark("nmt")
    r = lambda a, b, ok=True: {"test_auc": {"like": a, "click": b}, "test_auc_sd": {"like": 0.001, "click": 0.002},  # noqa: E731
                               "audit_passed": ok}
    rows = [("default (lr 0.005)", r(0.77, 0.78)), ("eta=0.0001,tau=0.01", r(0.76, 0.79, False)),
            ("eta=0.001,tau=0.1", r(0.765, 0.775))]
    result = {"seeds": [7, 1007], "config": "configs/demo.yaml", "quick": False, "seconds": 12.0,
              "best_grid_point": "eta=0.001,tau=0.1", "auc_gap_vs_best": {"like": 0.005, "click": 0.005},
              "margin": 0.002, "passed": True}
    md = bench.markdown(result, rows, ["like", "click"]).splitlines()
    assert md[2] == "| setting | like AUC | click AUC | audits |"
    assert md[4] == "| default (lr 0.005) | 0.7700 ± 0.0010 | 0.7800 ± 0.0020 | pass |"
    assert md[5].endswith("| breach |") and "(best, chosen on validation)" in md[6]
    assert md[-1] == "default − best grid point: like +0.0050, click +0.0050; passes (margin 0.002)."
