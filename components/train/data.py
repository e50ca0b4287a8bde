"""Parquet split -> a stream of batches of (KeyedJaggedTensor, labels) for one rank.

Nothing holds the whole split: a process reads a window of row groups at a time (components/train/
split.py) and builds its batches in a background thread (prefetch.py), so its memory does not grow
with the split.

Training order, a pure function of (shuffle seed, window size `train.shuffle_rows`, the split's
row-group layout), the same for any number of processes:
- a split no larger than the window is one window: its rows in a seeded permutation (the full
  shuffle of a split held in memory);
- a larger split: its row groups in a seeded permutation, cut into windows of at least the window's
  rows (whole row groups), each window's rows in a permutation seeded by (seed, window).
The epoch is that stream of rows; global batch i is its rows [i*B, (i+1)*B) and rank r takes the r-th
slice of it: 1 and N processes train on the same batches, every rank yields the same number of
batches (uneven counts hang collectives), and a stage resumed at batch `start` reads on from the
window that holds it. The tail that does not fill a global batch is dropped.

Evaluation reads the natural order (split.py): rank r takes the r-th of `world` contiguous row ranges,
padded to the same batch count with its last row, masked out (`eval_batches`, for the sharded model's
collectives), or the r-th contiguous run of one process's batches (`shard_batches`, for the plain
model: the same batches as one process).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torchrec import KeyedJaggedTensor

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.train.prefetch import Prefetch
from nmtrec.components.train.split import Columns, ParquetSplit, bag_positions, concat

__all__ = ["Columns", "ParquetSplit", "load_split", "make_batch", "batches", "eval_batches", "shard_batches",
           "num_batches", "local_batch_size", "SHUFFLE_ROWS"]

# rows per shuffle window (train.shuffle_rows's default): what one process holds of a split while
# training (a few tens of MB), and how far apart two rows of one batch can lie in the written order
SHUFFLE_ROWS = 1 << 18
PREFETCH_BATCHES = 4


def load_split(dataset_dir: str | Path, feature_spec: FeatureSpec, split: str, labels: list[str]) -> ParquetSplit:
    """Open a split for streaming (reads the Parquet metadata only). `labels`: the label column of each
    task, in task order."""
    return ParquetSplit(dataset_dir, feature_spec, split, labels)


def make_batch(cols: Columns, idx: np.ndarray) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    n = len(idx)
    values = [cols.single[idx].T.reshape(-1)]
    lengths = [np.ones(n * cols.single.shape[1], dtype=np.int64)]
    for offsets, vals in cols.bags:
        values.append(vals[bag_positions(offsets, idx)])
        lengths.append(offsets[idx + 1] - offsets[idx])
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=cols.keys, values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)))
    return kjt, torch.from_numpy(cols.labels[idx])


def local_batch_size(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ValueError(f"train.batch_size {batch_size} is the global batch and must be a multiple of the "
                         f"number of processes ({world_size})")
    return batch_size // world_size


def num_batches(split: ParquetSplit, batch_size: int, world_size: int = 1) -> int:
    """Full global batches per epoch (the same for any world size)."""
    return split.rows // batch_size


def shuffle_windows(split: ParquetSplit, seed: int | None, window_rows: int = SHUFFLE_ROWS) -> list[tuple[list[int], object]]:
    """The epoch's windows in stream order: (row groups, the seed of the permutation of the window's
    rows, None for natural order). Permutations are drawn when their window is read."""
    n = len(split.groups)
    if seed is None:
        return [(groups, None) for groups in _cut(list(range(n)), split, window_rows)]
    if split.rows <= window_rows:  # one window, the rows permuted as a whole
        return [(list(range(n)), seed)]
    order = [int(k) for k in np.random.default_rng(seed).permutation(n)]
    return [(groups, [seed, w]) for w, groups in enumerate(_cut(order, split, window_rows))]


def _cut(order: list[int], split: ParquetSplit, window_rows: int) -> list[list[int]]:
    windows, current, rows = [], [], 0
    for k in order:
        current.append(k)
        rows += split.groups[k].rows
        if rows >= window_rows:
            windows.append(current)
            current, rows = [], 0
    if current:
        windows.append(current)
    return windows


def batches(split: ParquetSplit, batch_size: int, rank: int = 0, world_size: int = 1, shuffle_seed: int | None = None,
            start: int = 0, window_rows: int = SHUFFLE_ROWS) -> Iterator[tuple[KeyedJaggedTensor, torch.Tensor]]:
    """This rank's part of each global batch of the epoch (module docstring), from batch `start` on;
    prefetched in a background thread (close() it to leave early)."""
    local = local_batch_size(batch_size, world_size)
    return Prefetch(_train_batches(split, batch_size, rank, local, shuffle_seed, start, window_rows), PREFETCH_BATCHES)


def _train_batches(split, batch_size, rank, local, seed, start, window_rows):
    skip = start * batch_size  # rows of the epoch's stream already trained on
    for cols, at, _ in runs(_windows(split, seed, skip, window_rows), batch_size,
                            (num_batches(split, batch_size) - start) * batch_size):
        yield make_batch(cols, np.arange(at + rank * local, at + (rank + 1) * local))
        del cols  # not held while the next window is read


def _windows(split, seed, skip, window_rows):
    """The epoch's stream of rows from row `skip` on, one window at a time."""
    reader = split.reader()
    for groups, key in shuffle_windows(split, seed, window_rows):
        rows = sum(split.groups[k].rows for k in groups)
        if skip >= rows:  # a resumed epoch: whole windows before its first batch are never read
            skip -= rows
            continue
        cols = reader.read(groups)
        if key is not None:
            cols = cols.take(np.random.default_rng(key).permutation(rows)[skip:])  # the unshuffled copy goes
        elif skip:
            cols = cols.slice(skip, cols.rows)
        skip = 0
        yield cols
        del cols  # before the next window is read: a process holds one window (and the batch spanning two)


