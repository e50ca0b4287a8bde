"""Ranking metrics in float64: AUC (ties get average ranks), logloss, and gAUC (user-grouped AUC).

Rank-based and vectorised, so gAUC over many users costs one sort instead of one call per user.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; nan when only one class is present."""
    y = np.asarray(labels, dtype=np.float64) > 0.5
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups that have both classes."""
    y = np.asarray(labels, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups)
    order = np.lexsort((s, g))
    g, s, y = g[order], s[order], y[order]
    # ranks within each group (average for ties): rank of (group, score) pairs minus group start
    pair_rank = rankdata(np.stack([g, s], 1).view([("g", g.dtype), ("s", s.dtype)]).ravel(), method="average")
    starts = np.searchsorted(g, g, side="left")
    ranks = pair_rank - starts
    uniq, first, counts = np.unique(g, return_index=True, return_counts=True)
    pos = np.add.reduceat(y.astype(np.float64), first)
    neg = counts - pos
    rank_pos = np.add.reduceat(np.where(y, ranks, 0.0), first)
    ok = (pos > 0) & (neg > 0)
    if not ok.any():
        return float("nan")
    per_group = (rank_pos[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return float((per_group * counts[ok]).sum() / counts[ok].sum())


def undefined_reason(labels: np.ndarray, name: str = "the label", split: str = "test",
                     groups: np.ndarray | None = None) -> str | None:
    """Why AUC (or, with `groups`, gAUC) of `labels` cannot be computed; None when it can."""
    y = np.asarray(labels, dtype=np.float64) > 0.5
    n, pos = len(y), int(y.sum())
    if n == 0:
        return f"the {split} split has no rows"
    if pos in (0, n):
        return (f"{name} has only {'positives' if pos else 'negatives'} in the {split} split "
                f"({pos:,} of {n:,} rows positive): AUC needs both classes")
    if groups is not None:
        g = np.asarray(groups)
        both = np.intersect1d(np.unique(g[y]), np.unique(g[~y]))
        if len(both) == 0:
            return f"no user has both classes of {name} in the {split} split: gAUC averages over such users"
    return None
