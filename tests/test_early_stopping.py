"""Early stopping: the kept epoch follows the objective's validation score, patience its progress score.
For every objective but an NMT stage the two are the same and the rule is the plain one; an NMT stage
(nmt.patience_on: kept_or_task) trains on while its own task improves, keeping its best feasible epoch."""
import random

import torch

from nmtrec.components.train.epochs import EarlyStopping
from nmtrec.components.train.objectives.nmt import INFEASIBLE, NMTStage
from nmtrec.components.train.objectives.static import StaticWeights


class _Check:  # a paired measurement with a given t
    def __init__(self, t):
        self.mean, self._t = t, t

    def t(self):
        return self._t


def plain_rule(scores, patience):
    """The textbook rule, written out: (kept epoch, epochs run)."""
    best, bad, kept = float("inf"), 0, None
    for epoch, s in enumerate(scores):
        if s < best - 1e-6:
            best, bad, kept = s, 0, epoch
        else:
            bad += 1
            if bad > patience:
                return kept, epoch + 1
    return kept, len(scores)


def run(stopping, scores, progress):
    kept = None
    for epoch, (s, p) in enumerate(zip(scores, progress)):
        keep, stop = stopping.update(s, p)
        kept = epoch if keep else kept
        if stop:
            return kept, epoch + 1
    return kept, len(scores)


def test_same_scores_give_the_plain_rule():
    rng = random.Random(0)
    obj = StaticWeights([0.7, 0.3])
    for _ in range(200):
        patience = rng.randint(0, 3)
        losses = [torch.tensor([rng.uniform(0.1, 0.2), rng.uniform(0.4, 0.5)]) for _ in range(rng.randint(1, 15))]
        scores = [obj.valid_score(v) for v in losses]
        assert run(EarlyStopping(patience), scores, [obj.progress_score(v) for v in losses]) == plain_rule(scores, patience)


def test_nmt_stage_trains_on_through_infeasible_epochs_while_its_task_improves():
    """Epochs 2-4 break the constraint (t > 0) while f_k keeps falling: with patience_on "kept" the stage
    stops after epoch 4 keeping epoch 1; with "kept_or_task" it reaches the feasible epoch 5 and keeps it."""
    f_k = [0.50, 0.49, 0.48, 0.47, 0.46, 0.465, 0.47, 0.475]
    t = [-1.0, 0.5, 0.4, 0.3, -0.2, -0.5, -0.5, -0.5]
    for patience_on, expected in (("kept", (0, 4)), ("kept_or_task", (4, 8))):
        obj = NMTStage(1, {0: 0.2}, lambda_init=0.0, measure="paired", feasible_z=0.0, patience_on=patience_on)
        stopping, kept, ran = EarlyStopping(patience=2), None, len(f_k)
        for epoch, (loss, tj) in enumerate(zip(f_k, t)):
            obj.after_check({0: _Check(tj)})
            val = torch.tensor([0.2, loss])
            score = obj.valid_score(val)
            assert (score >= INFEASIBLE) == (tj > 0)
            keep, stop = stopping.update(score, obj.progress_score(val))
            kept = epoch if keep else kept
            if stop:
                ran = epoch + 1
                break
        assert (kept, ran) == expected, patience_on


def test_resumed_stopping_continues_the_same_count():
    a = EarlyStopping(1)
    for s, p in ((5.0, 5.0), (4.0, 4.0), (1e3, 3.0), (1e3, 3.5)):
        a.update(s, p)
    b = EarlyStopping(1, **a.state())
    assert b.state() == a.state() and b.update(1e3, 3.2) == a.update(1e3, 3.2) == (False, True)


def test_a_new_kept_epoch_also_resets_patience():
    """The task stalls from epoch 2 but later epochs become feasible one by one (a conflict the multipliers
    resolve slowly): each new kept epoch restarts the count, so the stage reaches them."""
    scores = [INFEASIBLE + 3, INFEASIBLE + 2.5, INFEASIBLE + 2.6, INFEASIBLE + 2, INFEASIBLE + 2.2, 0.52, 0.53, 0.53, 0.53]
    progress = [0.50, 0.51, 0.52, 0.52, 0.53, 0.52, 0.53, 0.53, 0.53]
    assert run(EarlyStopping(1), scores, progress) == (5, 8)
    assert run(EarlyStopping(1), progress, progress) == (0, 3)  # the task's loss alone stops after epoch 3
