"""One Parquet split of a dataset, opened for streaming: its row groups from the files' metadata, and
reads of a few row groups (or a range of rows) at a time into `Columns`.

Opening reads only the Parquet footers, so it costs the same for any number of rows; nothing here
keeps an array per row of the split except `labels` (the label columns alone, read on first use by
the audits that score a whole split).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nmtrec.components.common.feature_spec import FeatureSpec


@dataclass
class Columns:
    """Rows held in memory (a shuffle window, an evaluation chunk), as NumPy arrays."""
    single: np.ndarray  # [N, S] int64 ids of the single-id features
    bags: list[tuple[np.ndarray, np.ndarray]]  # per bag feature: (offsets [N+1], values)
    labels: np.ndarray  # [N, T] float32, tasks in priority order
    keys: list[str]

    @property
    def rows(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "Columns":
        """These rows, in this order (a copy)."""
        bags = []
        for offsets, values in self.bags:
            lens = offsets[idx + 1] - offsets[idx]
            bags.append((np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), values[bag_positions(offsets, idx)]))
        return Columns(self.single[idx], bags, self.labels[idx], self.keys)

    def slice(self, start: int, end: int) -> "Columns":
        return self.take(np.arange(start, end))


def bag_positions(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Positions in a bag's values of the ids of rows `idx`, row after row."""
    starts, lens = offsets[idx], offsets[idx + 1] - offsets[idx]
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))


def concat(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    bags = []
    for b in range(len(parts[0].bags)):
        offsets, values, base = [np.zeros(1, dtype=np.int64)], [], 0
        for p in parts:
            o, v = p.bags[b]
            offsets.append(o[1:] - o[0] + base)
            values.append(v[o[0]:o[-1]])
            base += int(o[-1] - o[0])
        bags.append((np.concatenate(offsets), np.concatenate(values)))
    return Columns(np.concatenate([p.single for p in parts]), bags, np.concatenate([p.labels for p in parts]),
                   parts[0].keys)


@dataclass(frozen=True)
class RowGroup:
    file: int  # index into the split's files
    index: int  # row group within the file
    first: int  # the row number of its first row in the split's natural order
    rows: int


class ParquetSplit:
    """A split's row groups in natural order (files as listed in feature_spec.json, row groups in file
    order): the order every evaluation pass reads, so per-row results line up between passes."""

    def __init__(self, dataset_dir: str | Path, spec: FeatureSpec, split: str, label_columns: list[str]):
        self.root = Path(dataset_dir)
        self.split = split
        missing = [c for c in label_columns if c not in spec.labels]
        if missing:
            raise ValueError(f"label column(s) {missing} are not in the dataset "
                             f"(feature_spec.json labels: {spec.labels})")
        if split not in spec.splits:
            raise ValueError(f"{self.root}: feature_spec.json has no split {split!r}")
        self.files = [self.root / f for f in spec.split_files(split)]
        self.sparse, self.bag_names = list(spec.sparse), list(spec.bags)
        self.label_columns = list(label_columns)
        self.keys = spec.feature_names()
        self.groups: list[RowGroup] = []
        first = 0
        for i, f in enumerate(self.files):
            try:
                meta = pq.read_metadata(f)
            except (OSError, pa.ArrowException) as e:
                raise ValueError(f"{f}: cannot read this Parquet file of split {split!r} ({e})") from None
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    self.groups.append(RowGroup(i, g, first, n))
                    first += n
        self.rows = first
        if self.rows == 0:
            raise ValueError(f"{self.root}: split {split!r} has no rows")
        self.group_ends = np.cumsum([g.rows for g in self.groups])

    def reader(self) -> "GroupReader":
        """A reader with its own open files (one per stream: streams run in their own threads)."""
        return GroupReader(self)

    def columns_of(self, table: pa.Table) -> Columns:
        # copy=False: the stacked arrays are new already (a window's bytes are what a process holds)
        single = np.stack([table.column(c).to_numpy() for c in self.sparse], axis=1).astype(np.int64, copy=False)
        bags = []
        for b in self.bag_names:
            arr = table.column(b).combine_chunks()
            bags.append((arr.offsets.to_numpy().astype(np.int64), arr.values.to_numpy().astype(np.int64, copy=False)))
        labels = np.stack([table.column(c).to_numpy() for c in self.label_columns], axis=1).astype(np.float32, copy=False)
        return Columns(single, bags, labels, self.keys)

    def groups_in(self, start: int, end: int) -> range:
        """Indices of the row groups that hold rows [start, end) of the natural order."""
        first = int(np.searchsorted(self.group_ends, start, side="right"))
        last = int(np.searchsorted(self.group_ends, end - 1, side="right")) if end > start else first - 1
        return range(first, last + 1)

    @cached_property
    def labels(self) -> np.ndarray:
        """[rows, T] float32 labels in natural order (label columns only)."""
        wanted = list(dict.fromkeys(self.label_columns))
        parts = []
        for f in self.files:
            table = pq.read_table(f, columns=wanted)
            parts.append(np.stack([table.column(c).to_numpy() for c in self.label_columns], axis=1).astype(np.float32))
        return np.concatenate(parts)


class GroupReader:
    def __init__(self, split: ParquetSplit):
        self.split = split
        self._files: dict[int, pq.ParquetFile] = {}
        self._columns = list(dict.fromkeys(split.sparse + split.bag_names + split.label_columns))

    def read(self, groups: list[int] | range) -> Columns:
        """These row groups (indices into split.groups), in this order, as one Columns; converted one
        group at a time, so only one group's Arrow table is alive beside the arrays."""
        parts = []
        for k in groups:
            g = self.split.groups[k]
            parts.append(self.split.columns_of(self._file(g.file).read_row_group(g.index, columns=self._columns)))
        return concat(parts)

    def read_rows(self, start: int, end: int):
        """Rows [start, end) of the natural order, one row group (or part of one) at a time."""
        for k in self.split.groups_in(start, end):
            g = self.split.groups[k]
            cols = self.read([k])
            lo, hi = max(start, g.first) - g.first, min(end, g.first + g.rows) - g.first
            yield cols if (lo, hi) == (0, g.rows) else cols.slice(lo, hi)

    def _file(self, i: int) -> pq.ParquetFile:
        if i not in self._files:
            self._files[i] = pq.ParquetFile(self.split.files[i])
        return self._files[i]
