"""Atomic writes: a reader sees a file or directory either complete or not at all.

One pattern, written once: write under a temporary name beside the target (`<name>.tmp` for a file,
`<name>.partial` for a directory), then rename it into place (`os.replace`, atomic on one file system).
With `fsync=True` the data (and, for a directory, every file and the parent entry) reaches the disk
before the rename is relied on: what checkpoints need to survive a crashed node.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["fsync_path", "atomic_file", "write_text_atomic", "write_json_atomic", "copy_file_atomic",
           "partial_path", "partial_dir", "publish_dir", "atomic_dir"]


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path, *, suffix: str = ".tmp", fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it is renamed to `path`,
    else removed. `suffix` names the temporary (a tool that wants a known extension: `.tmp.yaml`)."""
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    """Write `text` to `path` atomically (`<path>.tmp`, then rename)."""
    with atomic_file(path, fsync=fsync) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj, *, indent: int | None = 2, fsync: bool = False, **dumps) -> Path:
    """`json.dumps(obj, indent=indent, **dumps)` written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, **dumps), fsync=fsync)


def copy_file_atomic(src: str | Path, dest: str | Path, *, fsync: bool = False) -> Path:
    """Copy a file so that `dest` appears only complete."""
    with atomic_file(dest, fsync=fsync) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def partial_path(out: str | Path) -> Path:
    """`<out>.partial`: where a directory `out` is written before it is renamed into place."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def partial_dir(out: str | Path) -> Path:
    """A fresh, empty `<out>.partial` beside `out` (a leftover of a crashed write is removed)."""
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_dir(tmp: str | Path, out: str | Path, *, fsync: bool = False) -> Path:
    """Rename a completed `tmp` directory to `out`. An existing `out` stays in place (as `<out>.old`)
    until the new one is there, then is removed. With fsync, every file and directory under `tmp` is
    synced first, and the parent's entry after the rename."""
    tmp, out = Path(tmp), Path(out)
    if fsync:
        for p in sorted(tmp.rglob("*")):
            fsync_path(p)
        fsync_path(tmp)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if fsync:
        fsync_path(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out


@contextmanager
def atomic_dir(out: str | Path, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a fresh `<out>.partial` to fill; on success it replaces `out` (publish_dir), on any error
    it is removed and `out` is left as it was."""
    tmp = partial_dir(out)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, out, fsync=fsync)
