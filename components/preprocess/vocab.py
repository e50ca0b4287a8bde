"""Vocabularies: count ids per embedding table, keep those seen at least `min_count` times, encode.

Encoded index layout of every table: 0 = null / padding (no id), 1 = out-of-vocabulary (rare or
unseen id), 2.. = kept ids, most frequent first (ties by raw id), so vocab_size = kept + 2.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NULL_INDEX = 0
OOV_INDEX = 1
FIRST_ID = 2
_DENSE_LIMIT = 1 << 26  # a dense lookup array up to this id range (256 MiB of int32 at most)


def count_values(columns: list[pa.Array], drop_zero: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct raw ids, their counts) over the given columns; nulls never count, nor 0 where
    `drop_zero` (bag padding)."""
    parts = []
    for col, no_zero in zip(columns, drop_zero):
        col = col.drop_null()
        if no_zero:
            col = col.filter(pc.not_equal(col, 0))
        parts.extend(col.chunks if isinstance(col, pa.ChunkedArray) else [col])
    counts = pc.value_counts(pa.chunked_array(parts, pa.int64()))
    return counts.field("values").to_numpy(), counts.field("counts").to_numpy()


def merge_counts(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum counts of the same id across pairs (vectorised: unique + bincount)."""
    values = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.int64)
    counts = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, np.int64)
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)


def build_vocab(values: np.ndarray, counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept raw ids (and counts) in index order: most frequent first, ties by raw id."""
    keep = counts >= min_count
    values, counts = values[keep], counts[keep]
    order = np.lexsort((values, -counts))
    return values[order], counts[order]


class Encoder:
    """Raw id -> index for one table, vectorised (dense lookup for compact id ranges, else binary search)."""

    def __init__(self, vocab: np.ndarray):
        vocab = np.asarray(vocab, dtype=np.int64)
        self.size = len(vocab) + FIRST_ID
        self.lo = int(vocab.min()) if len(vocab) else 0
        span = int(vocab.max()) - self.lo + 1 if len(vocab) else 1
        if span <= _DENSE_LIMIT:
            self.dense = np.full(span, OOV_INDEX, dtype=np.int64)
            self.dense[vocab - self.lo] = np.arange(FIRST_ID, self.size)
        else:
            self.dense = None
            self.order = np.argsort(vocab, kind="stable")
            self.sorted = vocab[self.order]

    def encode(self, column: pa.Array, zero_is_null: bool = False) -> np.ndarray:
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        null = column.is_null().to_numpy(zero_copy_only=False)
        raw = column.fill_null(0).to_numpy().astype(np.int64, copy=False)
        if self.dense is not None:
            pos = raw - self.lo
            inside = (pos >= 0) & (pos < len(self.dense))
            out = np.full(len(raw), OOV_INDEX, dtype=np.int64)
            out[inside] = self.dense[pos[inside]]
        else:
            at = np.searchsorted(self.sorted, raw).clip(0, max(len(self.sorted) - 1, 0))
            hit = self.sorted[at] == raw if len(self.sorted) else np.zeros(len(raw), bool)
            out = np.where(hit, self.order[at] + FIRST_ID, OOV_INDEX)
        out[null] = NULL_INDEX
        if zero_is_null:
            out[raw == 0] = NULL_INDEX
        return out
