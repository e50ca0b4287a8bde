"""MMoE (Ma et al., KDD 2018): shared experts, one softmax gate and one tower per head."""
from __future__ import annotations

from torch import nn

from nmtrec.models.base import ExpertBank, Gate, MultiTaskModel, mix


class MMoE(MultiTaskModel):
    def __init__(self, sparse, features, num_tasks, *, num_experts=4, expert_dims=(64,), gate_dims=(), **kw):
        super().__init__(sparse, features, num_tasks, **kw)
        self.experts = ExpertBank(num_experts, self.input_dim, list(expert_dims))
        self.gates = nn.ModuleList(Gate(self.input_dim, list(gate_dims), num_experts) for _ in range(self.num_heads))
        self.build_towers(self.experts.out_dim)

    def per_head_modules(self):
        return {**super().per_head_modules(), "gates": self.gates}

    def represent(self, x):
        experts = self.experts(x)  # [E, B, D]
        return [mix(gate(x), experts) for gate in self.gates]
