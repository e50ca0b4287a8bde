"""OMoE (one-gate mixture of experts, Ma et al. 2018's baseline): experts mixed by a single gate
shared by every task; the mixture feeds each task's tower."""
from __future__ import annotations

from nmtrec.models.base import ExpertBank, Gate, MultiTaskModel, mix


class OMoE(MultiTaskModel):
    def __init__(self, sparse, features, num_tasks, *, num_experts=4, expert_dims=(64,), gate_dims=(), **kw):
        super().__init__(sparse, features, num_tasks, **kw)
        self.experts = ExpertBank(num_experts, self.input_dim, list(expert_dims))
        self.gate = Gate(self.input_dim, list(gate_dims), num_experts)
        self.build_towers(self.experts.out_dim)

    def represent(self, x):
        h = mix(self.gate(x), self.experts(x))
        return [h] * self.num_heads
