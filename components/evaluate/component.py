"""KFP wrapper: evaluate the last stage's checkpoint, emit report.json and KFP metrics."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


def evaluate(config_json: str, dataset: Input[Dataset], checkpoint: Input[Model], report: Output[Artifact],
             metrics: Output[Metrics]):
    import math

    from components.evaluate.core import build_report, write_json
    from components.logs import setup_logging

    setup_logging()
    result = build_report(checkpoint.path, dataset.path)
    write_json(report.path, result)
    for method, m in result["methods"].items():
        for task, value in m["auc"].items():
            if not math.isnan(value):
                metrics.log_metric(f"{method}/{task}/auc", value)
