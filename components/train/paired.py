"""Paired constraints: a higher task's degradation measured row by row against its frozen model.

At the end of task j's stage its per-row losses on the validation and test splits are kept in the
artifact (`frozen_rows/`) and carried to every later stage. A later stage compares its own per-row
losses on the same rows: d_i = l_j(theta; x_i) - l_j(theta*_j; x_i). The mean of d estimates the
degradation, and because both models see the same rows most of the noise of each estimate cancels:
its standard error SE = sd(d)/sqrt(n) is far smaller than the noise of two separate means. A task
counts as degraded when mean(d) > z * SE: the tolerance follows from the data (fixed z), not from a
percentage fitted to one data set.

Per-row losses: binary cross-entropy for `bce`; for `pairwise` (one ranking score per task) a row's
loss is its mean pair loss against the rows of the other class in its fixed chunk of CHUNK rows (the
pairs are the same for both models, so the difference stays paired).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmtrec.components.train.audit import split_scores
from nmtrec.components.train.data import ParquetSplit

ROWS_DIR = "frozen_rows"
CHUNK = 4096


def rows_file(split: str) -> str:
    return f"{ROWS_DIR}/{split}.npz"


def scores_file(split: str) -> str:
    """Each task's per-row scores (logits) of its frozen model: the paired AUC comparison's reference."""
    return f"{ROWS_DIR}/{split}_scores.npz"


def row_losses(logits: np.ndarray, labels: np.ndarray, loss: str | list[str]) -> np.ndarray:
    """[rows, tasks] float64 per-row losses (NaN where a row has no pair, `pairwise` only). `loss`: one
    for every task, or each task's own."""
    z = np.broadcast_to(logits, labels.shape).astype(np.float64)
    y = labels.astype(np.float64)
    losses = [loss] * z.shape[1] if isinstance(loss, str) else list(loss)
    out = np.full(z.shape, np.nan)
    bce = [t for t, name in enumerate(losses) if name == "bce"]
    out[:, bce] = np.logaddexp(0.0, z[:, bce]) - y[:, bce] * z[:, bce]
    pairwise = [t for t, name in enumerate(losses) if name != "bce"]
    for start in range(0, len(z), CHUNK):
        zc, yc = z[start:start + CHUNK], y[start:start + CHUNK]
        for t in pairwise:
            pos, neg = yc[:, t] > 0.5, yc[:, t] <= 0.5
            if not pos.any() or not neg.any():
                continue
            pair = np.logaddexp(0.0, zc[neg, t][None, :] - zc[pos, t][:, None])  # [pos, neg]
            block = out[start:start + CHUNK, t]
            block[pos] = pair.mean(1)
            block[neg] = pair.mean(0)
    return out


@dataclass(frozen=True)
class Paired:
    """mean(d), its standard error and the number of rows of one task's paired comparison; `allowance`:
    the task's r_j, a mean loss increase it may spend (tasks.i.tolerance or nmt.tolerance; 0 by default)."""
    mean: float
    se: float
    rows: int
    allowance: float = 0.0

    def degraded(self, z: float) -> bool:
        return self.mean - self.allowance > z * self.se

    def t(self) -> float:
        """(mean - allowance) / SE (0 when the two models agree on every row)."""
        excess = self.mean - self.allowance
        if self.se > 0:
            return excess / self.se
        return 0.0 if excess <= 0 else float("inf")


def compare(current: np.ndarray, reference: np.ndarray, allowance: float = 0.0,
            positive: np.ndarray | None = None) -> Paired:
    """Paired change of per-row losses. `positive` (a `pairwise` task's positive rows): a row's loss is
    then its mean pair loss against the other class of its chunk, so the rows share pairs and are not
    independent; the change is a two-sample U-statistic whose standard error is DeLong's, from the
    positives' and the negatives' own spreads (sd/sqrt(rows) understates it, the more so the rarer a class)."""
    # both sides at the stored precision (float32): an unchanged model differs by exactly 0
    d = current.astype(np.float32).astype(np.float64) - reference
    finite = np.isfinite(d)
    if positive is not None:
        pos, neg = d[finite & positive], d[finite & ~positive]
        if len(pos) > 1 and len(neg) > 1:
            se = np.sqrt(pos.var(ddof=1) / len(pos) + neg.var(ddof=1) / len(neg))
            return Paired(float(d[finite].mean()), float(se), int(finite.sum()), allowance)
    d = d[finite]
    if len(d) < 2:
        return Paired(0.0, 0.0, len(d), allowance)
    return Paired(float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d), allowance)


