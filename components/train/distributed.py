"""Process group, sharding plan and DistributedModelParallel: the distribution side of training.

The same code runs on GPUs (nccl, one process per GPU under torchrun) and on the CPU (gloo); a
single process without torchrun gets a world of size 1.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad


def init_process_group() -> torch.device:
    """Join the torchrun world (or make a world of one); return this rank's device."""
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "RANK" in os.environ:  # started by torchrun (or a Kubeflow TrainJob)
            dist.init_process_group(backend)
        else:  # a world of one: an in-memory store, no port, nothing leaked into os.environ
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def shard(model: torch.nn.Module, device: torch.device, embedding_lr: float, dense_lr: float,
          sharding_types: list[str] | None = None):
    """Fused row-wise Adagrad on the embeddings, planner-chosen sharding, Adam on the dense part.

    Returns (DMP model, dense optimizer, plan)."""
    apply_optimizer_in_backward(RowWiseAdagrad, model.sparse.parameters(), {"lr": embedding_lr})
    world = dist.get_world_size()
    constraints = None
    if sharding_types:
        constraints = {c.name: ParameterConstraints(sharding_types=list(sharding_types))
                       for c in model.sparse.embedding_bag_configs()}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device=device.type), constraints=constraints)
    sharders = get_default_sharders()
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=dense_lr))
    return dmp, dense, plan
