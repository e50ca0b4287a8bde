"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per task."""
from __future__ import annotations

import torch
from torch import nn

from models.base import MultiTaskModel, mlp


class MMoE(MultiTaskModel):
    def __init__(self, sparse, features, num_tasks, num_experts=4, expert_dims=(64,), tower_dims=(32,)):
        super().__init__(sparse, features, num_tasks)
        self.experts = nn.ModuleList(mlp(self.input_dim, list(expert_dims)) for _ in range(num_experts))
        self.gates = nn.ModuleList(nn.Linear(self.input_dim, num_experts) for _ in range(num_tasks))
        self.towers = nn.ModuleList(
            nn.Sequential(mlp(expert_dims[-1], list(tower_dims)), nn.Linear(tower_dims[-1] if tower_dims else expert_dims[-1], 1))
            for _ in range(num_tasks))

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([e(x) for e in self.experts], dim=1)  # [B, E, D]
        logits = []
        for gate, tower in zip(self.gates, self.towers):
            w = torch.softmax(gate(x), dim=-1).unsqueeze(-1)  # [B, E, 1]
            logits.append(tower((w * experts).sum(1)))
        return torch.cat(logits, dim=1)
