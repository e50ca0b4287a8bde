"""Checkpoints: a torch.distributed.checkpoint (DCP) of the sharded model and, optionally, of the fused
embedding + dense optimizer state (reshardable: saved with N processes, loads with M), the sharding
plan, a plain unsharded state dict for evaluation and serving, `stage.json` (the typed
components/common/manifest.StageManifest: task order, frozen optima, config hash, step, ...), any
small side files (the per-stage histories) and `extra.pt` (small picklable state such as objective
multipliers).

Writes are atomic: everything goes under `<dir>.partial`, files are fsynced, a sha256 manifest is
written last, and rank 0 renames the directory into place. Loading checks the manifest first, so a
truncated or corrupted checkpoint fails with the file named instead of loading garbage.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import ShardedTensor

from nmtrec.components.common.files import fsync_path, partial_dir, partial_path, publish_dir, write_text_atomic
from nmtrec.components.common.manifest import FILE as META, StageManifest

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


def _write_manifest(root: Path, known: dict[str, dict] | None = None) -> None:
    """`known`: manifest entries of files moved here unchanged (their sha256 is not read again; a file
    whose size differs from its entry is hashed anew)."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fsync_path(p)
            name, size = str(p.relative_to(root)), p.stat().st_size
            entry = (known or {}).get(name)
            files[name] = entry if entry and entry["bytes"] == size else {"bytes": size, "sha256": _sha256(p)}
    write_text_atomic(root / MANIFEST, json.dumps({"files": files}, indent=1), fsync=True)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_path(d)


