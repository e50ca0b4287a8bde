"""Constraint audit after each NMT stage: did the higher-priority tasks keep their quality?

For every higher task j: its validation loss and AUC now versus the values measured at the end of
its own stage (the frozen optimum on validation data), its final multiplier, and a breach flag when
the validation loss exceeds the frozen value by more than the tolerance r_j. A breach is a warning
in the report; with `nmt.fail_on_breach` the stage fails instead (before writing its artifact).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.distributed as dist

from nmtrec.components.common.metrics import auc
from nmtrec.components.train.data import ParquetSplit, eval_batches
from nmtrec.components.train.distributed import current_device

log = logging.getLogger("nmtrec.audit")


class ConstraintBreach(RuntimeError):
    pass


@torch.no_grad()
def split_scores(model, split: ParquetSplit, batch_size: int) -> np.ndarray:
    """Logits of every row of a split in row order (all ranks together, each streaming its contiguous
    share); [rows, outputs]."""
    model.eval()
    rank, world, device = dist.get_rank(), dist.get_world_size(), current_device()
    mine = []
    for kjt, _, mask in eval_batches(split, batch_size, rank, world):
        mine.append(model(kjt.to(device))[mask.to(device) > 0].double().cpu().numpy())
    model.train()
    mine = np.concatenate(mine) if mine else np.zeros((0, 1))
    parts = [None] * world
    dist.all_gather_object(parts, mine)
    return np.concatenate(parts)


def aucs(scores: np.ndarray, labels: np.ndarray) -> list[float]:
    """AUC of every task from logits [rows, outputs] (one shared score serves every task)."""
    scores = np.broadcast_to(scores, labels.shape)
    return [auc(labels[:, t], scores[:, t]) for t in range(labels.shape[1])]




def constraint_audit(tasks: list[str], stage: int, valid_loss: list[float], valid_auc: list[float],
                     frozen_valid: dict[str, float], frozen_valid_auc: dict[str, float],
                     lambdas: dict[str, float], tolerance: dict[str, float]) -> list[dict]:
    rows = []
    for j in range(stage):
        t = tasks[j]
        excess = valid_loss[j] - frozen_valid[t]
        rows.append({
            "task": t, "valid_loss": valid_loss[j], "frozen_valid_loss": frozen_valid[t],
            "excess": excess, "tolerance": tolerance[t], "valid_auc": valid_auc[j],
            "frozen_valid_auc": frozen_valid_auc[t], "auc_change": valid_auc[j] - frozen_valid_auc[t],
            "lambda_final": lambdas.get(t), "breach": bool(excess > tolerance[t]),
        })
    return rows


def enforce(audit: list[dict], label: str, fail: bool) -> None:
    breaches = [a for a in audit if a["breach"]]
    for a in breaches:
        if a.get("judged_by") == "auc":  # a ranking task (nmt.rank_by_auc)
            log.warning("%s: constraint on %s breached: AUC %+.4f vs the frozen model on the same rows (DeLong "
                        "SE %.4f, %.1f SEs; tolerance %.4f)", label, a["task"], a["auc_change_paired"], a["auc_se"],
                        a["auc_z"], a["auc_tolerance"])
        elif "t" in a:  # paired (components/train/paired.py)
            log.warning("%s: constraint on %s breached: validation loss %+.5f per row vs the frozen model "
                        "(t = %.1f standard errors, tolerance %.5f)", label, a["task"], a["mean_loss_change"],
                        a["t"], a["tolerance"])
        else:
            log.warning("%s: constraint on %s breached: validation loss %.5f > frozen %.5f + tolerance %.5f",
                        label, a["task"], a["valid_loss"], a["frozen_valid_loss"], a["tolerance"])
    if breaches and fail:
        raise ConstraintBreach(f"{label}: constraint audit failed for {[a['task'] for a in breaches]} "
                               f"(nmt.fail_on_breach is set)")
