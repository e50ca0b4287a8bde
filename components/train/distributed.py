"""Process group, sharding plan and DistributedModelParallel: the distribution side of training.

The same code runs on GPUs (nccl, one process per GPU under torchrun) and on the CPU (gloo); a
single process without torchrun gets a world of size 1.

Initial weights do not depend on the plan or the world size: every table is drawn whole from a
generator seeded by (seed, table name) and each rank copies its shard out of it, and the dense part
is built under the same seed on every rank. So 1 process and 2 processes start from the same model.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import zlib

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.sharding_plan import get_default_sharders
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

log = logging.getLogger("nmtrec.train")

EMBEDDING_OPTIMIZERS = {"rowwise_adagrad": RowWiseAdagrad, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD,
                        "adam": torch.optim.Adam}
CUDA_ONLY = {"adam"}


def close_process_group() -> None:
    """Leave the world: every rank first waits for the others at a barrier, so none tears gloo down while a
    peer's last collective is still in flight (a rank then dies of a native abort on its way out). Sharded
    models left in reference cycles are collected first, while the group they were built on still exists:
    the abort ("terminate called without an active exception") came after the group was destroyed."""
    if not dist.is_initialized():
        return
    gc.collect()
    if dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


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


def current_device() -> torch.device:
    """This rank's device, as init_process_group chose it: batches are moved there."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def set_threads(threads: int) -> int:
    """Intra-op threads of this process: `threads`, or the cores shared evenly among local ranks."""
    if threads <= 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        threads = max(1, (os.cpu_count() or 1) // local)
    torch.set_num_threads(threads)
    return threads


def shard(model: torch.nn.Module, device: torch.device, train_cfg, seed: int = 0):
    """Fused embedding optimizer, planner-chosen sharding within `train_cfg.sharding`, fused Adam on
    the dense part. Returns (DMP model, dense optimizer, plan)."""
    if train_cfg.embedding_optimizer in CUDA_ONLY and device.type != "cuda":
        raise ValueError(f"train.embedding_optimizer {train_cfg.embedding_optimizer!r} needs CUDA; on the CPU "
                         f"use one of {sorted(set(EMBEDDING_OPTIMIZERS) - CUDA_ONLY)}")
    opt_cls = EMBEDDING_OPTIMIZERS[train_cfg.embedding_optimizer]
    apply_optimizer_in_backward(opt_cls, model.sparse.parameters(), {"lr": train_cfg.embedding_lr})
    configs = model.sparse.embedding_bag_configs()
    world = dist.get_world_size()
    constraints = {c.name: ParameterConstraints(sharding_types=list(train_cfg.sharding),
                                           min_partition=train_cfg.min_column_shard)
                   for c in configs}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=world, compute_device=device.type), constraints=constraints)
    sharders = get_default_sharders()
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)
    init_embeddings(dmp, configs, seed)
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    fused = device.type == "cpu" or device.type == "cuda"
    dense = KeyedOptimizerWrapper(dense_params, lambda params: torch.optim.Adam(params, lr=train_cfg.lr, fused=fused))
    return dmp, dense, plan


def table_init(config, seed: int) -> torch.Tensor:
    """The whole table, deterministic in (seed, table name); TorchRec's default uniform bounds."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(config.name.encode()))
    bound = (1.0 / config.num_embeddings) ** 0.5
    return torch.empty(config.num_embeddings, config.embedding_dim).uniform_(-bound, bound, generator=gen)


@torch.no_grad()
def init_embeddings(dmp, configs, seed: int) -> None:
    """Copy each rank's part of the deterministically drawn tables into its shards."""
    by_name = {c.name: c for c in configs}
    for key, value in dmp.state_dict().items():
        if not key.endswith(".weight") or key.split(".")[-2] not in by_name:
            continue
        full = table_init(by_name[key.split(".")[-2]], seed)
        if isinstance(value, ShardedTensor):
            for s in value.local_shards():
                (r, c), (h, w) = s.metadata.shard_offsets, s.metadata.shard_sizes
                s.tensor.copy_(full[r:r + h, c:c + w])
        else:  # data_parallel: a replicated plain tensor
            value.copy_(full)


def plan_json(plan) -> dict:
    """The sharding plan as JSON: per table its sharding type, kernel, ranks and shard shapes."""
    out = {}
    for module, params in plan.plan.items():
        for name, p in params.items():
            shards = None
            if p.sharding_spec is not None:
                shards = [{"rank": s.placement.rank(), "offsets": list(s.shard_offsets), "sizes": list(s.shard_sizes)}
                          for s in p.sharding_spec.shards]
            out[f"{module}.{name}" if module else name] = {
                "sharding_type": p.sharding_type, "compute_kernel": p.compute_kernel,
                "ranks": list(p.ranks) if p.ranks is not None else None, "shards": shards}
    return out


def log_plan(plan, label: str) -> dict:
    as_json = plan_json(plan)
    if dist.get_rank() == 0:
        log.info("%s sharding plan (world %d):\n%s", label, dist.get_world_size(), plan)
        log.debug("%s", json.dumps(as_json))
    return as_json


def shared_tmp(local: str) -> str:
    """A temporary directory every rank agrees on (rank 0's), for checkpoints written during a stage."""
    if dist.get_world_size() == 1:
        return local
    box = [local]
    dist.broadcast_object_list(box, src=0)
    return box[0]
