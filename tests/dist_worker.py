"""Run under torchrun by tests: load a checkpoint into a model sharded over this world (any plan)
and write every validation row's prediction (rank 0) to an .npy file.

    python -m torch.distributed.run --standalone --nproc_per_node=N tests/dist_worker.py CONFIG_JSON DATASET CKPT OUT [CKPT OUT ...]
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.train import checkpoint
from nmtrec.components.train.data import eval_batches, load_split
from nmtrec.components.train.distributed import close_process_group, init_process_group, shard
from nmtrec.models.registry import build_model
from nmtrec.components.common.config import Config


@torch.no_grad()
def predictions(model, cols, batch_size: int) -> np.ndarray | None:
    """Every row's logits in row order, gathered on rank 0."""
    model.eval()
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = [model(kjt)[mask.bool()] for kjt, _, mask in eval_batches(cols, batch_size, rank, world)]
    parts = [None] * world
    dist.all_gather_object(parts, torch.cat(mine).numpy())
    return np.concatenate(parts) if rank == 0 else None


def sharded_predictions(cfg: Config, dataset: str, ckpt: str) -> np.ndarray | None:
    spec = FeatureSpec.read(dataset)
    device = init_process_group()
    torch.manual_seed(123)  # deliberately another init: everything must come from the checkpoint
    model = build_model(cfg.model, spec, len(cfg.tasks))
    dmp, _, _ = shard(model, device, cfg.train, seed=123)
    checkpoint.load_into(ckpt, dmp)
    return predictions(dmp, load_split(dataset, spec, "valid", cfg.tasks), 512)


if __name__ == "__main__":
    cfg_json, dataset, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    for ckpt, out in zip(rest[::2], rest[1::2]):
        pred = sharded_predictions(Config.from_json(Path(cfg_json).read_text()), dataset, ckpt)
        if dist.get_rank() == 0:
            np.save(out, pred)
    close_process_group()
