"""report.json: every method's test metrics, the NMT stages with their frozen optima, final
multipliers and constraint audits (shape in the README's 'Report' section).

The HTML report's per-stage curves come from the final NMT artifact: it carries every stage's per-step
history (`histories/stage-<k>.json`, named by each StageSummary; components/common/manifest.py)."""
from __future__ import annotations

import numpy as np

from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.evaluate.compare import evaluate_methods
from nmtrec.components.evaluate.oracle import oracle_report

STAGE_KEYS = ("task", "method", "frozen_optima", "lambda_final", "tolerance", "constraint_audit", "epochs",
              "valid_loss", "valid_auc")


def stage_summaries(meta: StageManifest) -> list[dict]:
    return [{k: getattr(s, k) for k in STAGE_KEYS} for s in meta.stages or []]


def build_full_report(dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None = None,
                      joint: list[str] = (), method_order: list[str] | None = None) -> tuple[dict, dict, tuple]:
    """Return (report, {method: StageManifest}, NMT test (labels, probs))."""
    from nmtrec.components.train.checkpoint import read_meta

    tasks = read_meta(nmt).tasks
    methods, metas, nmt_pred = evaluate_methods(dataset_dir, tasks, nmt, first_stage, famo_nmt, joint)
    if method_order:  # the config's order, then whatever else was evaluated
        methods = {k: methods[k] for k in [*method_order, *methods] if k in methods}
    report = {"tasks": tasks, "methods": methods, "stages": stage_summaries(metas["nmt"]),
              **oracle_report(dataset_dir, tasks)}
    if "famo+nmt" in metas:
        report["stages_famo_nmt"] = stage_summaries(metas["famo+nmt"])
    report["constraint_audit_passed"] = not any(a["breach"] for s in report["stages"]
                                                for a in s["constraint_audit"] or [])
    return report, metas, nmt_pred


def write_outputs(dataset_dir: str, nmt: str, first_stage: str, famo_nmt: str | None, joint: list[str],
                  method_order: list[str], report_path: str, html_path: str, metrics=None, roc=None) -> dict:
    """Evaluate, then write report.json and the HTML report (atomically); log KFP metrics if given."""
    import math

    from sklearn.metrics import roc_curve

    from nmtrec.components.common.files import write_json_atomic, write_text_atomic
    from nmtrec.components.common.manifest import read_history
    from nmtrec.components.evaluate.html import render

    report, metas, (labels, probs) = build_full_report(dataset_dir, nmt, first_stage, famo_nmt, joint, method_order)
    write_json_atomic(report_path, report, indent=2, allow_nan=True)
    title = f"nmtrec: {' > '.join(report['tasks'])}"
    histories = [read_history(nmt, s) for s in metas["nmt"].stages]
    write_text_atomic(html_path, render(report, histories, title=title))
    if metrics is not None:
        for method, m in report["methods"].items():
            for kind in ("auc", "gauc", "logloss"):
                for task, value in m[kind].items():
                    if value is not None and not math.isnan(value):
                        metrics.log_metric(f"{method}/{task}/{kind}", value)
    if roc is not None:  # NMT's ROC of the primary task (a ClassificationMetrics artifact holds one curve)
        fpr, tpr, thr = roc_curve(labels[:, 0], probs[:, 0])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
        roc.log_roc_curve([float(x) for x in fpr[keep]], [float(x) for x in tpr[keep]],
                          [float(min(x, 1e9)) for x in thr[keep]])
    return report