def runs(pieces, size: int, total: int):
    """Consecutive runs of `size` rows over a stream of Columns, `total` rows in all (the last run may be
    shorter): (cols, at, n), the run being rows [at, at + n) of cols. A run that spans two pieces is
    copied into a Columns of its own; every other run is a view by position."""
    done, pending = 0, None
    if total <= 0:
        return
    for cols in pieces:
        at = 0
        if pending is not None:
            need = min(size, total - done) - pending.rows
            if cols.rows < need:
                pending = concat([pending, cols])
                continue
            joined = concat([pending, cols.slice(0, need)])
            pending, at = None, need
            yield joined, 0, joined.rows
            done += joined.rows
        while done < total and cols.rows - at >= min(size, total - done):
            n = min(size, total - done)
            yield cols, at, n
            done, at = done + n, at + n
        if done >= total:
            return
        if at < cols.rows:
            pending = cols.slice(at, cols.rows)
        del cols  # the next piece is read while nothing holds this one


def eval_ranges(rows: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of the ranks (np.array_split's: the first rows % world ranks get one more)."""
    base, extra = divmod(rows, world_size)
    bounds = [0]
    for r in range(world_size):
        bounds.append(bounds[-1] + base + (1 if r < extra else 0))
    return list(zip(bounds[:-1], bounds[1:]))


def eval_batches(split: ParquetSplit, batch_size: int, rank: int = 0, world_size: int = 1):
    """Every row exactly once across ranks, in natural order within each rank's contiguous range, with
    the same batch count on every rank (for models whose forward is a collective): ranks whose share is
    shorter repeat their last row, masked out by the returned weights. Yields (kjt, labels, mask);
    prefetched like `batches`."""
    ranges = eval_ranges(split.rows, world_size)
    start, end = ranges[rank]
    return Prefetch(_range_batches(split, batch_size, start, end, max(b - a for a, b in ranges)), PREFETCH_BATCHES)


def shard_batches(split: ParquetSplit, batch_size: int, rank: int = 0, world_size: int = 1):
    """The batches of one process reading the whole split in natural order, rank r taking the r-th
    contiguous run of them: any number of ranks score exactly the batches one process scores (counts
    may differ by one: for models without collectives, e.g. the unsharded model.pt). Yields (kjt,
    labels, mask of ones)."""
    first, last = eval_ranges(-(-split.rows // batch_size), world_size)[rank]
    start, end = first * batch_size, min(last * batch_size, split.rows)
    return Prefetch(_range_batches(split, batch_size, start, end, end - start), PREFETCH_BATCHES)


def _range_batches(split, batch_size, start, end, longest):
    produced = 0
    for cols, at, n in runs(_padded(split, start, end, longest), batch_size, longest):
        kjt, labels = make_batch(cols, np.arange(at, at + n))
        mask = (np.arange(produced, produced + n) < end - start).astype(np.float32)
        produced += n
        yield kjt, labels, torch.from_numpy(mask)


def _padded(split, start: int, end: int, longest: int):
    """Rows [start, end) of the natural order, then copies of the last (row 0 for an empty range) up
    to `longest` rows."""
    reader, last = split.reader(), None
    for piece in reader.read_rows(start, end):
        last = piece
        yield piece
    if longest > end - start:
        if last is None:
            last = next(reader.read_rows(0, 1))
        yield last.take(np.full(longest - (end - start), last.rows - 1))
