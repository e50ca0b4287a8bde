"""Static loss weights (joint training): L = sum_i w_i f_i. Equal weights and every weight-grid point."""
from __future__ import annotations

import torch

from nmtrec.components.train.objectives.base import Objective


class StaticWeights(Objective):
    def __init__(self, weights: list[float]):
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def loss(self, task_losses):
        return (self.weights.to(task_losses) * task_losses).sum()

    def valid_score(self, valid_losses):
        return float((self.weights * valid_losses.double().cpu()).sum())

    def state(self):
        return {"weights": [float(w) for w in self.weights]}
