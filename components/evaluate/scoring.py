"""Evaluate a stage checkpoint on the test split: per-task AUC, logloss and gAUC -> report.json.

Evaluation runs the plain unsharded export (model.pt) in one process, as serving would.
"""
from __future__ import annotations

import numpy as np
import torch

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.common.metrics import auc, gauc, logloss
from nmtrec.components.evaluate.oracle import oracle_report
from nmtrec.components.train import checkpoint
from nmtrec.components.train.data import load_split, make_batch
from nmtrec.models.registry import build_model


@torch.no_grad()
def predict(model, cols, batch_size: int = 8192) -> np.ndarray:
    model.eval()
    out = []
    for start in range(0, cols.rows, batch_size):
        kjt, _ = make_batch(cols, np.arange(start, min(start + batch_size, cols.rows)))
        out.append(torch.sigmoid(model(kjt)).double().numpy())
    return np.concatenate(out)


def task_metrics(labels: np.ndarray, probs: np.ndarray, users: np.ndarray, tasks: list[str]) -> dict:
    return {
        "auc": {t: auc(labels[:, i], probs[:, i]) for i, t in enumerate(tasks)},
        "logloss": {t: logloss(labels[:, i], probs[:, i]) for i, t in enumerate(tasks)},
        "gauc": {t: gauc(labels[:, i], probs[:, i], users) for i, t in enumerate(tasks)},
    }


def predict_checkpoint(ckpt_dir: str, dataset_dir: str, split: str = "test"):
    """(labels [N, T], probabilities [N, T], user ids [N], stage manifest) of one checkpoint on a split."""
    meta = checkpoint.read_meta(ckpt_dir)
    cfg = meta.parsed_config()
    spec = FeatureSpec.read(dataset_dir)
    cols = load_split(dataset_dir, spec, split, cfg.tasks)
    model = build_model(cfg.model, spec, len(cfg.tasks), device="cpu")
    checkpoint.load_unsharded(ckpt_dir, model)
    probs = np.broadcast_to(predict(model, cols), cols.labels.shape)  # a shared score serves every task
    users = cols.single[:, list(spec.sparse).index("user_id")] if "user_id" in spec.sparse else np.zeros(cols.rows)
    return cols.labels, probs, users, meta


def evaluate_checkpoint(ckpt_dir: str, dataset_dir: str, split: str = "test") -> tuple[dict, StageManifest]:
    """Return (metrics, stage manifest) of one stage checkpoint."""
    labels, probs, users, meta = predict_checkpoint(ckpt_dir, dataset_dir, split)
    return task_metrics(labels, probs, users, meta.tasks), meta


def build_report(final_ckpt: str, dataset_dir: str) -> dict:
    metrics, meta = evaluate_checkpoint(final_ckpt, dataset_dir)
    return {
        **oracle_report(dataset_dir, meta.tasks),
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
