"""Lagrangian arithmetic of an NMT stage against hand-computed values."""
import pytest
import torch

from nmtrec.components.train.objectives import NMTStage, SingleTask


def test_single_task_picks_its_loss():
    assert SingleTask(1).loss(torch.tensor([0.3, 0.7])).item() == pytest.approx(0.7)


def test_rescaled_lagrangian():
    # stage 3 (task index 2), constraints on tasks 0 and 1 with frozen optima 0.2 and 0.5
    obj = NMTStage(2, {0: 0.2, 1: 0.5}, lambda_init=1.0, tau=0.1, ema=0.0)
    losses = torch.tensor([0.3, 0.4, 0.9], dtype=torch.float64)
    # (0.9 + 1*(0.3-0.2) + 1*(0.4-0.5)) / (1 + 2) = 0.3
    assert obj.loss(losses).item() == pytest.approx(0.9 / 3)


def test_ascent_sign_and_projection():
    obj = NMTStage(2, {0: 0.2, 1: 0.5}, lambda_init=0.05, tau=1.0, ema=0.0)
    obj.after_step(torch.tensor([0.3, 0.4, 0.9]))
    # violated constraint grows: 0.05 + 1*(0.1); satisfied one would go to -0.05 -> projected to 0
    assert obj.state()["lambda"][0] == pytest.approx(0.15)
    assert obj.state()["lambda"][1] == 0.0


def test_tolerance_relaxes_constraint():
    obj = NMTStage(1, {0: 0.2}, lambda_init=0.0, tau=1.0, tolerance=0.15, ema=0.0)
    obj.after_step(torch.tensor([0.3, 0.9]))  # 0.3 <= 0.2 + 0.15: satisfied
    assert obj.state()["lambda"][0] == 0.0


def test_gradient_of_rescaled_loss():
    theta = torch.tensor([0.3, 0.9], requires_grad=True, dtype=torch.float64)
    obj = NMTStage(1, {0: 0.2}, lambda_init=3.0, tau=0.1)
    obj.loss(theta).backward()
    # d/df0 = λ/(1+λ) = 0.75, d/df1 = 1/(1+λ) = 0.25
    assert theta.grad.tolist() == pytest.approx([0.75, 0.25])


def test_pi_update_matches_hand_computed_nupi_steps():
    # nuPI (Kp=1, Ki=1, lr = RATE / steps_per_epoch = 2 / 2 = 1, cooper's SGD init) on the relative
    # violation g/f*: the first step is plain ascent (lambda += lr * Ki * e0) and leaves the error
    # memory xi at 0; every later step adds lr * (Ki * e_t + Kp * (e_t - xi)), then xi = e_t.
    obj = NMTStage(1, {0: 0.5}, lambda_init=0.0, ema=0.0, update="pi", steps_per_epoch=2)
    obj.after_step(torch.tensor([0.55, 0.9]))  # e0 = 0.05 / 0.5 = 0.1
    assert obj.state()["lambda"][0] == pytest.approx(0.1)
    obj.after_step(torch.tensor([0.6, 0.9]))  # e1 = 0.2: 0.1 + 0.2 + 1*(0.2-0)
    assert obj.state()["lambda"][0] == pytest.approx(0.5)
    obj.after_step(torch.tensor([0.5, 0.9]))  # e2 = 0: 0.5 + 0 + 1*(0-0.2)
    assert obj.state()["lambda"][0] == pytest.approx(0.3)
    obj.after_step(torch.tensor([0.2, 0.9]))  # e3 = -0.6: 0.3 - 0.6 + 1*(-0.6) < 0 -> projected to 0
    assert obj.state()["lambda"][0] == 0.0


def test_pi_step_is_set_per_epoch():
    # the same sustained violation over one epoch moves lambda by RATE * e whatever the number of
    # batches in an epoch, plus one proportional kick lr * Kp * e (second step: e - xi = e - 0)
    for steps in (4, 40):
        obj = NMTStage(1, {0: 0.5}, lambda_init=1.0, ema=0.0, update="pi", steps_per_epoch=steps)
        for _ in range(steps):
            obj.after_step(torch.tensor([0.55, 0.9]))  # e = 0.1 every step
        assert obj.state()["lambda"][0] == pytest.approx(1.0 + 2.0 * 0.1 + 2.0 / steps * 0.1)


def test_held_out_constraint_follows_the_validation_losses():
    # frozen validation loss 0.5, tolerance 0.05: the training batch (0.9 on task 0) would say
    # "violated", the held-out batch (0.52) says "satisfied by 0.03" -- the multiplier follows the latter
    obj = NMTStage(1, {0: 0.5}, lambda_init=0.1, tau=1.0, tolerance=0.05, ema=0.0, measure="valid")
    assert obj.needs_held_out_losses
    obj.after_step(torch.tensor([0.9, 0.9]), held_out=torch.tensor([0.52, 0.7]))
    assert obj.state()["lambda"][0] == pytest.approx(0.1 - 0.03)
    on_train = NMTStage(1, {0: 0.5}, lambda_init=0.1, tau=1.0, tolerance=0.05, ema=0.0)
    assert not on_train.needs_held_out_losses
    on_train.after_step(torch.tensor([0.9, 0.9]), held_out=torch.tensor([0.52, 0.7]))
    assert on_train.state()["lambda"][0] == pytest.approx(0.1 + 0.35)


