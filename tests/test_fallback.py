"""A fresh NMT stage that ends significantly worse on a higher task falls back to the previous stage's model
with its own task's parameters trained on it (components/train/fallback.py)."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.train import checkpoint
from nmtrec.components.train.stage import run_stage


@pytest.mark.parametrize("head", ["towers", "shared_score"])
def test_a_fresh_stage_that_breaks_its_constraint_falls_back(tiny_cfg, tiny_dataset, tmp_path, head):
    data = str(tiny_dataset / "dataset")
    cfg = tiny_cfg.updated(model={"head": head}, train={"max_epochs": 3})
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    # stage 2 barely moves from its fresh initialisation: it cannot catch up with stage 1 on like
    slow = cfg.updated(train={"max_epochs": 1, "lr": 1e-7, "embedding_lr": 1e-7})
    meta = run_stage(slow, 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"))

    s = meta.stages[-1]
    assert s.fallback == {"breached": ["like"], "epochs": 1 if head == "towers" else 0}
    assert not any(a["breach"] for a in s.constraint_audit + s.test_audit)
    assert s.constraint_audit[0]["mean_loss_change"] == pytest.approx(0.0, abs=1e-9)
    # like's predictions are stage 1's (to float32 rounding: a two-task model batches its gates differently)
    _, before, _, _ = predict_checkpoint(str(tmp_path / "s1"), data)
    _, after, _, _ = predict_checkpoint(str(tmp_path / "s2"), data)
    np.testing.assert_allclose(np.broadcast_to(after, (len(after), 2))[:, 0], before[:, 0], rtol=1e-6)


def test_a_stage_that_keeps_its_constraints_does_not_fall_back(tiny_cfg, tiny_dataset, tmp_path):
    """Stage 2 trains longer than stage 1 did: it catches up, and its own result stands."""
    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg.updated(train={"max_epochs": 1}), 0, data, str(tmp_path / "s1"))
    meta = run_stage(tiny_cfg.updated(train={"max_epochs": 4}), 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"))
    s = meta.stages[-1]
    assert s.fallback is None and not any(a["breach"] for a in s.constraint_audit)
    assert s.constraint_audit[0]["mean_loss_change"] != 0.0  # its own model, not stage 1's


def test_the_console_line_says_the_stage_fell_back(tmp_path):
    from nmtrec.pipelines.console import StepRecord, _figure_of

    audit = [{"task": "like", "breach": False}]
    (tmp_path / "stage.json").write_text(json.dumps({"stages": [
        {"valid_loss": {"like": 0.1}, "constraint_audit": [], "epochs": 3},
        {"valid_loss": {"like": 0.1, "click": 0.4}, "lambda_final": {"like": 2.0}, "constraint_audit": audit,
         "epochs": 5, "fallback": {"breached": ["like"], "epochs": 2}}]}))
    line = _figure_of(StepRecord("stage-2-click", "train-stage-2", tmp_path / "log"),
                      {"checkpoint": SimpleNamespace(path=str(tmp_path))})
    assert "audit ok" in line and "fell back to the previous stage's model (like breached" in line


def test_two_processes_fall_back_as_one_does(tiny_cfg, tiny_dataset, tmp_path):
    """The fallback decision and its training are collective: two processes (torchrun, gloo) reach the same
    decision and the same weights as one."""
    data = str(tiny_dataset / "dataset")
    cfg = tiny_cfg.updated(train={"max_epochs": 3})
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    slow = cfg.updated(train={"max_epochs": 1, "lr": 1e-7, "embedding_lr": 1e-7})
    one = run_stage(slow, 1, data, str(tmp_path / "one"), str(tmp_path / "s1")).stages[-1]
    f = tmp_path / "cfg.json"
    f.write_text(slow.updated(train={"nproc": 2}).to_json())
    worker = Path(__file__).with_name("pipeline_worker.py")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker),
                    str(f), "1", data, str(tmp_path / "two"), str(tmp_path / "s1"), "plain"], check=True)
    two = checkpoint.read_meta(tmp_path / "two").stages[-1]
    assert one.fallback == two.fallback == {"breached": ["like"], "epochs": 1}
    a, b = (torch.load(tmp_path / d / checkpoint.UNSHARDED, weights_only=True) for d in ("one", "two"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # the same sums in another order
