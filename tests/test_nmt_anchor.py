"""The default NMT stage: a fresh start, the higher tasks kept in the objective, and multipliers weighing
their divergence from the previous stage's model (components/train/objectives/nmt.py, teacher.py)."""
import numpy as np
import pytest
import torch

from nmtrec.components.train.objectives.nmt import NMTStage


def _stage(**kw):
    return NMTStage(1, {0: 0.2}, lambda_init=0.5, tolerance={0: 0.01}, **kw)


def test_loss_anchor_with_zero_weight_is_the_papers_lagrangian():
    f = torch.tensor([0.4, 0.9], dtype=torch.float64)
    got = _stage(anchor="loss", higher_weight=0.0).loss(f)
    assert float(got) == pytest.approx((0.9 + 0.5 * (0.4 - 0.2 - 0.01)) / 1.5, rel=1e-12)


def test_distill_anchor_keeps_the_higher_task_and_weighs_the_divergence():
    f = torch.tensor([0.4, 0.9], dtype=torch.float64)
    d = torch.tensor([0.03], dtype=torch.float64)
    got = _stage(anchor="distill", higher_weight=1.0).loss(f, divergence=d)
    assert float(got) == pytest.approx((0.9 + 1.0 * 0.4 + 0.5 * 0.03) / (1 + 1 + 0.5), rel=1e-12)
    with pytest.raises(ValueError, match="previous stage's predictions"):
        _stage(anchor="distill").loss(f)


def test_feasibility_reads_feasible_z_not_the_audits_z():
    class Check:
        def __init__(self, t):
            self._t = t

        def t(self):
            return self._t

    obj = NMTStage(1, {0: 0.2}, lambda_init=0.0, measure="paired", z=2.0, feasible_z=0.0)
    obj.after_check({0: Check(1.0)})  # worse by one standard error: within z, but not within 0
    assert obj.valid_score(torch.tensor([0.2, 0.5])) > 100
    obj.after_check({0: Check(-0.5)})
    assert obj.valid_score(torch.tensor([0.2, 0.5])) == pytest.approx(0.5)


def test_divergence_is_the_bernoulli_kl_from_the_teacher(tiny_cfg, tiny_dataset, tmp_path):
    """Against a float64 numpy KL on a real batch; zero for the teacher itself."""
    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.train.data import eval_batches, load_split
    from nmtrec.components.train.stage import run_stage
    from nmtrec.components.train.teacher import Teacher

    data = str(tiny_dataset / "dataset")
    cfg = tiny_cfg.updated(train={"max_epochs": 1})
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    spec = FeatureSpec.read(data)
    teacher = Teacher(tmp_path / "s1", cfg.model, spec, 1, torch.device("cpu"))
    kjt = next(iter(eval_batches(load_split(data, spec, "valid", ["like", "click"]), 512)))[0]
    p = teacher.probabilities(kjt).double().numpy()[:, 0]
    assert float(teacher.divergence(teacher.models[0](kjt), kjt)[0]) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(len(p), 2, dtype=torch.float64)  # a two-task model's output: task 0 is compared
    q = 1 / (1 + np.exp(-logits[:, 0].numpy()))
    kl = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))
    assert float(teacher.divergence(logits.float(), kjt)[0]) == pytest.approx(kl, rel=1e-4)


