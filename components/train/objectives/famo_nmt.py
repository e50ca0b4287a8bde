"""FAMO inside an NMT constrained stage (the paper's appendix, FAMO+NMT).

The stage keeps NMT's constraints, multipliers and re-scaling; only the stage's own objective f_k is
replaced by FAMO's balanced combination of the losses of tasks 1..k, so the constrained tasks also
get a share of the descent direction while the multipliers still guard their frozen optima:
L = (FAMO(f_1..f_k) + sum_j lambda_j (f_j - f_j* - r_j)) / (1 + sum lambda).
"""
from __future__ import annotations

from nmtrec.components.train.objectives.famo import FAMO
from nmtrec.components.train.objectives.nmt import NMTStage


class FAMONMTStage(NMTStage):
    needs_post_step_losses = True

    def __init__(self, task: int, frozen: dict[int, float], **nmt_kwargs):
        super().__init__(task, frozen, **nmt_kwargs)
        self.famo = FAMO(task + 1)

    def task_part(self, task_losses):
        return self.famo.loss(task_losses[:self.task + 1])

    def after_step(self, task_losses, post_losses=None, held_out=None):
        super().after_step(task_losses, held_out=held_out)
        self.famo.after_step(task_losses[:self.task + 1], post_losses[:self.task + 1])

    def state(self):
        return {**super().state(), "weights": self.famo.state()["weights"]}
