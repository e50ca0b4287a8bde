"""One model distilled from an NMT stage's variants (`nmt.distill_variants`).

A stage that trains several variants (components/train/alternatives.py) has as many models of every task;
their averaged prediction is better than any one of them (it averages away the training noise of each),
but serving it would cost one model per variant. A fresh model trained on every task towards both the
labels and that average (knowledge distillation, Hinton et al. 2015) keeps much of the gain at the cost of
one model. It becomes one more candidate of the stage's choice, held to the same rule as the variants
(no higher task worse on validation than the stage as configured), so it adds no risk to the higher tasks.

L = mean over tasks t of  HARD f_t + (1 - HARD) KL(teacher_t || model_t)
(KL: components/train/teacher.py; it has the gradient of the cross-entropy against the teacher's
probabilities). Early stopping: the mean validation loss of the tasks (against the labels).
"""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.base import Objective

# the labels' share of the target: the usual even mix (Hinton et al.); the labels keep the student anchored
# where the teachers agree on a wrong answer
HARD = 0.5


class Distilled(Objective):
    needs_teacher = True

    def loss(self, task_losses: torch.Tensor, divergence: torch.Tensor | None = None) -> torch.Tensor:
        if divergence is None:
            raise ValueError("a distilled stage needs its teachers' predictions on the batch")
        return (HARD * task_losses + (1.0 - HARD) * divergence.to(task_losses)).mean()

    def weighs_teacher(self) -> bool:
        return True
