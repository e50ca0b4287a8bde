"""The evaluate step with several processes (components/evaluate/launch.py): `evaluate.nproc: 2` runs the
step under torchrun and writes the same report, KFP metrics and ROC curve as one process; the process
count reaches the step as a run setting, outside its inputs (hence outside its cache key)."""
import json
import subprocess

import pytest
import torch

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.step_inputs import Step, run_settings_json, runtime_config, step_inputs_json
from nmtrec.components.evaluate import launch
from conftest import tiny_config

BATCH = 64  # rows per evaluation batch: the test split is many batches, so both processes score rows


class Logged:
    """Stands in for KFP's Metrics and ClassificationMetrics artifacts."""

    def __init__(self):
        self.metrics, self.roc = {}, None

    def log_metric(self, name, value):
        self.metrics[name] = value

    def log_roc_curve(self, fpr, tpr, threshold):
        self.roc = (fpr, tpr, threshold)


def evaluate_step(cfg, dataset, stage2, out):
    """What the KFP component does: the step's inputs, the run settings from the environment, then evaluate."""
    step_cfg = runtime_config(step_inputs_json(cfg, Step("evaluate")), run_settings_json(cfg))
    out.mkdir()
    logged = Logged()
    launch.evaluate_main(step_cfg, str(dataset), str(stage2), str(stage2.parent / "s1"), None, [],
                         str(out / "report.json"), str(out / "report.html"), logged, logged)
    return json.loads((out / "report.json").read_text()), logged


def test_two_evaluate_processes_give_one_process_report(tiny_dataset, tiny_stage2, tmp_path, monkeypatch):
    dataset = tiny_dataset / "dataset"
    assert FeatureSpec.read(dataset).rows_per_split()["test"] > 4 * BATCH
    cfg = tiny_config(methods=["nmt", "single_task"], evaluate={"batch_size": BATCH})
    launched = []
    real_call = subprocess.call
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd, **kw: launched.append(cmd) or real_call(cmd, **kw))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' threads; the same kernels on both sides
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, one_logged = evaluate_step(cfg, dataset, tiny_stage2, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    assert launched == []  # one process: in the step's own process
    two, two_logged = evaluate_step(cfg.updated(evaluate={"nproc": 2}), dataset, tiny_stage2, tmp_path / "two")
    assert len(launched) == 1 and "--nproc_per_node=2" in launched[0]
    assert two == one  # every metric of every method, audits, oracle: exactly equal
    assert two_logged.metrics == one_logged.metrics and two_logged.metrics["nmt/like/auc"] == one["methods"]["nmt"]["auc"]["like"]
    assert two_logged.roc == one_logged.roc and len(one_logged.roc[0]) > 10
    assert (tmp_path / "two" / "report.html").read_text().count("<th>single_task</th>") == 1


def test_evaluate_process_count_is_a_run_setting():
    """The step's inputs (KFP's cache key covers them) do not change with evaluate.nproc; its batch size
    is an input (tests/test_step_inputs.py checks the compiled pipeline)."""
    one, two = tiny_config(), tiny_config(evaluate={"nproc": 3})
    assert step_inputs_json(two, Step("evaluate")) == step_inputs_json(one, Step("evaluate"))
    assert runtime_config(step_inputs_json(two, Step("evaluate")), run_settings_json(two)).evaluate.nproc == 3
    other_batch = tiny_config(evaluate={"batch_size": 100})
    assert step_inputs_json(other_batch, Step("evaluate")) != step_inputs_json(one, Step("evaluate"))


def test_a_failed_worker_is_one_clear_error(tiny_dataset, tmp_path):
    cfg = tiny_config(evaluate={"nproc": 2})
    with pytest.raises(launch.EvaluateLaunchError, match="evaluate.nproc"):
        launch.evaluate_main(cfg, str(tiny_dataset / "dataset"), str(tmp_path / "missing"), str(tmp_path / "missing"),
                             None, [], str(tmp_path / "r.json"), str(tmp_path / "r.html"))
