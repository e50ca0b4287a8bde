"""PLE (Tang et al., RecSys 2020): stacked extraction levels (CGC). Each level has task-specific
experts per head and shared experts; a head's gate mixes its own + the shared experts; a shared gate
over all experts feeds the next level's shared experts (not needed after the last level)."""
from __future__ import annotations

import torch
from torch import nn

from nmtrec.models.base import ExpertBank, Gate, MultiTaskModel, mix


class _Level(nn.Module):
    def __init__(self, heads: int, in_dim: int, specific: int, shared: int, expert_dims, gate_dims, last: bool):
        super().__init__()
        self.heads, self.specific, self.shared = heads, specific, shared
        # all experts of a level in one bank: shared first, then head h owns shared + [h*specific, (h+1)*specific),
        # so a stage that adds a task only appends experts (the checkpoint loads as a prefix)
        self.experts = ExpertBank(heads * specific + shared, in_dim, list(expert_dims))
        self.gates = nn.ModuleList(Gate(in_dim, list(gate_dims), specific + shared) for _ in range(heads))
        self.shared_gate = None if last else Gate(in_dim, list(gate_dims), heads * specific + shared)

    def forward(self, inputs: list[torch.Tensor], shared_in: torch.Tensor):
        # expert inputs: each head's experts see that head's input, shared experts the shared input
        if all(i is shared_in for i in inputs):
            experts = self.experts(shared_in, same_input=True)
        else:
            stacked = torch.stack([shared_in] * self.shared
                                  + [inputs[h] for h in range(self.heads) for _ in range(self.specific)])
            experts = self.experts(stacked, same_input=False)
        shared = experts[:self.shared]
        outs = []
        for h, gate in enumerate(self.gates):
            start = self.shared + h * self.specific
            outs.append(mix(gate(inputs[h]), torch.cat([shared, experts[start:start + self.specific]])))
        shared_out = mix(self.shared_gate(shared_in), experts) if self.shared_gate is not None else None
        return outs, shared_out


class PLE(MultiTaskModel):
    def __init__(self, sparse, features, num_tasks, *, levels=1, specific_experts=1, shared_experts=1,
                 expert_dims=(64,), gate_dims=(), **kw):
        super().__init__(sparse, features, num_tasks, **kw)
        dims = list(expert_dims)
        out_dim = dims[-1] if dims else self.input_dim
        self.levels = nn.ModuleList(
            _Level(self.num_heads, self.input_dim if i == 0 else out_dim, specific_experts, shared_experts,
                   dims, gate_dims, last=i == levels - 1)
            for i in range(levels))
        self.build_towers(out_dim)

    def per_head_modules(self):
        return {**super().per_head_modules(), **{f"levels.{i}.gates": level.gates for i, level in enumerate(self.levels)}}

    def per_head_rows(self, head):
        """Head h's task-specific experts in each level's bank, and their logits in the shared gate."""
        out = {}
        for i, level in enumerate(self.levels):
            rows = slice(level.shared + head * level.specific, level.shared + (head + 1) * level.specific)
            keys = [f"experts.{k}" for k in level.experts.state_dict()]
            if level.shared_gate is not None:
                keys += [f"shared_gate.out.{k}" for k in level.shared_gate.out.state_dict()]
            out.update({f"levels.{i}.{k}": rows for k in keys})
        return out

    def represent(self, x):
        inputs, shared = [x] * self.num_heads, x
        for level in self.levels:
            inputs, shared = level(inputs, shared)
        return inputs
