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
_DENSE_LIMIT = 1 << 26  # dense count and lookup tables up to this id range (512 MiB of int64 at most)


def count_values(columns: list[pa.Array], drop_zero: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct raw ids ascending, their counts) over the given columns; nulls never count, nor 0
    where `drop_zero` (bag padding)."""
    chunks = [(chunk, no_zero) for col, no_zero in zip(columns, drop_zero)
              for chunk in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]) if len(chunk) > chunk.null_count]
    if not chunks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bounds = [pc.min_max(chunk) for chunk, _ in chunks]
    lo, hi = min(b["min"].as_py() for b in bounds), max(b["max"].as_py() for b in bounds)
    base = _base(lo, hi)
    span = hi - base + 1
    if span > _dense_span(sum(len(chunk) for chunk, _ in chunks)):  # sparse ids: hash them
        return _hash_counts(chunks)
    # ids are mostly compact (Tenrec: 0..N): a bincount per chunk, no concatenation and no filtering:
    # nulls are counted as `base` and taken off again, a bag's zeros are dropped at the end
    counts = np.zeros(span, np.int64)
    for chunk, no_zero in chunks:
        raw = (chunk.fill_null(base) if chunk.null_count else chunk).to_numpy()
        part = np.bincount(raw - base if base else raw, minlength=span)
        part[0] -= chunk.null_count
        if no_zero and base <= 0 <= hi:
            part[-base] = 0
        counts += part
    present = np.flatnonzero(counts)
    return present + base, counts[present]


def _base(lo: int, hi: int) -> int:
    """Where a dense table of ids in [lo, hi] starts: at 0 for ids from near 0 (no shift needed)."""
    return 0 if 0 <= lo <= hi - lo else lo


def _dense_span(n: int) -> int:
    """Largest id range counted or looked up densely for n ids (a bincount beats hashing)."""
    return min(_DENSE_LIMIT, 2 * n + (1 << 20))


def _hash_counts(chunks: list[tuple[pa.Array, bool]]) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for chunk, no_zero in chunks:
        chunk = chunk.drop_null()
        parts.append(chunk.filter(pc.not_equal(chunk, 0)) if no_zero else chunk)
    counts = pc.value_counts(pa.chunked_array(parts, pa.int64()))
    values, counts = counts.field("values").to_numpy(), counts.field("counts").to_numpy()
    order = np.argsort(values)
    return values[order], counts[order]


def merge_counts(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum counts of the same id across pairs (ids ascending)."""
    values = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.int64)
    counts = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, np.int64)
    if not len(values) or values.dtype.kind != "i":  # names (stats) or nothing: sort them
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)
    lo, hi = int(values.min()), int(values.max())
    base = _base(lo, hi)
    if hi - base + 1 > _dense_span(len(values)):
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)
    pos = values - base if base else values
    present = np.flatnonzero(np.bincount(pos, minlength=hi - base + 1))  # ids seen, a count of 0 too
    summed = np.bincount(pos, weights=counts, minlength=hi - base + 1)  # float: exact below 2^53
    return present + base, summed[present].astype(np.int64)


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
        if 0 < self.lo <= int(vocab.max()) - self.lo:
            self.lo = 0  # ids from near 0: a slightly longer array saves a subtraction per lookup
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
        null = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
        raw = (column.fill_null(0) if null is not None else column).to_numpy(zero_copy_only=False)
        out = self.lookup(raw.astype(np.int64, copy=False))
        if null is not None:
            out[null] = NULL_INDEX
        if zero_is_null:
            out[raw == 0] = NULL_INDEX
        return out

    def lookup(self, raw: np.ndarray) -> np.ndarray:
        """Index of every raw id (any shape), OOV_INDEX for ids not in the vocabulary."""
        if self.dense is not None:
            pos = raw - self.lo if self.lo else raw
            out = self.dense.take(pos, mode="clip")
            outside = pos.view(np.uint64) >= len(self.dense)  # negative positions wrap to huge values
            if outside.any():
                out[outside] = OOV_INDEX
            return out
        at = np.searchsorted(self.sorted, raw).clip(0, max(len(self.sorted) - 1, 0))
        hit = self.sorted[at] == raw if len(self.sorted) else np.zeros(raw.shape, bool)
        return np.where(hit, self.order[at] + FIRST_ID, OOV_INDEX)
