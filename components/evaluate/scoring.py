"""Evaluate a stage checkpoint on the test split: per-task AUC, logloss and gAUC -> report.json.

Evaluation runs the plain unsharded export (model.pt), as serving would, streaming the split in
batches. Exact AUC and gAUC need every row's score: each row keeps its float32 probability, labels and
user id (about 20 bytes a row and task), nothing else. Under torchrun each process scores a contiguous
run of the batches one process would score, and the runs are gathered in row order: N processes give
one process's numbers.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from nmtrec.components.common.config import EvaluateConfig
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.common.metrics import auc, gauc, logloss
from nmtrec.components.evaluate.oracle import oracle_report
from nmtrec.components.train import checkpoint
from nmtrec.components.train.data import load_split, shard_batches
from nmtrec.models.registry import build_model

USER = "user_id"  # gAUC groups rows by this feature when the dataset has it
BATCH_SIZE = EvaluateConfig().batch_size  # rows scored at once


@torch.no_grad()
def predict(model, split, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities [N, outputs] float32, labels [N, T], user ids [N]) of every row in row order; with
    a process group of several processes, every process scores its share and all get the whole."""
    model.eval()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    probs, labels, users = [], [], []
    for kjt, y, mask in shard_batches(split, batch_size, rank, world):
        keep = mask.numpy() > 0
        probs.append(torch.sigmoid(model(kjt)).numpy()[keep])
        labels.append(y.numpy()[keep])
        users.append(kjt[USER].values().numpy()[keep] if USER in kjt.keys() else np.zeros(int(keep.sum()), np.int64))
    mine = tuple(np.concatenate(parts) for parts in (probs, labels, users)) if probs else None  # None: no batch
    if world == 1:
        return mine
    shares = [None] * world
    dist.all_gather_object(shares, mine)
    return tuple(np.concatenate([share[i] for share in shares if share is not None]) for i in range(3))


def task_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray, tasks: list[str]) -> dict:
    return {
        "auc": {t: auc(labels[:, i], probs[:, i]) for i, t in enumerate(tasks)},
        "logloss": {t: logloss(labels[:, i], probs[:, i]) for i, t in enumerate(tasks)},
        "gauc": {t: gauc(labels[:, i], probs[:, i], users) for i, t in enumerate(tasks)},
    }


def predict_checkpoint(ckpt_dir: str, dataset_dir: str, split: str = "test", batch_size: int = BATCH_SIZE):
    """(labels [N, T], probabilities [N, T], user ids [N], stage manifest) of one checkpoint on a split
    (collective under torchrun: every process calls it and gets the whole)."""
    meta = checkpoint.read_meta(ckpt_dir)
    cfg = meta.parsed_config()
    spec = FeatureSpec.read(dataset_dir)
    rows = load_split(dataset_dir, spec, split, cfg.labels_of(cfg.tasks))  # each task's label column
    model = build_model(cfg.model, spec, len(cfg.tasks), device="cpu")
    checkpoint.load_unsharded(ckpt_dir, model)
    probs, labels, users = predict(model, rows, batch_size)
    return labels, np.broadcast_to(probs, labels.shape), users, meta  # a shared score serves every task


def evaluate_checkpoint(ckpt_dir: str, dataset_dir: str, split: str = "test") -> tuple[dict, StageManifest]:
    """Return (metrics, stage manifest) of one stage checkpoint."""
    labels, probs, users, meta = predict_checkpoint(ckpt_dir, dataset_dir, split)
    return task_metrics(labels, probs, users, meta.tasks), meta


def build_report(final_ckpt: str, dataset_dir: str) -> dict:
    metrics, meta = evaluate_checkpoint(final_ckpt, dataset_dir)
    return {
        **oracle_report(dataset_dir, meta.tasks, meta.parsed_config().label_map()),
        "tasks": meta.tasks,
        "methods": {"nmt": metrics},
        "stages": [{"task": s.task, "frozen_optima": s.frozen_optima, "lambda_final": s.lambda_final,
                    "epochs": s.epochs, "valid_loss": s.valid_loss} for s in meta.stages],
    }


def summary_table(report: dict) -> str:
    tasks = report["tasks"]
    rows = [["method"] + [f"{t} AUC" for t in tasks]]
    undefined = {t for t in tasks if f"methods.*.auc.{t}" in report.get("null_metrics", {})}

    def fmt(x, t, applies=True):  # "-": not applicable (no head for the task); "null*": undefined (see below)
        if x is None or x != x:
            return "null*" if t in undefined and applies else "-"
        return f"{x:.4f}"
    for name, m in report["methods"].items():  # a method with a head for the task has its logloss
        rows.append([name] + [fmt(m["auc"].get(t), t, m.get("logloss", {}).get(t) is not None) for t in tasks])
    if "oracle_auc" in report:
        rows.append(["oracle"] + [fmt(report["oracle_auc"].get(t), t, False) for t in tasks])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"* {t} AUC is null: {report['null_metrics'][f'methods.*.auc.{t}']}" for t in tasks if t in undefined]
    return "\n".join(lines)
