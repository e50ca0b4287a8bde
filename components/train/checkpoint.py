"""Stage checkpoints: a torch.distributed.checkpoint of the sharded model (reshardable), a plain
unsharded state dict for evaluation and serving, and `stage.json` (task order, frozen optima, ...).

Everything is written under `<dir>.partial` and renamed into place by rank 0 when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import ShardedTensor

META = "stage.json"
DCP_DIR = "dcp"
UNSHARDED = "model.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says what differs."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def unsharded_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Gather every sharded tensor to rank 0; returns the full state dict there, None elsewhere."""
    out = {}
    for key, value in model.state_dict().items():
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype) if _rank() == 0 else None
            value.gather(dst=0, out=full)
            value = full
        elif _rank() == 0:
            value = value.detach().cpu().clone()
        if _rank() == 0:
            out[key] = value
    return out if _rank() == 0 else None


def save(out_dir: str | Path, model: torch.nn.Module, meta: dict) -> Path:
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp / DCP_DIR))
    full = unsharded_state_dict(model)
    if _rank() == 0:
        torch.save(full, tmp / UNSHARDED)
        (tmp / META).write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    if dist.is_initialized():
        dist.barrier()
    return out


def read_meta(ckpt_dir: str | Path) -> dict:
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: not a stage checkpoint ({META} missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupted ({e})") from None


def load_into(ckpt_dir: str | Path, model: torch.nn.Module, allow_new_heads: bool = False) -> None:
    """Load the DCP checkpoint into a (possibly differently) sharded model.

    With allow_new_heads, parameters of task heads the checkpoint lacks (a stage adding the next
    task) keep their fresh initialisation; any other missing parameter is an error."""
    path = Path(ckpt_dir) / DCP_DIR
    try:
        saved = set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    except Exception as e:  # missing or corrupt metadata
        raise CheckpointError(f"{ckpt_dir}: cannot read checkpoint: {e}") from None
    current = model.state_dict()
    missing = [k for k in current if f"model.{k}" not in saved]
    unexpected = [k for k in missing if not (allow_new_heads and _is_head(k))]
    if unexpected:
        raise CheckpointError(f"{ckpt_dir}: checkpoint lacks parameters {unexpected[:5]} of this model "
                              f"(another model config?)")
    state = {"model": {k: v for k, v in current.items() if k not in missing}}
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # DCP raises several types for truncated/corrupt files
        raise CheckpointError(f"{ckpt_dir}: cannot load checkpoint: {e}") from None
    model.load_state_dict({**current, **state["model"]})


def _is_head(key: str) -> bool:
    """Per-task parameters (gates and towers) that a new lower-priority task adds."""
    return any(part in ("gates", "towers") for part in key.split("."))


def load_unsharded(ckpt_dir: str | Path, model: torch.nn.Module) -> None:
    state = torch.load(Path(ckpt_dir) / UNSHARDED, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
