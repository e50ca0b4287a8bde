"""NMT stages (No More Tuning, AAAI 2025).

Stage 1 minimises the top task alone. Stage k minimises f_k subject to f_j <= f_j* + r_j for every
higher task j, through the Lagrangian L = f_k + sum_j lambda_j (f_j - f_j* - r_j). The parameter
step uses L / (1 + sum lambda) -- a convex combination of the task losses, so large multipliers do
not blow up the step -- and the multipliers take a projected ascent step lambda_j <- max(0,
lambda_j + tau * g_j). g_j is an exponential moving average of the batch constraint value, because
one batch's loss is a noisy estimate of f_j and a raw per-batch ascent random-walks lambda.
"""
from __future__ import annotations

import torch

from components.train.objectives.base import Objective


class SingleTask(Objective):
    def __init__(self, task: int):
        self.task = task

    def loss(self, task_losses):
        return task_losses[self.task]


class NMTStage(Objective):
    def __init__(self, task: int, frozen: dict[int, float], lambda_init: float, tau: float,
                 tolerance: float = 0.0, ema: float = 0.9):
        self.task = task
        self.constrained = sorted(frozen)
        self.frozen = torch.tensor([frozen[j] for j in self.constrained], dtype=torch.float64)
        self.lam = torch.full((len(self.constrained),), float(lambda_init), dtype=torch.float64)
        self.tau = tau
        self.tolerance = tolerance
        self.ema = ema
        self.violation = None  # smoothed f_j - f_j* - r_j

    def loss(self, task_losses):
        slack = task_losses[self.constrained] - self.frozen.to(task_losses) - self.tolerance
        lam = self.lam.to(task_losses)
        return (task_losses[self.task] + (lam * slack).sum()) / (1.0 + lam.sum())

    def after_step(self, task_losses):
        g = task_losses[self.constrained].double().cpu() - self.frozen - self.tolerance
        self.violation = g if self.violation is None else self.ema * self.violation + (1 - self.ema) * g
        self.lam = torch.clamp(self.lam + self.tau * self.violation, min=0.0)

    def state(self):
        return {"lambda": {j: float(v) for j, v in zip(self.constrained, self.lam)}}
