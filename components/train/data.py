"""Parquet split -> in-memory columns -> batches of (KeyedJaggedTensor, labels) for one rank.

Rows are split across ranks so that every rank yields exactly the same number of batches (uneven
counts hang collective ops); the tail that does not fill a batch on every rank is dropped in training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec import KeyedJaggedTensor

from nmtrec.components.common.feature_spec import FeatureSpec


@dataclass
class Columns:
    single: np.ndarray  # [N, S] int64 ids of the single-id features
    bags: list[tuple[np.ndarray, np.ndarray]]  # per bag feature: (offsets [N+1], values)
    labels: np.ndarray  # [N, T] float32, tasks in priority order
    keys: list[str]

    @property
    def rows(self) -> int:
        return len(self.labels)


def load_split(dataset_dir: str | Path, feature_spec: FeatureSpec, split: str, tasks: list[str]) -> Columns:
    root = Path(dataset_dir)
    files = [root / f for f in feature_spec.split_files(split)]
    missing_labels = [t for t in tasks if t not in feature_spec.labels]
    if missing_labels:
        raise ValueError(f"tasks {missing_labels} are not label columns of the dataset "
                         f"(feature_spec.json labels: {feature_spec.labels})")
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    if table is None or table.num_rows == 0:
        raise ValueError(f"{root}: split {split!r} has no rows")
    sparse = list(feature_spec.sparse)
    single = np.stack([table.column(c).to_numpy() for c in sparse], axis=1).astype(np.int64)
    bags = []
    for b in feature_spec.bags:
        arr = table.column(b).combine_chunks()
        bags.append((arr.offsets.to_numpy().astype(np.int64), arr.values.to_numpy().astype(np.int64)))
    labels = np.stack([table.column(t).to_numpy() for t in tasks], axis=1).astype(np.float32)
    return Columns(single, bags, labels, feature_spec.feature_names())


def make_batch(cols: Columns, idx: np.ndarray) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    n = len(idx)
    values = [cols.single[idx].T.reshape(-1)]
    lengths = [np.ones(n * cols.single.shape[1], dtype=np.int64)]
    for offsets, vals in cols.bags:
        starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
        total = int(lens.sum())
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(total)
        values.append(vals[pos])
        lengths.append(lens)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=cols.keys, values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)))
    return kjt, torch.from_numpy(cols.labels[idx])


def batches(cols: Columns, batch_size: int, rank: int = 0, world_size: int = 1, shuffle_seed: int | None = None,
            drop_last: bool = True, start: int = 0):
    """Yield this rank's part of each global batch of `batch_size` rows, from batch number `start` on
    (a resumed epoch). Global batch i is the same rows for any world size -- rank r takes the r-th
    slice of it -- so 1 and N processes train on the same batches. Same count on every rank;
    evaluation (drop_last=False) keeps the tail and is meant for one process."""
    order = np.arange(cols.rows)
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(cols.rows)
    local = local_batch_size(batch_size, world_size)
    end = num_batches(cols, batch_size) * batch_size if drop_last else cols.rows
    for first in range(start * batch_size, end, batch_size):
        idx = order[first:first + batch_size][rank * local:(rank + 1) * local]
        yield make_batch(cols, idx)


def local_batch_size(batch_size: int, world_size: int) -> int:
    if batch_size % world_size:
        raise ValueError(f"train.batch_size {batch_size} is the global batch and must be a multiple of the "
                         f"number of processes ({world_size})")
    return batch_size // world_size


def num_batches(cols: Columns, batch_size: int, world_size: int = 1) -> int:
    """Full global batches per epoch (the same for any world size)."""
    return cols.rows // batch_size


def eval_batches(cols: Columns, batch_size: int, rank: int = 0, world_size: int = 1):
    """Every row exactly once across ranks, with the same batch count on every rank: ranks whose
    share is shorter repeat their last row, masked out by the returned weights."""
    share = np.array_split(np.arange(cols.rows), world_size)
    longest = max(len(s) for s in share)
    mine = share[rank]
    mask = np.zeros(longest, dtype=np.float32)
    mask[:len(mine)] = 1.0
    mine = np.concatenate([mine, np.full(longest - len(mine), mine[-1] if len(mine) else 0)])
    for start in range(0, longest, batch_size):
        kjt, labels = make_batch(cols, mine[start:start + batch_size])
        yield kjt, labels, torch.from_numpy(mask[start:start + batch_size])
