"""KFP wrappers: evaluate every method on the test split -> report.json, HTML report with plots,
Metrics and ClassificationMetrics (ROC). Two variants because a KFP input list (dsl.Collected) cannot
be optional: `evaluate` (NMT chain only) and `evaluate_all` (plus the joint-training baselines).
`evaluate.nproc > 1` scores under torchrun (launch.py)."""
from typing import List

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output


def evaluate(config_json: str, dataset: Input[Dataset], checkpoint: Input[Model], first_stage: Input[Model],
             report: Output[Artifact], html: Output[HTML], metrics: Output[Metrics],
             roc: Output[ClassificationMetrics], famo_nmt: Input[Model] = None):
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.evaluate.launch import evaluate_main

    setup_logging()
    evaluate_main(runtime_config(config_json), dataset.path, checkpoint.path, first_stage.path,
                  famo_nmt.path if famo_nmt else None, [], report.path, html.path, metrics, roc)


def evaluate_all(config_json: str, dataset: Input[Dataset], checkpoint: Input[Model], first_stage: Input[Model],
                 joint: Input[List[Model]], report: Output[Artifact], html: Output[HTML], metrics: Output[Metrics],
                 roc: Output[ClassificationMetrics], famo_nmt: Input[Model] = None):
    from nmtrec.components.common.logs import setup_logging
    from nmtrec.components.common.step_inputs import runtime_config
    from nmtrec.components.evaluate.launch import evaluate_main

    setup_logging()
    evaluate_main(runtime_config(config_json), dataset.path, checkpoint.path, first_stage.path,
                  famo_nmt.path if famo_nmt else None, [m.path for m in joint], report.path, html.path, metrics, roc)


