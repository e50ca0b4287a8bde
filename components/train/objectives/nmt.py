"""NMT stages (No More Tuning, AAAI 2025).

Stage 1 minimises the top task alone. Stage k minimises f_k subject to f_j <= f_j* + r_j for every
higher task j, through the Lagrangian L = f_k + sum_j lambda_j (f_j - f_j* - r_j). The parameter
step uses L / (1 + sum lambda) -- a convex combination of the task losses, so large multipliers do
not blow up the step -- and the multipliers take a projected ascent step (components/train/
objectives/multipliers.py: `pi` by default, the paper's `gradient` ascent with tau for comparison).

The constraint is measured on validation batches by default (held-out: the loop passes their losses
as `held_out`; why in components/train/stage.py) or on the training batches (`nmt.constraint_data`).
Noise: one batch's loss is a noisy estimate of f_j, so the multiplier update is driven by g_j, an
exponential moving average of the batch constraint value (`nmt.ema`), not by the raw batch value;
a raw per-batch ascent random-walks lambda.
"""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.base import Objective
from nmtrec.components.train.objectives.multipliers import make_update

INFEASIBLE = 1e3  # added to the early-stopping score of an epoch that breaks a validation constraint


class SingleTask(Objective):
    def __init__(self, task: int):
        self.task = task

    def loss(self, task_losses):
        return task_losses[self.task]

    def valid_score(self, valid_losses):
        return float(valid_losses[self.task])


class NMTStage(Objective):
    def __init__(self, task: int, frozen: dict[int, float], lambda_init: float, tau: float = 0.05,
                 tolerance: float | dict[int, float] = 0.0, ema: float = 0.9, update: str = "gradient",
                 frozen_valid: dict[int, float] | None = None, valid_tolerance: dict[int, float] | None = None,
                 held_out: bool = False, steps_per_epoch: int = 1):
        """frozen/tolerance: f_j* and r_j of the constraint the multipliers follow -- on training data, or
        with `held_out` on validation data (then the loop passes a validation batch's losses to
        after_step). frozen_valid/valid_tolerance: the validation bound of the early-stopping score."""
        self.task = task
        self.needs_held_out_losses = held_out
        self.frozen_valid = frozen_valid or {}
        self.valid_tolerance = valid_tolerance or {j: 0.0 for j in self.frozen_valid}
        self.constrained = sorted(frozen)
        self.frozen = torch.tensor([frozen[j] for j in self.constrained], dtype=torch.float64)
        tol = tolerance if isinstance(tolerance, dict) else {j: tolerance for j in self.constrained}
        self.tolerance = torch.tensor([tol[j] for j in self.constrained], dtype=torch.float64)
        self.update = make_update(update, torch.full((len(self.constrained),), float(lambda_init),
                                                     dtype=torch.float64), tau, steps_per_epoch)
        self.lam = self.update.lam
        self.ema = ema
        self.violation = None  # smoothed f_j - f_j* - r_j

    def task_part(self, task_losses: torch.Tensor) -> torch.Tensor:
        """What the stage minimises besides the constraints (FAMO+NMT replaces it)."""
        return task_losses[self.task]

    def loss(self, task_losses):
        slack = task_losses[self.constrained] - (self.frozen + self.tolerance).to(task_losses)
        lam = self.lam.to(task_losses)
        return (self.task_part(task_losses) + (lam * slack).sum()) / (1.0 + lam.sum())

    def after_step(self, task_losses, post_losses=None, held_out=None):
        measured = held_out if self.needs_held_out_losses else task_losses
        g = measured[self.constrained].double().cpu() - self.frozen - self.tolerance
        self.violation = g if self.violation is None else self.ema * self.violation + (1 - self.ema) * g
        self.lam = self.update.step(self.violation, self.frozen)

    def valid_score(self, valid_losses):
        """Lexicographic early-stopping score: among epochs whose higher-priority validation losses
        stay within tolerance of their values at the end of their own stage, the lowest f_k; an
        epoch that breaks a constraint ranks after every feasible one (by its total excess)."""
        excess = sum(max(0.0, float(valid_losses[j]) - v - self.valid_tolerance[j]) / v
                     for j, v in self.frozen_valid.items())
        return float(valid_losses[self.task]) if excess == 0 else INFEASIBLE + excess

    def state(self):
        return {"lambda": {j: float(v) for j, v in zip(self.constrained, self.lam)}}
