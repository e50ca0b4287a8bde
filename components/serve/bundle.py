"""An exported model directory: `model.pt2` (a torch.export program) and `export.json` (its manifest).

Loading needs torch alone: `torch.export.load("<dir>/model.pt2").module()(ids, present)` returns
{task: probability [B]}; `export.json` says which raw column each column of `ids` is."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nmtrec.components.serve.errors import ServeError

PROGRAM = "model.pt2"
MANIFEST = "export.json"
KIND = "nmtrec-servable"
VERSION = 1


def read_manifest(model_dir: str | Path) -> dict:
    root = Path(model_dir)
    path = root / MANIFEST
    if not root.is_dir():
        raise ServeError(f"{root}: exported model directory not found (write one with `nmtrec export`)")
    if not path.is_file():
        raise ServeError(f"{root}: not an exported model ({MANIFEST} missing; write one with `nmtrec export`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ServeError(f"{path}: corrupted ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ServeError(f"{path}: not an nmtrec export manifest (expected \"kind\": \"{KIND}\")")
    if manifest.get("version") != VERSION:
        raise ServeError(f"{path}: export format version {manifest.get('version')!r}, this nmtrec reads {VERSION}")
    return manifest


def load_program(model_dir: str | Path) -> torch.nn.Module:
    """The exported program as a callable module."""
    manifest = read_manifest(model_dir)
    path = Path(model_dir) / PROGRAM
    if not path.is_file():
        raise ServeError(f"{path}: missing (the export directory is incomplete)")
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:  # torch raises several types for a corrupt or foreign-version archive
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        made_with = manifest.get("versions", {}).get("torch")
        raise ServeError(f"{path}: cannot load the exported program (exported with torch {made_with}, this is "
                         f"torch {torch.__version__}): {first}") from None
