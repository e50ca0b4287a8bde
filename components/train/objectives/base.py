"""An objective turns the vector of per-task batch losses into one scalar, and may update its own
state (Lagrange multipliers, weights) after each optimiser step. One small file per method."""
from __future__ import annotations

import copy

import torch


class Objective:
    def loss(self, task_losses: torch.Tensor) -> torch.Tensor:
        """task_losses: [num_tasks] mean losses of this batch (tasks in priority order)."""
        raise NotImplementedError

    def after_step(self, task_losses: torch.Tensor) -> None:
        """Called with the detached batch losses after the parameter step."""

    def state(self) -> dict:
        """Scalars worth logging (e.g. multipliers)."""
        return {}

    def resume_state(self):
        """Everything a restarted stage needs to continue exactly (multipliers, EMAs, weights, their
        optimizers); picklable. The default copies the object's attributes; override if that is wrong."""
        return copy.deepcopy(vars(self))

    def load_state(self, state) -> None:
        vars(self).update(copy.deepcopy(state))
