"""An objective turns the vector of per-task batch losses into one scalar, and may update its own
state (Lagrange multipliers, weights) after each optimiser step. One small file per method."""
from __future__ import annotations

import copy

import torch


class Objective:
    # True: the training loop measures the same batch's losses again after the parameter step and
    # passes them to after_step as `post_losses` (FAMO needs the loss decrease of the step)
    needs_post_step_losses = False
    # True: the loop also measures the losses of a held-out (validation) batch after each step and
    # passes them to after_step as `held_out` (NMT's multipliers follow held-out constraints)
    needs_held_out_losses = False
    # True: a few times an epoch (and right before valid_score) the loop measures the constrained tasks on
    # the whole validation split against their frozen models and passes {task: Paired} to after_check
    needs_paired_checks = False

    def loss(self, task_losses: torch.Tensor) -> torch.Tensor:
        """task_losses: [num_tasks] mean losses of this batch (tasks in priority order)."""
        raise NotImplementedError

    def after_step(self, task_losses: torch.Tensor, post_losses: torch.Tensor | None = None,
                   held_out: torch.Tensor | None = None) -> None:
        """Called with the detached batch losses after the parameter step."""

    def valid_score(self, valid_losses: torch.Tensor) -> float:
        """Validation score to minimise for early stopping (default: the mean task loss)."""
        return float(valid_losses.double().mean())

    def progress_score(self, valid_losses: torch.Tensor) -> float:
        """Besides the valid_score, what keeps training going (components/train/epochs.EarlyStopping): it
        stops after `train.patience` epochs that improve neither (default: the valid_score itself)."""
        return self.valid_score(valid_losses)

    def state(self) -> dict:
        """Scalars worth logging (e.g. multipliers)."""
        return {}

    def resume_state(self):
        """Everything a restarted stage needs to continue exactly (multipliers, EMAs, weights, their
        optimizers); picklable. The default copies the object's attributes; override if that is wrong."""
        return copy.deepcopy(vars(self))

    def load_state(self, state) -> None:
        vars(self).update(copy.deepcopy(state))