def test_constraint_is_smoothed_before_the_multiplier_step():
    obj = NMTStage(1, {0: 0.2}, lambda_init=0.0, tau=1.0, ema=0.5)
    obj.after_step(torch.tensor([0.4, 0.9]))  # g = 0.2 (first value taken as is)
    obj.after_step(torch.tensor([0.2, 0.9]))  # g = 0.5*0.2 + 0.5*0.0 = 0.1
    assert obj.state()["lambda"][0] == pytest.approx(0.2 + 0.1)


def test_validation_score_ranks_feasible_epochs_first():
    obj = NMTStage(1, {0: 0.2}, lambda_init=0.0, frozen_valid={0: 0.3}, valid_tolerance={0: 0.01})
    feasible = obj.valid_score(torch.tensor([0.305, 0.9]))  # within tolerance: the stage task's loss
    assert feasible == pytest.approx(0.9)
    broken = obj.valid_score(torch.tensor([0.33, 0.1]))  # better f_k but breaks the constraint
    assert broken > feasible


def test_static_weights_loss():
    from nmtrec.components.train.objectives import StaticWeights

    assert StaticWeights([0.9, 0.1]).loss(torch.tensor([0.2, 0.6])).item() == pytest.approx(0.24)


def test_famo_gradient_and_weight_update_by_hand():
    from nmtrec.components.train.objectives import FAMO

    famo = FAMO(2, w_lr=0.025, gamma=0.0, eps=0.0)
    losses = torch.tensor([0.2, 0.8], dtype=torch.float64, requires_grad=True)
    famo.loss(losses).backward()
    # z = (0.5, 0.5), c = 0.5/0.2 + 0.5/0.8 = 3.125; dL/dl_i = z_i / (l_i c)
    assert losses.grad.tolist() == pytest.approx([0.8, 0.2])
    famo.after_step(losses.detach(), torch.tensor([0.1, 0.7], dtype=torch.float64))
    # delta = (log 2, log 8/7); J^T delta = 0.25 (d1 - d2) (1, -1) > 0 for task 0; Adam's first step
    # moves each logit by lr against the sign: task 0 improved more, so it loses weight
    assert famo.w.detach().tolist() == pytest.approx([-0.025, 0.025], abs=1e-6)
    z = famo.state()["weights"]
    assert z[0] < 0.5 < z[1]


def test_pairwise_loss_by_hand():
    import math

    from nmtrec.components.train.losses import pairwise

    logits = torch.tensor([[2.0], [0.0], [1.0]])  # one shared score
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    out = pairwise(logits, labels)
    sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log sigmoid(x)
    # task 0: pairs (2,0), (1,0); task 1: pairs (1,2), (1,0)
    assert out.tolist() == pytest.approx([(sp(2) + sp(1)) / 2, (sp(-1) + sp(1)) / 2])
    assert pairwise(logits, torch.zeros(3, 2)).tolist() == [0.0, 0.0]  # no pair: 0


def test_unknown_method_is_rejected_with_its_name():
    from nmtrec.components.common.config import Config

    with pytest.raises(ValueError, match="weight_grid:0.9"):
        Config.model_validate({"tasks": ["like", "click"], "methods": ["nmt", "weight_grid:0.9"]})
    with pytest.raises(ValueError, match="bogus"):
        Config.model_validate({"tasks": ["like", "click"], "methods": ["bogus"]})


@pytest.mark.parametrize("make", [
    lambda: NMTStage(1, {0: 0.5}, lambda_init=0.2, ema=0.5, update="pi"),
    lambda: __import__("nmtrec.components.train.objectives", fromlist=["FAMO"]).FAMO(2),
])
def test_resume_state_continues_exactly(make, tmp_path):
    """A restarted stage (pickled resume state, as the resume checkpoint stores it) continues like
    the uninterrupted one: multipliers, EMAs and the nuPI / FAMO optimizer states come back."""
    a, b = make(), make()
    steps = [torch.tensor([0.6, 0.9], dtype=torch.float64), torch.tensor([0.4, 0.8], dtype=torch.float64),
             torch.tensor([0.55, 0.7], dtype=torch.float64)]
    post = torch.tensor([0.3, 0.6], dtype=torch.float64)
    a.after_step(steps[0], post)
    torch.save(a.resume_state(), tmp_path / "s.pt")
    b.load_state(torch.load(tmp_path / "s.pt", weights_only=False))
    for x in steps[1:]:
        a.after_step(x, post)
        b.after_step(x, post)
    assert b.state() == a.state()
