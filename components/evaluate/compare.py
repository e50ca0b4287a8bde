"""Evaluate every compared method on the test split: per-task AUC, logloss, gAUC.

`single_task` is stage 1's model on task 1 only (the other tasks are None: it has no head for them).
"""
from __future__ import annotations

import numpy as np

from nmtrec.components.evaluate.scoring import predict_checkpoint, task_metrics


def _pad(metrics: dict, tasks: list[str]) -> dict:
    return {k: {t: v.get(t) for t in tasks} for k, v in metrics.items()}


def evaluate_methods(dataset_dir: str, tasks: list[str], nmt: str, first_stage: str,
                     famo_nmt: str | None = None, joint: list[str] = ()) -> tuple[dict, dict, tuple]:
    """Return ({method: metrics}, {method: StageManifest}, (labels, probs) of NMT for ROC curves)."""
    methods, metas = {}, {}
    labels, probs, users, meta = predict_checkpoint(nmt, dataset_dir)
    methods["nmt"], metas["nmt"] = task_metrics(labels, probs, users, tasks), meta
    nmt_pred = (labels, np.asarray(probs))
    m, meta = _one(first_stage, dataset_dir)
    methods["single_task"], metas["single_task"] = _pad(m, tasks), meta
    if famo_nmt:
        methods["famo+nmt"], metas["famo+nmt"] = _one(famo_nmt, dataset_dir)
    for path in joint:
        m, meta = _one(path, dataset_dir)
        methods[meta.method], metas[meta.method] = _pad(m, tasks), meta
    return methods, metas, nmt_pred


def _one(ckpt: str, dataset_dir: str):
    labels, probs, users, meta = predict_checkpoint(ckpt, dataset_dir)
    return task_metrics(labels, probs, users, meta.tasks), meta
