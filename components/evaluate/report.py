"""report.json: every method's test metrics, the NMT stages with their frozen optima, final
multipliers and constraint audits (shape in the README's 'Report' section).

The HTML report's per-stage curves come from the final NMT artifact: it carries every stage's per-step
history (`histories/stage-<k>.json`, named by each StageSummary; components/common/manifest.py)."""
from __future__ import annotations

import numpy as np

from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.common.metrics import undefined_reason
from nmtrec.components.evaluate.compare import evaluate_methods
from nmtrec.components.evaluate.oracle import oracle_report
from nmtrec.components.evaluate.scoring import BATCH_SIZE

STAGE_KEYS = ("task", "method", "frozen_optima", "lambda_final", "tolerance", "constraint_audit", "test_audit",
              "epochs", "valid_loss", "valid_auc", "fallback")


def stage_summaries(meta: StageManifest) -> list[dict]:
    return [{k: getattr(s, k) for k in STAGE_KEYS} for s in meta.stages or []]


def build_full_report(dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None = None,
                      joint: list[str] = (), method_order: list[str] | None = None,
                      batch_size: int = BATCH_SIZE) -> tuple[dict, dict, tuple]:
    """Return (report, {method: StageManifest}, NMT test (labels, probs)); collective under torchrun."""
    from nmtrec.components.train.checkpoint import read_meta

    last = read_meta(nmt)
    tasks = last.tasks
    methods, metas, nmt_pred = evaluate_methods(dataset_dir, tasks, nmt, first_stage, famo_nmt, joint, batch_size)
    if method_order:  # the config's order, then whatever else was evaluated
        methods = {k: methods[k] for k in [*method_order, *methods] if k in methods}
    report = {"tasks": tasks, "methods": methods, "stages": stage_summaries(metas["nmt"]),
              **oracle_report(dataset_dir, tasks, last.parsed_config().label_map())}
    if "famo+nmt" in metas:
        report["stages_famo_nmt"] = stage_summaries(metas["famo+nmt"])
    report["constraint_audit_passed"] = not any(a["breach"] for s in report["stages"]
                                                for a in s["constraint_audit"] or [])
    # out of sample: every higher task on the test split against its frozen model, paired on the same rows
    report["test_audit_passed"] = not any(a["breach"] for s in report["stages"] for a in s["test_audit"] or [])
    return null_undefined(report, nmt_pred[0]), metas, nmt_pred


def null_undefined(report: dict, labels: np.ndarray) -> dict:
    """Every metric that cannot be computed becomes null, never NaN (report.json stays valid JSON), and
    `null_metrics` says why: {"methods.*.<metric>.<task>": reason} for what the test labels make
    undefined for every method, {"<dotted path>": reason} for any other non-finite number."""
    reasons = {}
    for i, task in enumerate(report["tasks"]):
        why = undefined_reason(labels[:, i], repr(task))
        for kind in ("auc", "gauc"):
            if kind == "gauc" and why is None:  # AUC is defined: gAUC is not only when no user has both classes
                why = f"no user has both classes of {task!r} in the test split: gAUC averages over such users"
            if any(_nan(m.get(kind, {}).get(task)) for m in report["methods"].values()):
                reasons[f"methods.*.{kind}.{task}"] = why or "not a finite number (nan)"
    explained = {k.split(".", 2)[2] for k in reasons}

    def walk(x, path):
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}[{j}]") for j, v in enumerate(x)]
        if _nan(x):
            parts = path.split(".")
            if not (parts[0] == "methods" and ".".join(parts[2:]) in explained):
                reasons[path] = f"not a finite number ({x})"
            return None
        return x

    report = walk(report, "")
    if reasons:
        report["null_metrics"] = reasons
    return report


def _nan(x) -> bool:
    return isinstance(x, float) and not np.isfinite(x)


def write_report(dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None, joint: list[str],
                 method_order: list[str], report_path: str, html_path: str,
                 batch_size: int = BATCH_SIZE) -> tuple[dict, dict | None]:
    """Evaluate, then write report.json and the HTML report (atomically); return (report, NMT's ROC
    points). Collective under torchrun: every process scores its share, rank 0 writes the files."""
    import torch.distributed as dist

    from nmtrec.components.common.files import write_json_atomic, write_text_atomic
    from nmtrec.components.common.manifest import read_history
    from nmtrec.components.evaluate.html import render

    report, metas, (labels, probs) = build_full_report(dataset_dir, nmt, first_stage, famo_nmt, joint, method_order,
                                                       batch_size)
    if dist.is_initialized() and dist.get_rank() != 0:
        return report, None
    write_json_atomic(report_path, report, indent=2, allow_nan=False)  # nulls, never NaN (null_undefined)
    title = f"nmtrec: {' > '.join(report['tasks'])}"
    histories = [read_history(nmt, s) for s in metas["nmt"].stages]
    write_text_atomic(html_path, render(report, histories, title=title))
    return report, roc_points(labels, probs)


def roc_points(labels: np.ndarray, probs: np.ndarray, points: int = 200) -> dict | None:
    """NMT's ROC of the primary task, at most `points` points (a ClassificationMetrics artifact holds
    one curve); None when the test split has one class."""
    from sklearn.metrics import roc_curve

    if not 0 < labels[:, 0].sum() < len(labels):
        return None
    fpr, tpr, thr = roc_curve(labels[:, 0], probs[:, 0])
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), points)).astype(int))
    return {"fpr": [float(x) for x in fpr[keep]], "tpr": [float(x) for x in tpr[keep]],
            "threshold": [float(min(x, 1e9)) for x in thr[keep]]}


def log_kfp(report: dict, curve: dict | None, metrics=None, roc=None) -> None:
    """Every finite metric into the KFP Metrics artifact, the ROC points into ClassificationMetrics."""
    import math

    if metrics is not None:
        for method, m in report["methods"].items():
            for kind in ("auc", "gauc", "logloss"):
                for task, value in m[kind].items():
                    if value is not None and not math.isnan(value):
                        metrics.log_metric(f"{method}/{task}/{kind}", value)
    if roc is not None and curve is not None:
        roc.log_roc_curve(curve["fpr"], curve["tpr"], curve["threshold"])


def write_outputs(dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None, joint: list[str],
                  method_order: list[str], report_path: str, html_path: str, metrics=None, roc=None,
                  batch_size: int = BATCH_SIZE) -> dict:
    """Evaluate in this process, write report.json and the HTML report; log KFP metrics if given."""
    report, curve = write_report(dataset_dir, nmt, first_stage, famo_nmt, joint, method_order, report_path, html_path,
                                 batch_size)
    log_kfp(report, curve, metrics, roc)
    return report
