"""Evaluate every compared method on the test split: per-task AUC, logloss, gAUC.

`single_task` is stage 1's model on task 1 only (the other tasks are None: it has no head for them).
"""
from __future__ import annotations

import numpy as np

from nmtrec.components.evaluate.scoring import BATCH_SIZE, predict_checkpoint, task_metrics


def _pad(metrics: dict, tasks: list[str]) -> dict:
    return {k: {t: v.get(t) for t in tasks} for k, v in metrics.items()}


def evaluate_methods(dataset_dir: str, tasks: list[str], nmt: str, first_stage: str,
                     famo_nmt: str | None = None, joint: list[str] = (),
                     batch_size: int = BATCH_SIZE) -> tuple[dict, dict, tuple]:
    """Return ({method: metrics}, {method: StageManifest}, (labels, probs) of NMT for ROC curves).
    Collective under torchrun: every process scores its share of each checkpoint and gets the whole."""
    methods, metas = {}, {}
    labels, probs, users, meta = predict_checkpoint(nmt, dataset_dir, batch_size=batch_size)
    methods["nmt"], metas["nmt"] = task_metrics(labels, probs, users, tasks), meta
    nmt_pred = (labels, np.asarray(probs))
    m, meta = _one(first_stage, dataset_dir, batch_size)
    methods["single_task"], metas["single_task"] = _pad(m, tasks), meta
    if famo_nmt:
        methods["famo+nmt"], metas["famo+nmt"] = _one(famo_nmt, dataset_dir, batch_size)
    for path in joint:
        m, meta = _one(path, dataset_dir, batch_size)
        methods[meta.method], metas[meta.method] = _pad(m, tasks), meta
    return methods, metas, nmt_pred


def _one(ckpt: str, dataset_dir: str, batch_size: int):
    labels, probs, users, meta = predict_checkpoint(ckpt, dataset_dir, batch_size=batch_size)
    return task_metrics(labels, probs, users, meta.tasks), meta