def audit_margin(z: float, valid_rows: int, test_rows: int) -> float:
    """How many validation standard errors below level a stage must hold a higher task (t = -margin) for
    the test audit to flag it no more often than its nominal rate P(N(0,1) > z). Held level on the
    validation rows, the task is level in truth only up to their sampling error (variance SE_v^2), so
    its test t is N(0, 1 + r), r = SE_v^2 / SE_t^2 = test_rows / valid_rows, and breaches far more often
    than the nominal rate when validation is the smaller split. Held at -margin SE_v, the test t is
    N(-margin sqrt(r), 1 + r), whose tail above z equals the nominal one when
    margin = z (sqrt(1 + r) - 1) / sqrt(r)."""
    if valid_rows <= 0 or test_rows <= 0:
        return 0.0
    r = test_rows / valid_rows
    return float(z * (np.sqrt(1.0 + r) - 1.0) / np.sqrt(r))


def pairwise_positives(loss: str | list[str], labels: np.ndarray | None, task: int) -> np.ndarray | None:
    """The positive rows of `task` when its loss is `pairwise` (for `compare`), else None."""
    if (loss if isinstance(loss, str) else loss[task]) != "pairwise":
        return None
    if labels is None:
        raise ValueError(f"task {task}: a pairwise task's paired standard error needs the labels")
    return labels[:, task] > 0.5


