"""Seeded per-row draws for the train/valid/test split and the MTL negative sampling.

A row's draw is a hash of (seed, salt, the 1-based number of its line in the file, header and blank
lines counted as `line_number` counts them): independent of how the file was cut into ranges, of the
runner and its parallelism, and of the row's labels (a draw that saw the labels would send a
user-item pair's positive and negative rows to different splits, and a model that memorises train
pairs would then rank the test split backwards). Rows are drawn independently, as in Tenrec's
protocol (shuffle, split 8:1:1), so exact duplicates may fall in different splits.
Hash: splitmix64's finaliser, h = mix(mix(seed * 2^32 + salt) ^ line).

Why the line number and not the byte offset (the key until issue 12): an offset depends on how every
earlier line is printed, so one float written with one more digit (the synthetic generator's true_*
columns differed in their last digits between CPUs) moved every later row to another split. A line's
number only changes when lines are added or removed; real Tenrec files are fixed. Not the line's
content either: the planted exact duplicates must stay independent draws.
"""
from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1
SALT_SPLIT = 1
SALT_SAMPLE = 2
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def line_hash(lines: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """uint64 hash per row from the (1-based) numbers of the rows' lines in the file."""
    with np.errstate(over="ignore"):
        h = _mix(np.full(len(lines), (seed * (1 << 32) + salt) & MASK, dtype=np.uint64))
        return _mix(h ^ np.asarray(lines, dtype=np.int64).view(np.uint64))


def uniform(h: np.ndarray) -> np.ndarray:
    """Top 53 bits of the hash as a float in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def assign_split(u: np.ndarray, fractions) -> np.ndarray:
    """0/1/2 = train/valid/test for draws u in [0, 1)."""
    return np.searchsorted(np.cumsum(fractions)[:-1], u, side="right")


def keep_probability(positives: int, negatives: int, ratio: float) -> float:
    """Probability of keeping a negative so that about `ratio` negatives remain per positive."""
    return 1.0 if negatives == 0 else min(1.0, ratio * positives / negatives)