def verify(ckpt_dir: str | Path) -> None:
    """Every file of the manifest present with its size and sha256, else CheckpointError naming it."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    path = root / MANIFEST
    if not path.is_file():
        if (root / META).is_file() or (root / DCP_DIR).is_dir():
            raise CheckpointError(f"{root}: incomplete checkpoint ({MANIFEST} missing: the write never finished)")
        held = sorted(p.name for p in root.iterdir())[:5]
        raise CheckpointError(f"{root}: not a checkpoint (no {MANIFEST}, {META} or {DCP_DIR}/; it holds "
                              f"{', '.join(held) if held else 'nothing'}): expected a stage's checkpoint "
                              f"artifact, e.g. <run output>/kfp/<run>/train-stage/checkpoint")
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


def save(out_dir: str | Path, model: torch.nn.Module, meta: StageManifest, *, dense_opt=None,
         plan: dict | None = None, extra=None, unsharded: bool = True,
         files: dict[str, str | bytes] | None = None) -> Path:
    """Collective: every rank calls it. With dense_opt, the fused and dense optimizer states are saved
    too (what resuming needs); `extra` is any small picklable object (rank 0's is kept); `files` are
    side files {relative path: text or bytes} written into the checkpoint (covered by its manifest)."""
    out = Path(out_dir)
    tmp = partial_path(out)
    if _rank() == 0:
        partial_dir(out)
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
        for rel, content in (files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp / rel).write_bytes(content)
            else:
                (tmp / rel).write_text(content)
        (tmp / META).write_text(meta.to_json())
        _write_manifest(tmp)  # fsyncs every file and directory
        publish_dir(tmp, out)  # the previous complete checkpoint stays until the new one is in place
        fsync_path(out.parent)
    _barrier()
    return out


def republish(src_dir: str | Path, out_dir: str | Path, meta: StageManifest) -> Path:
    """Collective: moves a finished checkpoint's files (`src_dir` is consumed) under `out_dir` with `meta`
    as its manifest, published as `save` does, so no half-moved checkpoint looks complete. The moved
    files keep the checksums of `src_dir`'s manifest: a file damaged on the way fails `verify`."""
    out, src = Path(out_dir), Path(src_dir)
    tmp = partial_path(out)
    if _rank() == 0:
        partial_dir(out)
        known = json.loads((src / MANIFEST).read_text())["files"]
        for f in sorted(src.rglob("*")):
            if f.is_file() and f.name not in (META, MANIFEST):
                (tmp / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(f, tmp / f.relative_to(src))
        (tmp / META).write_text(meta.to_json())
        _write_manifest(tmp, known={k: v for k, v in known.items() if k != META})
        publish_dir(tmp, out)
        fsync_path(out.parent)
    _barrier()
    return out


def optimizer_state(model, dense_opt) -> dict:
    state = {"dense": dense_opt.state_dict()}
    fused = getattr(model, "fused_optimizer", None)
    if fused is not None:
        state["fused"] = fused.state_dict()
    return state


def read_meta(ckpt_dir: str | Path, check: bool = True) -> StageManifest:
    """The checkpoint's stage.json (after verifying the checkpoint's manifest unless check=False)."""
    if check:
        verify(ckpt_dir)
    path = Path(ckpt_dir) / META
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: not a stage checkpoint ({META} missing)")
    try:
        return StageManifest.from_json(path.read_text())
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{path}: corrupted ({e})") from None


def read_extra(ckpt_dir: str | Path):
    path = Path(ckpt_dir) / EXTRA
    return torch.load(path, weights_only=False) if path.is_file() else None  # our own verified file


def load_into(ckpt_dir: str | Path, model: torch.nn.Module, *, dense_opt=None, allow_new_heads: bool = False,
              check: bool = True) -> None:
    """Load the DCP checkpoint into a (possibly differently) sharded model, and with dense_opt the
    optimizer states too (resuming).

    With allow_new_heads (a stage adding the next task), the parameters of tasks the checkpoint lacks
    (as the model names them: `task_state_keys`, e.g. towers and gates) keep their fresh
    initialisation, and tensors whose leading rows grew by those tasks' rows (`task_rows`, e.g. PLE's
    expert banks) get the saved rows first; any other difference is an error."""
    if check:
        verify(ckpt_dir)
    path = Path(ckpt_dir) / DCP_DIR
    try:
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    except Exception as e:  # missing or corrupt metadata
        raise CheckpointError(f"{ckpt_dir}: cannot read checkpoint: {e}") from None
    current = model.state_dict()
    new_keys, new_rows = _new_task_state(model, saved) if allow_new_heads else (set(), {})
    to_load, grown, problems = {}, {}, []
    for k, v in current.items():
        md = saved.get(f"model.{k}")
        if md is None:
            if plain_key(k) not in new_keys:
                problems.append(f"{k} missing from the checkpoint")
            continue
        have, want = tuple(md.size), tuple(v.size())
        if have == want:
            to_load[k] = v
        elif have[1:] == want[1:] and have[0] + new_rows.get(plain_key(k), 0) == want[0] > have[0]:
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


_WRAPPER_PREFIXES = ("_dmp_wrapped_module.", "module.")


def plain_key(key: str) -> str:
    """A state-dict key without the prefixes a DMP/DDP wrapper may add (DMP's own state_dict drops them)."""
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _new_task_state(model: torch.nn.Module, saved) -> tuple[set[str], dict[str, int]]:
    """Ask the model (models/base.MultiTaskModel, unwrapped from DMP/DDP) which tasks the checkpoint
    lacks (none of their own tensors saved) and return (their tensors' keys, {key of a tensor that grows
    along dim 0: the rows they add})."""
    from torchrec.distributed.model_parallel import get_unwrapped_module

    inner = get_unwrapped_module(model)
    if not hasattr(inner, "task_state_keys"):
        return set(), {}
    have = {plain_key(k[len("model."):]) for k in saved if k.startswith("model.")}
    keys, rows = set(), {}
    for t in range(inner.num_tasks):
        own = inner.task_state_keys(t)
        if not own or own & have:
            continue  # shares its head with the others (no own state), or the checkpoint has it
        keys |= own
        for k, sl in inner.task_rows(t).items():
            rows[k] = rows.get(k, 0) + (sl.stop - sl.start)
    return keys, rows


def load_unsharded(ckpt_dir: str | Path, model: torch.nn.Module, check: bool = True) -> None:
    if check:
        verify(ckpt_dir)
    state = torch.load(Path(ckpt_dir) / UNSHARDED, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
