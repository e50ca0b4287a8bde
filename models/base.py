"""Common base of the multi-task architectures: sparse embeddings -> architecture -> one logit per task.

An architecture plug-in only implements `forward_dense(x) -> [B, num_tasks]` on the concatenated
pooled embeddings; embedding lookup and the feature order live here. Modules are written unsharded;
DistributedModelParallel shards `sparse` (see components/train/distributed.py).
"""
from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor


def mlp(in_dim: int, dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d in dims:
        layers += [nn.Linear(in_dim, d), nn.ReLU()]
        in_dim = d
    return nn.Sequential(*layers)


class MultiTaskModel(nn.Module):
    def __init__(self, sparse: EmbeddingBagCollection, features: list[str], num_tasks: int):
        super().__init__()
        self.sparse = sparse
        self.features = features
        self.num_tasks = num_tasks
        self.input_dim = sum(c.embedding_dim for c in sparse.embedding_bag_configs()
                             for _ in c.feature_names)

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.sparse(kjt)
        x = torch.cat([pooled[f] for f in self.features], dim=1)
        return self.forward_dense(x)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
