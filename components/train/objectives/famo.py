"""FAMO (Liu et al., NeurIPS 2023): fast adaptive multitask optimisation, O(1) space and time.

w = logits, z = softmax(w), D_i = l_i - l*_i + eps, c = stopgrad(sum_i z_i / D_i),
L = sum_i z_i log D_i / c  (its gradient is a convex combination of the task gradients).
After the parameter step the losses of the same batch are measured again (the training loop does
this for objectives with `needs_post_step_losses`), delta_i = log D_i - log D_i', and w takes an Adam
step on J^T delta with J the Jacobian of z wrt w (w_lr 0.025, weight decay gamma), as in the paper.
"""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.base import Objective


class FAMO(Objective):
    needs_post_step_losses = True

    def __init__(self, num_tasks: int, w_lr: float = 0.025, gamma: float = 1e-3, eps: float = 1e-8,
                 min_losses: list[float] | None = None):
        self.w = torch.zeros(num_tasks, dtype=torch.float64, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)
        self.eps = eps
        self.min_losses = torch.tensor(min_losses or [0.0] * num_tasks, dtype=torch.float64)

    def _d(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses - self.min_losses.to(losses)).clamp_min(0.0) + self.eps

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.w.detach(), 0)

    def loss(self, task_losses):
        z = self.weights().to(task_losses)
        d = self._d(task_losses)
        c = (z / d).sum().detach()
        return (z * torch.log(d)).sum() / c

    def after_step(self, task_losses, post_losses=None, held_out=None):
        if post_losses is None:
            raise ValueError("FAMO needs the losses of the same batch after the parameter step")
        delta = torch.log(self._d(task_losses.double().cpu())) - torch.log(self._d(post_losses.double().cpu()))
        self.opt.zero_grad()
        z = torch.softmax(self.w, 0)
        # J^T delta as the gradient: Adam descends it, moving weight away from tasks whose loss
        # fell most and towards the ones that improved least (balanced improvement rates)
        (g,) = torch.autograd.grad(z, self.w, grad_outputs=delta)
        self.w.grad = g
        self.opt.step()

    def valid_score(self, valid_losses):
        return float(valid_losses.double().mean())

    def state(self):
        return {"weights": [float(x) for x in self.weights()]}
