"""Per-task batch losses: [B, T or 1] logits and [B, T] labels -> [T] losses.

Each task has its loss (`train.loss`, or the task's own `loss` setting; `per_task` combines them).
`bce`: mean binary cross-entropy per task (one logit per task).
`pairwise`: the paper's online (Taobao) setting, one shared output score trained per task with
-log sigmoid(z_pos - z_neg), averaged over every (positive, negative) pair of the task in the batch;
a task with no pair in a batch contributes 0 (and no gradient) for that batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.expand_as(labels)
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)


def pairwise(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.expand_as(labels)
    out = []
    for t in range(labels.shape[1]):
        pos = labels[:, t] > 0.5
        zp, zn = logits[pos, t], logits[~pos, t]
        if len(zp) == 0 or len(zn) == 0:
            out.append(logits[:, t].sum() * 0.0)
            continue
        out.append(F.softplus(-(zp[:, None] - zn[None, :])).mean())
    return torch.stack(out)


LOSSES = {"bce": bce, "pairwise": pairwise}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"train.loss: unknown loss {name!r} (expected one of {sorted(LOSSES)})") from None


def per_task(names: list[str]):
    """The batch loss of tasks whose losses are `names` (one per label column, in task order)."""
    if len(set(names)) == 1:
        return get_loss(names[0])
    groups = {name: [i for i, n in enumerate(names) if n == name] for name in dict.fromkeys(names)}
    fns = {name: get_loss(name) for name in groups}

    def mixed(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.expand_as(labels)
        out: list = [None] * labels.shape[1]
        for name, cols in groups.items():
            for c, value in zip(cols, fns[name](logits[:, cols], labels[:, cols])):
                out[c] = value
        return torch.stack(out)

    return mixed
