"""Lagrangian arithmetic of an NMT stage against hand-computed values."""
import pytest
import torch

from components.train.objectives import NMTStage, SingleTask


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