@pytest.mark.slow
def test_fresh_stage_starts_anew_and_the_anchor_pulls_it_to_the_teacher(tiny_cfg, tiny_dataset, tmp_path):
    """Stage 2 from a fresh start: with a large fixed multiplier on the divergence its like predictions end
    much closer to stage 1's than with none, and it is not stage 1's parameters continued."""
    from nmtrec.components.evaluate.scoring import predict_checkpoint
    from nmtrec.components.train.stage import run_stage

    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(tmp_path / "s1"))
    _, ref, _, _ = predict_checkpoint(str(tmp_path / "s1"), data, "valid")

    def stage2(lam: float, name: str, **nmt):
        # constraint_data train + gradient ascent with a negligible tau: lambda stays where it starts
        cfg = tiny_cfg.updated(train={"max_epochs": 6, "patience": 6, "lr": 0.01},
                               nmt={"lambda_init": lam, "constraint_data": "train", "multiplier": "gradient",
                                    "tau": 1e-12, **nmt})
        run_stage(cfg, 1, data, str(tmp_path / name), str(tmp_path / "s1"))
        return predict_checkpoint(str(tmp_path / name), data, "valid")[1][:, 0]

    anchored, free = stage2(100.0, "anchored"), stage2(0.0, "free", higher_weight=0.0)
    gap = lambda p: float(np.mean(np.abs(p - ref[:, 0])))  # noqa: E731
    assert gap(anchored) < 0.5 * gap(free)
    assert gap(anchored) > 1e-4  # a fresh model, not stage 1's continued and left alone


def test_catch_up_holds_lambda_while_the_higher_task_still_improves():
    """nmt.catch_up: a check whose mean change is a new low feeds no excess (t clipped at 0); once the change
    stops shrinking, the excess counts as without it."""
    class Check:
        def __init__(self, mean, se=0.01):
            self.mean, self.se = mean, se

        def t(self):
            return self.mean / self.se

    def run(catch_up):
        obj = NMTStage(1, {0: 0.2}, lambda_init=1.0, measure="paired", catch_up=catch_up)
        lams = []
        for mean in (0.05, 0.03, 0.02, 0.025, 0.025):  # improving, improving, improving, stalled, stalled
            obj.after_check({0: Check(mean)})
            lams.append(float(obj.lam[0]))
        return lams

    held, plain = run(True), run(False)
    assert held[:3] == [1.0, 1.0, 1.0]  # still catching up: lambda stays where it started
    assert held[3] > 1.0 and held[4] > held[3]  # stalled above the frozen model: lambda rises
    assert plain[0] > 1.0  # without catch-up the first excess raises it at once


def test_teacher_is_skipped_while_every_multiplier_is_zero(tiny_cfg, tiny_dataset, tmp_path):
    """With lambda = 0 the step skips the teacher's forward pass and is bit-for-bit the step that weighs its
    divergence at zero; with lambda > 0 the teacher scores the batch."""
    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.train.data import eval_batches, load_split
    from nmtrec.components.train.epochs import objective_loss, task_losses
    from nmtrec.components.train.stage import run_stage
    from nmtrec.components.train.teacher import Teacher
    from nmtrec.models.registry import build_model

    data = str(tiny_dataset / "dataset")
    cfg = tiny_cfg.updated(train={"max_epochs": 1})
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    spec = FeatureSpec.read(data)
    teacher = Teacher(tmp_path / "s1", cfg.model, spec, 1, torch.device("cpu"))
    calls = []
    teacher.models[0].register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(0)
    student = build_model(cfg.model, spec, 2, device="cpu")
    kjt, labels, _ = next(iter(eval_batches(load_split(data, spec, "valid", ["like", "click"]), 512)))

    def step(lam, skip):
        obj = NMTStage(1, {0: 0.2}, lambda_init=lam, anchor="distill", higher_weight=1.0)
        student.zero_grad()
        if skip:
            loss, _ = objective_loss(student, obj, kjt, labels, "test", teacher=teacher)
        else:  # the divergence computed and weighed whatever lambda is
            logits = student(kjt)
            loss = obj.loss(task_losses(logits, labels), divergence=teacher.divergence(logits, kjt))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in student.parameters() if p.grad is not None]

    calls.clear()
    (skipped, g_skipped), n_skipped = step(0.0, skip=True), len(calls)
    weighed, g_weighed = step(0.0, skip=False)
    assert n_skipped == 0
    assert torch.equal(skipped, weighed) and len(g_skipped) == len(g_weighed) > 0
    assert all(torch.equal(a, b) for a, b in zip(g_skipped, g_weighed))
    calls.clear()
    step(0.5, skip=True)
    assert len(calls) == 1
