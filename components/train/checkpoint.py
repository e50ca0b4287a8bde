"""Checkpoints: a torch.distributed.checkpoint (DCP) of the sharded model and, optionally, of the fused
embedding + dense optimizer state (reshardable: saved with N processes, loads with M), the sharding
plan, a plain unsharded state dict for evaluation and serving, `stage.json` (task order, frozen
optima, config hash, step, ...) and `extra.pt` (small picklable state such as objective multipliers).

Writes are atomic: everything goes under `<dir>.partial`, files are fsynced, a sha256 manifest is
written last, and rank 0 renames the directory into place. Loading checks the manifest first, so a
truncated or corrupted checkpoint fails with the file named instead of loading garbage.
"""
from __future__ import annotations

import hashlib
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
PLAN = "plan.json"
EXTRA = "extra.pt"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message says what differs."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_manifest(root: Path) -> None:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            _fsync(p)
            files[str(p.relative_to(root))] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1))
    _fsync(tmp)
    os.replace(tmp, root / MANIFEST)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync(d)


def verify(ckpt_dir: str | Path) -> None:
    """Every file of the manifest present with its size and sha256, else CheckpointError naming it."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    path = root / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{root}: incomplete checkpoint ({MANIFEST} missing: the write never finished)")
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{path}: corrupted manifest ({e})") from None
    for rel, want in files.items():
        f = root / rel
        if not f.is_file():
            raise CheckpointError(f"{root}: file {rel} listed in the manifest is missing")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(f"{f}: truncated or altered ({size} bytes, manifest says {want['bytes']})")
        if _sha256(f) != want["sha256"]:
            raise CheckpointError(f"{f}: corrupted (sha256 differs from the manifest)")


def save(out_dir: str | Path, model: torch.nn.Module, meta: dict, *, dense_opt=None, plan: dict | None = None,
         extra=None, unsharded: bool = True) -> Path:
    """Collective: every rank calls it. With dense_opt, the fused and dense optimizer states are saved
    too (what resuming needs); `extra` is any small picklable object (rank 0's is kept)."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    state = {"model": model.state_dict()}
    if dense_opt is not None:
        state["optim"] = optimizer_state(model, dense_opt)
    dcp.save(state, checkpoint_id=str(tmp / DCP_DIR))
    full = unsharded_state_dict(model) if unsharded else None
    if _rank() == 0:
        if unsharded:
            torch.save(full, tmp / UNSHARDED)
        if plan is not None:
            (tmp / PLAN).write_text(json.dumps(plan, indent=1))
        if extra is not None:
            torch.save(extra, tmp / EXTRA)
        (tmp / META).write_text(json.dumps(meta, indent=2))
        _write_manifest(tmp)
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():  # keep the previous complete checkpoint until the new one is in place
            os.replace(out, old)
        os.replace(tmp, out)
        _fsync(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return out


def optimizer_state(model, dense_opt) -> dict:
    state = {"dense": dense_opt.state_dict()}
    fused = getattr(model, "fused_optimizer", None)
    if fused is not None:
        state["fused"] = fused.state_dict()
    return state


def read_meta(ckpt_dir: str | Path, check: bool = True) -> dict:
    if check:
        verify(ckpt_dir)
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: not a stage checkpoint ({META} missing)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupted ({e})") from None


def read_extra(ckpt_dir: str | Path):
    path = Path(ckpt_dir) / EXTRA
    return torch.load(path, weights_only=False) if path.is_file() else None  # our own verified file


def load_into(ckpt_dir: str | Path, model: torch.nn.Module, *, dense_opt=None, allow_new_heads: bool = False,
              check: bool = True) -> None:
    """Load the DCP checkpoint into a (possibly differently) sharded model, and with dense_opt the
    optimizer states too (resuming).

    With allow_new_heads (a stage adding the next task), per-task parameters the checkpoint lacks
    keep their fresh initialisation, and per-level expert banks that grew by the new task's experts
    (PLE) get the saved experts as their leading rows; any other difference is an error."""
    if check:
        verify(ckpt_dir)
    path = Path(ckpt_dir) / DCP_DIR
    try:
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    except Exception as e:  # missing or corrupt metadata
        raise CheckpointError(f"{ckpt_dir}: cannot read checkpoint: {e}") from None
    current = model.state_dict()
    to_load, grown, problems = {}, {}, []
    for k, v in current.items():
        md = saved.get(f"model.{k}")
        if md is None:
            if not (allow_new_heads and _is_head(k)):
                problems.append(f"{k} missing from the checkpoint")
            continue
        have, want = tuple(md.size), tuple(v.size())
        if have == want:
            to_load[k] = v
        elif allow_new_heads and _grows_with_heads(k) and have[1:] == want[1:] and have[0] < want[0]:
            grown[k] = to_load[k] = torch.empty(have, dtype=v.dtype)
        else:
            problems.append(f"{k} has shape {list(have)} in the checkpoint, {list(want)} here")
    extra_keys = [k[len("model."):] for k in saved if k.startswith("model.") and k[len("model."):] not in current]
    if extra_keys:
        problems.append(f"checkpoint has parameters this model lacks: {extra_keys[:5]}")
    if problems:
        raise CheckpointError(f"{ckpt_dir}: checkpoint does not fit this model (another model config?): "
                              + "; ".join(problems[:6]))
    state = {"model": to_load}
    if dense_opt is not None:
        if not any(k.startswith("optim.") for k in saved):
            raise CheckpointError(f"{ckpt_dir}: checkpoint has no optimizer state to resume from")
        dense_opt.init_state()  # Adam's state is lazy; a zero-gradient step creates it in place
        state["optim"] = optimizer_state(model, dense_opt)
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # DCP raises several types for truncated/corrupt files
        raise CheckpointError(f"{ckpt_dir}: cannot load checkpoint: {e}") from None
    with torch.no_grad():
        for k, small in grown.items():
            current[k][:small.shape[0]].copy_(small)
    model.load_state_dict({**current, **{k: v for k, v in state["model"].items() if k not in grown}})
    if dense_opt is not None:
        dense_opt.load_state_dict(state["optim"]["dense"])
        if "fused" in state["optim"]:
            model.fused_optimizer.load_state_dict(state["optim"]["fused"])
    _barrier()  # nobody deletes or rewrites the checkpoint while another rank still reads it


def _is_head(key: str) -> bool:
    """Per-task parameters (gates and towers) that a new lower-priority task adds."""
    return any(part in ("gates", "towers") for part in key.split("."))


def _grows_with_heads(key: str) -> bool:
    """PLE level parameters whose first dimension counts experts: a new task appends its own."""
    parts = key.split(".")
    return "levels" in parts and ("experts" in parts or "shared_gate" in parts)


def load_unsharded(ckpt_dir: str | Path, model: torch.nn.Module, check: bool = True) -> None:
    if check:
        verify(ckpt_dir)
    state = torch.load(Path(ckpt_dir) / UNSHARDED, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
