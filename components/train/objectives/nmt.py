"""NMT stages (No More Tuning, AAAI 2025).

Stage 1 minimises the top task alone. Stage k minimises f_k subject to f_j <= f_j* + r_j for every
higher task j, through the Lagrangian L = f_k + sum_j lambda_j (f_j - f_j* - r_j). The parameter
step uses L / (1 + sum lambda) -- a convex combination of the task losses, so large multipliers do
not blow up the step -- and the multipliers take a projected ascent step (components/train/
objectives/multipliers.py: `pi` by default, the paper's `gradient` ascent with tau for comparison).

What the multipliers weigh (`nmt.anchor`) and what else the step keeps (`nmt.higher_weight` w):
    L = (f_k + w sum_j f_j + sum_j lambda_j a_j) / (1 + w (k - 1) + sum lambda)
with a_j = f_j - f_j* - r_j (`loss`, the paper, w = 0) or a_j = the mean Bernoulli divergence of task
j's predictions from the previous stage's model on the batch (`distill`, the default, w = 1). Why: a
stage that stopped at its best validation epoch has a training loss that keeps falling while its
validation loss rises, so pushing f_j's training loss down (the paper's a_j) cannot repair a held-out
degradation -- it overfits task j further, the measured violation grows, lambda climbs and the new task
starves. The divergence points at the previous model's predictions, whose held-out quality is the one
measured. The higher tasks' own losses at weight w keep them learning with the new task, so where it
helps them (positive transfer) they gain instead of being held at their old quality.

How the constraints are measured (`nmt.constraint_data`, `measure` here):
- `paired` (default): a few times an epoch the loop measures every higher task on the whole validation
  split against its frozen model, row by row (components/train/paired.py), and calls `after_check`.
  The multipliers follow t_j = mean paired loss difference / its standard error: they aim at the
  frozen quality itself (t = 0; with `nmt.aim: audit` a margin below it that the out-of-sample audit
  needs, components/train/paired.audit_margin), scale-free and data-driven, so one setting serves
  every data set; an epoch is feasible when no higher task is worse on average (t <= feasible_z, 0 by
  default, less the margin; z is the audits' allowance). Aiming at t = z instead (spending the noise
  allowance) cost the top task over `nmtrec bench priority`'s worlds.
- `valid`: one validation batch per step against the frozen validation loss (the loop passes its
  losses as `held_out`); `train`: the training batch against the frozen training loss (the paper).
  One batch's loss is a noisy estimate of f_j, so these updates follow g_j, an exponential moving
  average of the batch constraint value (`nmt.ema`); a raw per-batch ascent random-walks lambda.
"""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.base import Objective
from nmtrec.components.train.objectives.multipliers import (STANDARDIZED_CLIP, make_standardized_update,
                                                          make_update)

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
                 measure: str = "train", steps_per_epoch: int = 1, z: float = 2.0, checks_per_epoch: int = 1,
                 anchor: str = "loss", higher_weight: float = 0.0, feasible_z: float | None = None,
                 catch_up: bool = False, patience_on: str = "kept", margin: float = 0.0):
        """frozen/tolerance: f_j* and r_j of the constraint the multipliers follow -- on training data,
        with measure "valid" on validation batches (the loop passes their losses to after_step), with
        "paired" through after_check. frozen_valid/valid_tolerance: the validation bound of the
        early-stopping score (not used by "paired", whose bound is feasible_z standard errors, default z).
        anchor/higher_weight: see the module docstring; "distill" needs the loop to pass `divergence`.
        margin (paired): the multipliers and the feasible epochs hold each higher task at t = -margin instead
        of level (nmt.aim "audit": components/train/paired.audit_margin)."""
        self.task = task
        self.higher_weight = higher_weight
        self.needs_teacher = anchor == "distill"
        self.feasible_z = z if feasible_z is None else feasible_z
        self.catch_up, self.lowest = catch_up, {}  # paired: each task's lowest mean change so far
        self.patience_on = patience_on
        self.margin = margin
        self.measure = measure
        self.needs_held_out_losses = measure == "valid"
        self.needs_paired_checks = measure == "paired"
        self.z = z
        self.checks = None  # paired: the last measurement {j: Paired}
        self.frozen_valid = frozen_valid or {}
        self.valid_tolerance = valid_tolerance or {j: 0.0 for j in self.frozen_valid}
        self.constrained = sorted(frozen)
        self.frozen = torch.tensor([frozen[j] for j in self.constrained], dtype=torch.float64)
        tol = tolerance if isinstance(tolerance, dict) else {j: tolerance for j in self.constrained}
        self.tolerance = torch.tensor([tol[j] for j in self.constrained], dtype=torch.float64)
        lam = torch.full((len(self.constrained),), float(lambda_init), dtype=torch.float64)
        self.update = (make_standardized_update(lam, checks_per_epoch) if self.needs_paired_checks
                       else make_update(update, lam, tau, steps_per_epoch))
        self.lam = self.update.lam
        self.ema = ema
        self.violation = None  # smoothed f_j - f_j* - r_j

    def task_part(self, task_losses: torch.Tensor) -> torch.Tensor:
        """What the stage minimises besides the constraints (FAMO+NMT replaces it)."""
        return task_losses[self.task]

    def loss(self, task_losses, divergence: torch.Tensor | None = None):
        """divergence: [num constrained] the higher tasks' divergence from the previous stage's model on
        this batch (anchor "distill")."""
        if self.needs_teacher:
            if divergence is None and self.weighs_teacher():
                raise ValueError("nmt.anchor 'distill' needs the previous stage's predictions on the batch")
            term = torch.zeros_like(self.frozen) if divergence is None else divergence
            term = term.to(task_losses)
        else:
            term = task_losses[self.constrained] - (self.frozen + self.tolerance).to(task_losses)
        lam = self.lam.to(task_losses)
        kept = self.higher_weight * task_losses[self.constrained].sum() if self.higher_weight else 0.0
        weight = 1.0 + self.higher_weight * len(self.constrained) + lam.sum()
        return (self.task_part(task_losses) + kept + (lam * term).sum()) / weight

    def weighs_teacher(self) -> bool:
        """Whether the next step weighs the teacher's divergence: not while every multiplier is 0, when the
        loop skips the teacher's forward pass (the step is the same: a zero multiplier adds a zero term)."""
        return self.needs_teacher and bool((self.lam > 0).any())

    def after_step(self, task_losses, post_losses=None, held_out=None):
        if self.needs_paired_checks:  # the multipliers move in after_check
            return
        measured = held_out if self.needs_held_out_losses else task_losses
        g = measured[self.constrained].double().cpu() - self.frozen - self.tolerance
        self.violation = g if self.violation is None else self.ema * self.violation + (1 - self.ema) * g
        self.lam = self.update.step(self.violation, self.frozen)

    def held_t(self, check) -> float:
        """A paired check's t against what the stage holds its task at: level, or the margin below it."""
        return check.t() + self.margin

    def after_check(self, checks: dict, step_multipliers: bool = True):
        """A paired measurement {j: Paired} of every constrained task on the validation split; the
        multipliers follow its standardized change t_j (clipped), the early-stopping score reads it."""
        self.checks = checks
        # the multipliers aim at the frozen quality itself (t = 0), or a margin below it (nmt.aim: audit);
        # z is the audits' noise allowance, not a budget to spend on the stage's task
        t = torch.tensor([self.held_t(checks[j]) for j in self.constrained], dtype=torch.float64)
        if self.catch_up:
            for i, j in enumerate(self.constrained):
                if j not in self.lowest or checks[j].mean < self.lowest[j]:
                    self.lowest[j] = checks[j].mean
                    t[i] = min(float(t[i]), 0.0)
        self.violation = t
        if step_multipliers:
            self.lam = self.update.step(t.clamp(-STANDARDIZED_CLIP, STANDARDIZED_CLIP), torch.ones_like(t))

    def valid_score(self, valid_losses):
        """Lexicographic early-stopping score: among epochs whose higher-priority tasks stay within
        tolerance of their frozen quality, the lowest f_k; an epoch that breaks a constraint ranks
        after every feasible one (by its total excess). Paired: within feasible_z standard errors of
        the frozen model on the same validation rows (the loop checks right before asking). The stage
        keeps the feasible epoch with the best f_k, a selection among many epochs: an allowance of z
        errors there is spent by the selection, so by default an epoch must be no worse on average
        (feasible_z 0) and z is left to the audits, which see the test split once."""
        if self.needs_paired_checks:
            checks = self.checks.values() if self.checks else ()
            excess = sum(max(0.0, self.held_t(c) - self.feasible_z) for c in checks)
        else:
            excess = sum(max(0.0, float(valid_losses[j]) - v - self.valid_tolerance[j]) / v
                         for j, v in self.frozen_valid.items())
        return float(valid_losses[self.task]) if excess == 0 else INFEASIBLE + excess

    def progress_score(self, valid_losses):
        """nmt.patience_on "kept_or_task": the stage task's loss, feasible or not (while lambda holds a
        binding constraint near t = 0 about half the epochs are infeasible; a run of them must not end a
        stage whose task still improves)."""
        if self.patience_on == "kept_or_task":
            return float(valid_losses[self.task])
        return self.valid_score(valid_losses)

    def state(self):
        return {"lambda": {j: float(v) for j, v in zip(self.constrained, self.lam)}}
