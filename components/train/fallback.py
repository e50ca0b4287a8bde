"""The safe fallback of a fresh NMT stage that breaks its constraints.

A fresh stage k (`nmt.init: fresh`) relearns the higher tasks from a new initialisation under the
multipliers. Where it has not caught up with stage k-1 on some higher task by the time it stops (a
strong conflict on one shared score, too few epochs), its validation audit would hand the next stage a
model that is significantly worse on a task of higher priority. A feasible model always exists: stage
k-1's, with task k's own parameters (tower, gates) trained on its frozen shared layers -- every higher
task's predictions are then unchanged. The stage falls back to that model (the warm-up of
components/train/warmup.py for every epoch, with the stage's early stopping). With one shared score the
new task has no parameters of its own: the fallback is stage k-1's model as it is.
"""
from __future__ import annotations

from nmtrec.components.train import audit, checkpoint, paired
from nmtrec.components.train.epochs import fit_epochs
from nmtrec.components.train.objectives.nmt import SingleTask
from nmtrec.components.train.warmup import Warmup


def breached_on_valid(model, valid, frozen_rows: dict, higher: list[str], batch_size: int, z: float,
                      allowance: dict[str, float], losses: list[str], frozen_scores: dict | None = None,
                      ranked: tuple[str, ...] = ()) -> list[str]:
    """The higher tasks the stage's validation audit (components/train/paired.py `paired_audit`) calls
    significantly worse than their frozen models (`ranked` ones by their paired AUC change)."""
    scores = audit.split_scores(model, valid, batch_size)
    rows = paired.row_losses(scores, valid.labels, losses)
    checks = paired.paired_audit(higher, rows, frozen_rows, audit.aucs(scores, valid.labels), {}, z, {},
                                 allowance, scores=scores, labels=valid.labels, frozen_scores=frozen_scores,
                                 loss=losses, ranked=ranked)
    return [c["task"] for c in checks if c["breach"]]


def train_on_frozen(model, dense_opt, previous_dir: str, stage: int, train, valid, *, batch_size: int,
                    max_epochs: int, patience: int, seed: int, best_dir, meta, label: str, loss_fn,
                    shuffle_rows: int) -> dict:
    """Load stage k-1's model and train only task `stage`'s own parameters on it; the fit's history."""
    checkpoint.load_into(previous_dir, model, allow_new_heads=True, check=False)
    warmup = Warmup(model, stage, max_epochs)
    if not warmup.own:  # one shared score: nothing of the new task's own to train
        return {"epochs": 0}
    # the warm-up's zero gradients keep the shared layers still only from a fresh optimizer state
    dense_opt.state.clear()
    return fit_epochs(model, dense_opt, SingleTask(stage), train, valid, stage_task=stage, batch_size=batch_size,
                      max_epochs=max_epochs, patience=patience, seed=seed, best_dir=best_dir, meta=meta,
                      label=f"{label} [fallback]", loss_fn=loss_fn, warmup=warmup, shuffle_rows=shuffle_rows)
