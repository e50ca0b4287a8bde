"""Warm-up of a constrained stage: its first epochs train only the new task's own parameters (its tower,
its gates; models/base.py `task_state_keys`) on the frozen shared layers and embeddings.

A fresh head pulls hard on the shared layers in its first steps (its loss is far from its optimum):
trained alone first, it pulls with a sensible gradient once the shared layers move. The higher tasks
are bit-for-bit unchanged during the warm-up, so the warm-up's last epoch is always a feasible
candidate for the stage's early stopping: a stage never ends worse on a higher task than "new head
on the old representation".
"""
from __future__ import annotations

import torch
from torchrec.distributed.model_parallel import get_unwrapped_module

from nmtrec.components.train.checkpoint import plain_key


class Warmup:
    def __init__(self, model, task: int, epochs: int):
        self.inner = get_unwrapped_module(model)
        own_keys = self.inner.task_state_keys(task) if hasattr(self.inner, "task_state_keys") else set()
        self.own = {name for name, _ in model.named_parameters() if plain_key(name) in own_keys}
        self.task, self.epochs = task, epochs if self.own else 0  # a shared head has nothing of its own

    def covers(self, epoch: int) -> bool:
        return epoch < self.epochs

    def loss(self, task_losses: torch.Tensor) -> torch.Tensor:
        # every head stays in the graph (zero weight) so data-parallel gradient reduction sees all of them
        return task_losses[self.task] + 0.0 * task_losses.sum()

    def freeze_shared(self, on: bool) -> None:
        self.inner.frozen_shared = on  # the model detaches its embeddings: no gradient reaches them

    def zero_shared_grads(self, model) -> None:
        """After backward: every dense parameter but the task's own gets a zero gradient. Adam's step on a
        zero gradient from a fresh state moves nothing, and every parameter has optimizer state, so a
        resume checkpoint taken during the warm-up loads like any other."""
        for name, p in model.named_parameters():
            if name in self.own or not p.requires_grad or hasattr(p, "_in_backward_optimizers"):
                continue  # the embeddings update (or not) inside backward, fused
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            else:
                p.grad.zero_()
