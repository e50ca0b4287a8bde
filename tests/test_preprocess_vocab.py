"""The vectorised pieces of preprocessing against plain-Python references: id counts (dense bincount
and the sparse fallback), the encoder's lookup, and the line index of every parsed row."""
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest


def _column(rng, n, lo, hi, nulls):
    values = rng.integers(lo, hi, n)
    mask = rng.random(n) < nulls
    half = n // 2
    return pa.chunked_array([pa.array(values[:half], mask=mask[:half]), pa.array(values[half:], mask=mask[half:])])


@pytest.mark.parametrize("lo,hi", [(0, 50), (1_000, 1_300), (-20, 20), (0, 1 << 40)])  # the last: sparse ids
def test_count_values_matches_counter(lo, hi):
    from nmtrec.components.preprocess.vocab import count_values

    rng = np.random.default_rng(3)
    cols = [_column(rng, 2_000, lo, hi, 0.1), _column(rng, 1_500, lo, hi, 0.0), _column(rng, 900, lo, hi, 0.3)]
    drop_zero = [False, True, True]
    want = Counter()
    for col, no_zero in zip(cols, drop_zero):
        want.update(v for v in col.to_pylist() if v is not None and not (no_zero and v == 0))
    values, counts = count_values(cols, drop_zero)
    assert values.tolist() == sorted(want) and counts.tolist() == [want[v] for v in sorted(want)]


def test_count_values_of_nothing():
    from nmtrec.components.preprocess.vocab import count_values

    values, counts = count_values([pa.array([None, 0], pa.int64())], [True])
    assert len(values) == len(counts) == 0


@pytest.mark.parametrize("vocab", [[5, 3, 9, 4], [1_000_007, 1_000_003], [7, -2, 0], [1 << 40, 3, 12]])
def test_encoder_matches_a_dict(vocab):
    from nmtrec.components.preprocess.vocab import FIRST_ID, NULL_INDEX, OOV_INDEX, Encoder

    index = {v: FIRST_ID + i for i, v in enumerate(vocab)}
    raw = vocab + [v + 1 for v in vocab] + [v - 1 for v in vocab] + [-(1 << 50), 1 << 50, 0, 0, None]
    col = pa.array(raw, pa.int64())
    enc = Encoder(np.array(vocab))
    want = [NULL_INDEX if v is None else index.get(v, OOV_INDEX) for v in raw]
    assert enc.encode(col).tolist() == want
    want_bag = [NULL_INDEX if v in (None, 0) else index.get(v, OOV_INDEX) for v in raw]
    assert enc.encode(col, zero_is_null=True).tolist() == want_bag
    filled = np.array([0 if v is None else v for v in raw], np.int64).reshape(-1, 1).repeat(3, axis=1)
    looked = enc.lookup(filled)  # 2-D, as for a bag's columns side by side
    assert looked.shape == filled.shape
    assert looked[:, 2].tolist() == [index.get(int(v), OOV_INDEX) for v in filled[:, 0]]


@pytest.mark.parametrize("text", [
    b"1,2\n3,4\n5,6\n",            # every line a row: the fast path
    b"1,2\n3,4\n5,6",              # no newline at the end
    b"1,2\n\n3,4\n\n\n5,6\n",      # blank lines keep their numbers
    b"1,2\r\n3,4\r\n\r\n5,6\r\n",  # CRLF, and a blank CRLF line
    b"\n1,2\n",
])
def test_row_lines_match_the_non_empty_lines(text):
    from nmtrec.components.preprocess.read import _row_lines

    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    want = [i for i, line in enumerate(lines) if line.strip(b"\r")]
    assert _row_lines(text, len(want), text.count(b"\n")).tolist() == want


@pytest.mark.parametrize("ids", [[3, 1, 7], [10**12, 5], [-4, 2]])
def test_merge_counts_sums_per_id_and_keeps_zero_counts(ids):
    from nmtrec.components.preprocess.vocab import merge_counts

    rng = np.random.default_rng(5)
    pairs = [(np.array(ids, np.int64), rng.integers(0, 4, len(ids))) for _ in range(3)]
    pairs.append((np.array([ids[0]], np.int64), np.array([0])))
    want = Counter()
    for values, counts in pairs:
        for v, c in zip(values.tolist(), counts.tolist()):
            want[v] += c
    values, counts = merge_counts(pairs)
    assert values.tolist() == sorted(want) and counts.tolist() == [want[v] for v in sorted(want)]
    names, totals = merge_counts([(np.array(["rows", "bad"]), np.array([3, 0])), (np.array(["rows"]), np.array([2]))])
    assert dict(zip(names.tolist(), totals.tolist())) == {"rows": 5, "bad": 0}