def _placements(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive the share of negatives it outranks, for each
    negative the share of positives that outrank it (ties count one half)."""
    pos, neg = scores[positive], scores[~positive]
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(neg_sorted, pos, "left") + np.searchsorted(neg_sorted, pos, "right")) / (2.0 * len(neg))
    v01 = 1.0 - (np.searchsorted(pos_sorted, neg, "left") + np.searchsorted(pos_sorted, neg, "right")) / (2.0 * len(pos))
    return v10, v01


def auc_change(current: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC(current) - AUC(reference) on the same rows and its standard error by DeLong's paired method
    (DeLong, DeLong & Clarke-Pearson 1988): both AUCs are means of per-row placements, so the change's
    variance comes from the per-row differences, as for the losses. NaN when a class is missing."""
    positive = labels > 0.5
    if positive.all() or not positive.any():
        return float("nan"), float("nan")
    # both sides at the stored precision (float32), as `compare` does: an unchanged model differs by 0
    now10, now01 = _placements(current.astype(np.float32).astype(np.float64), positive)
    ref10, ref01 = _placements(reference.astype(np.float64), positive)
    d10, d01 = now10 - ref10, now01 - ref01
    var = (d10.var(ddof=1) / len(d10) if len(d10) > 1 else 0.0) + (d01.var(ddof=1) / len(d01) if len(d01) > 1 else 0.0)
    return float(d10.mean()), float(np.sqrt(var))


def auc_lost(current: np.ndarray, reference: np.ndarray, labels: np.ndarray, allowance: float = 0.0) -> Paired:
    """A ranking task's degradation as a Paired: the AUC it lost against its frozen scores on the same rows
    (`auc_change` negated, DeLong's SE), so `degraded(z)` and `t()` read as for a loss."""
    change, se = auc_change(current, reference, labels)
    return Paired(-change, se, len(labels), allowance)


def dump_rows(rows: dict[str, np.ndarray]) -> bytes:
    """{task: per-row losses} as .npz bytes (float32: differences of ~1e-4 need no more)."""
    buf = io.BytesIO()
    np.savez(buf, **{t: v.astype(np.float32) for t, v in rows.items()})
    return buf.getvalue()


def load_rows(artifact_dir, split: str, file=rows_file) -> dict[str, np.ndarray]:
    path = Path(artifact_dir) / file(split)
    if not path.is_file():
        return {}
    with np.load(path) as f:
        return {t: f[t].astype(np.float64) for t in f.files}


class PairedCheck:
    """The loop's measurement of the constrained tasks: one pass over the validation split.
    `ranking_reference` {task: frozen scores}: those (pairwise) tasks are judged by their paired AUC change
    (components/train/paired.auc_change, as a loss: the AUC lost) instead of the surrogate loss: a ranking
    score means only its order, and a lower surrogate loss can come with a lower AUC."""

    def __init__(self, valid: ParquetSplit, reference: dict[int, np.ndarray], batch_size: int, loss: str | list[str],
                 allowance: dict[int, float] | None = None, ranking_reference: dict[int, np.ndarray] | None = None):
        self.valid, self.reference, self.batch_size, self.loss = valid, reference, batch_size, loss
        self.allowance = allowance or {}
        self.ranking_reference = ranking_reference or {}

    def measure(self, model) -> dict[int, Paired]:
        was_training = model.training
        scores = split_scores(model, self.valid, self.batch_size)
        model.train(was_training)
        labels = self.valid.labels
        by_loss = [j for j in self.reference if j not in self.ranking_reference]
        rows = row_losses(scores, labels, self.loss) if by_loss else None  # the pairwise ones cost pos x neg
        out = {}
        for j, ref in self.reference.items():
            if j in self.ranking_reference:
                out[j] = auc_lost(np.broadcast_to(scores, labels.shape)[:, j], self.ranking_reference[j], labels[:, j],
                                  self.allowance.get(j, 0.0))
            else:
                out[j] = compare(rows[:, j], ref, self.allowance.get(j, 0.0), pairwise_positives(self.loss, labels, j))
        return out


def paired_audit(higher: list[str], rows: np.ndarray, frozen_rows: dict[str, np.ndarray], auc_now: list[float],
                 frozen_auc: dict[str, float], z: float, lambdas: dict[str, float],
                 allowance: dict[str, float] | None = None, scores: np.ndarray | None = None,
                 labels: np.ndarray | None = None, frozen_scores: dict[str, np.ndarray] | None = None,
                 loss: str | list[str] = "bce", ranked: tuple[str, ...] = ()) -> list[dict]:
    """Every higher task's per-row losses now against its frozen model's on the same rows (components/
    train/paired.py): the mean difference, its standard error, t = mean / SE, and a breach when the task
    is significantly worse than its allowance r_j (mean - r_j > z * SE); AUC now vs the frozen model's on
    the same split, with DeLong's paired standard error where the frozen model's scores were kept
    (`scores` [rows, outputs] and `labels` [rows, tasks] of the current model). `loss`: the tasks' losses
    (a `pairwise` task's standard error needs `labels`). `ranked`: the tasks judged by the AUC they lost
    (nmt.rank_by_auc, as `PairedCheck` judges them during the stage) rather than by their surrogate loss,
    where their frozen scores were kept; `judged_by` names what decided the breach."""
    out = []
    for j, t in enumerate(higher):
        if t not in frozen_rows:
            continue
        c = compare(rows[:, j], frozen_rows[t], (allowance or {}).get(t, 0.0), pairwise_positives(loss, labels, j))
        out.append({"task": t, "mean_loss_change": c.mean, "se": c.se, "t": c.t(), "rows": c.rows,
                    "tolerance": c.allowance + z * c.se, "auc": auc_now[j], "frozen_auc": frozen_auc.get(t),
                    "auc_change": auc_now[j] - frozen_auc[t] if t in frozen_auc else None,
                    "lambda_final": lambdas.get(t), "breach": bool(c.degraded(z)), "judged_by": "loss"})
        if scores is not None and t in (frozen_scores or {}):
            lost = auc_lost(np.broadcast_to(scores, labels.shape)[:, j], frozen_scores[t], labels[:, j], c.allowance)
            out[-1].update(auc_change_paired=-lost.mean, auc_se=lost.se, auc_z=-lost.mean / lost.se if lost.se > 0 else 0.0)
            if t in ranked and np.isfinite(lost.mean):
                out[-1].update(breach=bool(lost.degraded(z)), judged_by="auc", auc_tolerance=lost.allowance + z * lost.se)
    return out
