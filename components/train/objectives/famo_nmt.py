"""FAMO inside an NMT constrained stage, in the paper's form (FAMO+NMT).

The stage's Lagrangian has two parts, the task loss and the constraint term:
    l_1 = f_k,    l_2 = sum_j lambda_j (f_j - f_j* - r_j).
FAMO (components/train/objectives/famo.py) balances these two "tasks" instead of adding them: the
parameter step descends FAMO's L = sum_i z_i log D_i / c, D_i = l_i - l*_i + eps. FAMO needs D_i > 0,
and l_2 is negative whenever the constraints hold, so l*_i is each part's lower bound (as in FAMO, whose
l* is the minimum loss): l*_1 = 0 and l*_2 = -sum_j lambda_j (f_j* + r_j) (every f_j >= 0), which makes
D_2 = sum_j lambda_j f_j + eps. After the step, FAMO's logits take their Adam step on the two parts'
log-decrease on the same batch (with the lambda of the step), then the multipliers take their usual
step (nmt.multiplier, nmt.constraint_data: this class changes only the parameter step).

No 1 / (1 + sum lambda) re-scaling: FAMO's c already makes the step a convex combination of the two
parts' normalised gradients, so a large lambda cannot blow it up (re-scaling would only shrink it). While
every lambda is 0 the constraint term is absent: the step is f_k's (FAMO's one-task limit) and the
logits do not move.
"""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.famo import FAMO
from nmtrec.components.train.objectives.nmt import NMTStage


class FAMONMTStage(NMTStage):
    needs_post_step_losses = True

    def __init__(self, task: int, frozen: dict[int, float], **nmt_kwargs):
        super().__init__(task, frozen, **nmt_kwargs)
        self.famo = FAMO(2)  # the parts above minus their lower bounds: min_losses 0

    def parts(self, task_losses: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """(l_1 - l*_1, l_2 - l*_2) = (f_k, sum_j lambda_j f_j)."""
        return torch.stack([task_losses[self.task], (lam.to(task_losses) * task_losses[self.constrained]).sum()])

    def loss(self, task_losses):
        if not bool((self.lam > 0).any()):
            return task_losses[self.task]
        return self.famo.loss(self.parts(task_losses, self.lam))

    def after_step(self, task_losses, post_losses=None, held_out=None):
        if post_losses is None:
            raise ValueError("FAMO+NMT needs the losses of the same batch after the parameter step")
        lam = self.lam.clone()  # the multipliers of the step just taken
        if bool((lam > 0).any()):
            self.famo.after_step(self.parts(task_losses.double().cpu(), lam),
                                 self.parts(post_losses.double().cpu(), lam))
        super().after_step(task_losses, held_out=held_out)

    def state(self):
        # FAMO's weights of (task loss, constraint term)
        return {**super().state(), "weights": self.famo.state()["weights"]}
