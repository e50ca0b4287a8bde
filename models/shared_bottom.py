"""Shared-Bottom (Caruana 1997): one shared MLP, a tower per task on top of it."""
from __future__ import annotations

from nmtrec.models.base import MultiTaskModel, mlp


class SharedBottom(MultiTaskModel):
    def __init__(self, sparse, features, num_tasks, *, expert_dims=(64,), **kw):
        super().__init__(sparse, features, num_tasks, **kw)
        self.bottom = mlp(self.input_dim, list(expert_dims))
        self.build_towers(expert_dims[-1] if expert_dims else self.input_dim)

    def represent(self, x):
        h = self.bottom(x)
        return [h] * self.num_heads
