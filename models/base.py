"""Common base of the multi-task architectures: sparse embeddings -> architecture -> heads.

An architecture plug-in implements `represent(x) -> list of per-head representations` on the
concatenated pooled embeddings `x`; embedding lookup, feature order and the heads live here.
Two head kinds:
- `towers`: one tower (MLP + linear) per task, the public-dataset setting;
- `shared_score`: one tower and one output score shared by every task (the paper's Taobao ranking
  setting, trained with a pairwise loss per task); the same logit column is returned for each task.
Modules are written unsharded; DistributedModelParallel shards `sparse` (components/train/distributed.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor

HEADS = ("towers", "shared_score")


def mlp(in_dim: int, dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d in dims:
        layers += [nn.Linear(in_dim, d), nn.ReLU()]
        in_dim = d
    return nn.Sequential(*layers)


class ExpertBank(nn.Module):
    """`num` MLP experts of the same shape computed together: stacked weights, one batched matmul per
    layer instead of a Python loop over experts (the experts dominate the FLOPs).

    Input [B, in] (every expert sees the same input) or [num, B, in]; output [num, B, dims[-1]]."""

    def __init__(self, num: int, in_dim: int, dims: list[int]):
        super().__init__()
        self.num = num
        self.out_dim = dims[-1] if dims else in_dim
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d in dims:
            bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per expert
            self.weights.append(nn.Parameter(torch.empty(num, in_dim, d).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num, 1, d).uniform_(-bound, bound)))
            in_dim = d

    def forward(self, x: torch.Tensor, same_input: bool | None = None) -> torch.Tensor:
        """`same_input`: whether x is the one input of every expert ([B, in]); None: read it from x's
        rank (a caller that TorchRec's train pipeline traces says it: a traced tensor has no rank)."""
        if x.dim() == 2 if same_input is None else same_input:  # a stride-0 view, no copy of x per expert
            x = x.unsqueeze(0).expand(self.num, -1, -1)
        for w, b in zip(self.weights, self.biases):
            # bias fused into the batched GEMM; relu in place (baddbmm's backward does not need its output)
            x = torch.relu_(torch.baddbmm(b, x, w))
        return x


class Gate(nn.Module):
    """Softmax over experts from the input (optional hidden layers: the paper's gate dims)."""

    def __init__(self, in_dim: int, hidden: list[int], num_experts: int):
        super().__init__()
        self.body = mlp(in_dim, hidden)
        self.out = nn.Linear(hidden[-1] if hidden else in_dim, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(self.body(x)), dim=-1)


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """weights [B, E], experts [E, B, D] -> [B, D]."""
    return torch.einsum("be,ebd->bd", weights, experts)


class MultiTaskModel(nn.Module):
    def __init__(self, sparse: EmbeddingBagCollection, features: list[str], num_tasks: int, *,
                 head: str = "towers", tower_dims: list[int] = (32,), embedding_l2: float = 0.0):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"model.head must be one of {HEADS}, got {head!r}")
        self.sparse = sparse
        self.features = list(features)
        self.num_tasks = num_tasks
        self.head = head
        self.num_heads = num_tasks if head == "towers" else 1
        per_feature = {f: c.embedding_dim for c in sparse.embedding_bag_configs() for f in c.feature_names}
        missing = [f for f in self.features if f not in per_feature]
        if missing:
            raise ValueError(f"features {missing} have no embedding table (tables cover {sorted(per_feature)})")
        self.input_dim = sum(per_feature[f] for f in self.features)
        self.tower_dims = list(tower_dims)
        self.embedding_l2 = embedding_l2
        self.frozen_shared = False  # True: embeddings are detached (a stage's warm-up trains heads only)

    def build_towers(self, rep_dim: int) -> None:
        """Called by the architecture once it knows its representation size."""
        last = self.tower_dims[-1] if self.tower_dims else rep_dim
        self.towers = nn.ModuleList(nn.Sequential(mlp(rep_dim, self.tower_dims), nn.Linear(last, 1))
                                    for _ in range(self.num_heads))

    def embed(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        pooled = self.sparse(kjt).to_dict()
        x = torch.cat([pooled[f] for f in self.features], dim=1)
        if self.frozen_shared:
            return x.detach()
        # (a Proxy: TorchRec's train pipeline traces this forward to find the sharded module's input)
        if self.embedding_l2 > 0 and not isinstance(x, torch.fx.Proxy) and x.requires_grad:
            # L2 on the looked-up embeddings, l2 * mean_batch ||x||^2, added as its gradient: the fused
            # embedding optimizer then decays exactly the rows this batch touched
            coef = 2.0 * self.embedding_l2 / x.shape[0]
            saved = x.detach()
            x.register_hook(lambda g: g + coef * saved)
        return x

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        """Logits [B, num_tasks] (tasks in priority order)."""
        return self.forward_dense(self.embed(kjt))

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        reps = self.represent(x)
        logits = torch.cat([tower(r) for tower, r in zip(self.towers, reps)], dim=1)
        return logits if self.head == "towers" else logits.expand(-1, self.num_tasks)

    def represent(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """One representation [B, D] per head."""
        raise NotImplementedError

    # -- which parameters are a task's own (a stage appends a task to a trained model) ---------------
    def per_head_modules(self) -> dict[str, nn.ModuleList]:
        """Module lists indexed by head, by state-dict prefix: entry h belongs to head h alone.
        Architectures with per-head parts besides the towers (gates) extend this."""
        return {"towers": self.towers}

    def per_head_rows(self, head: int) -> dict[str, slice]:
        """Tensors shared in storage whose rows (dim 0) `slice` belong to head `head`, in head order
        (a new head's rows come last). None here; PLE's expert banks and shared gates have them."""
        return {}

    def task_state_keys(self, task: int) -> set[str]:
        """State-dict keys of the tensors only task `task` uses (its tower, its gates): exactly the keys a
        model of tasks[:task] lacks. Empty with a shared head (`shared_score`: no task has its own)."""
        if self.head != "towers":
            return set()
        return {f"{prefix}.{task}.{k}" for prefix, heads in self.per_head_modules().items()
                for k in heads[task].state_dict()}

    def task_rows(self, task: int) -> dict[str, slice]:
        """{state-dict key: rows along dim 0 that belong to task `task`} of tensors shared in storage
        (PLE's task-specific experts in a level's bank and their scores in its shared gate); appending
        a task appends its rows. Empty with a shared head."""
        return self.per_head_rows(task) if self.head == "towers" else {}

    def grows_with_tasks(self) -> set[str]:
        """Keys of the tensors whose dim 0 grows when a task is appended."""
        return set(self.task_rows(self.num_tasks - 1)) if self.num_tasks else set()
