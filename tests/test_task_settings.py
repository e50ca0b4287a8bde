"""Per-task settings: a task's own label column, loss and tolerance. The losses against float64
references; end to end, a task whose label column differs from its name trains and scores exactly as
the task named after the column, and appending a task with its own settings reuses the stages above
it from kfp.local's cache."""
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from conftest import tiny_config
from nmtrec.components.common.config import Config, load_config
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.train import paired
from nmtrec.components.train.losses import per_task
from nmtrec.components.train.stage import loss_function, tolerances
from nmtrec.pipelines.cli import main


def _softplus(x):
    return np.logaddexp(0.0, x)


def _reference(z: np.ndarray, y: np.ndarray, names: list[str]) -> list[float]:
    """float64: mean BCE, or the mean of -log sigmoid(z_pos - z_neg) over every pair of the batch."""
    out = []
    for t, name in enumerate(names):
        if name == "bce":
            out.append(np.mean(_softplus(z[:, t]) - y[:, t] * z[:, t]))
        else:
            pos, neg = z[y[:, t] > 0.5, t], z[y[:, t] <= 0.5, t]
            out.append(np.mean([_softplus(n - p) for p in pos for n in neg]))
    return out


@pytest.mark.parametrize("shared_score", [False, True])
def test_each_task_gets_its_own_loss(shared_score):
    rng = np.random.default_rng(0)
    y = (rng.random((64, 3)) < 0.3).astype(np.float32)
    z = rng.normal(size=(64, 1 if shared_score else 3))
    names = ["pairwise", "bce", "pairwise"]
    got = per_task(names)(torch.tensor(z), torch.tensor(y, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), _reference(np.broadcast_to(z, y.shape), y, names), rtol=1e-10)


def test_the_stage_loss_follows_the_task_settings():
    cfg = Config.model_validate({"tasks": ["like", {"name": "buy", "loss": "pairwise"}]})
    rng = np.random.default_rng(1)
    y, z = (rng.random((32, 2)) < 0.4).astype(np.float32), rng.normal(size=(32, 2))
    got = loss_function(cfg)(torch.tensor(z), torch.tensor(y, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, _reference(z, y, ["bce", "pairwise"]), rtol=1e-10)
    # every task BCE: the exact per-row path of mean_losses (epochs.task_losses)
    from nmtrec.components.train.epochs import task_losses
    assert loss_function(Config.model_validate({"tasks": ["like", "buy"]})) is task_losses


def test_row_losses_follow_each_tasks_loss():
    rng = np.random.default_rng(2)
    y, z = (rng.random((300, 2)) < 0.3).astype(np.float32), rng.normal(size=(300, 2))
    got = paired.row_losses(z, y, ["bce", "pairwise"])
    np.testing.assert_array_equal(got[:, 0], paired.row_losses(z[:, :1], y[:, :1], "bce")[:, 0])
    np.testing.assert_array_equal(got[:, 1], paired.row_losses(z[:, 1:], y[:, 1:], "pairwise")[:, 0])
    np.testing.assert_allclose(got[:, 0], _softplus(z[:, 0]) - y[:, 0] * z[:, 0], rtol=1e-12)


def test_a_tasks_tolerance_replaces_the_absolute_part_of_r_j():
    cfg = Config.model_validate({"tasks": [{"name": "like", "tolerance": 0.004}, "click", "share"],
                                 "nmt": {"tolerance": 0.001, "relative_tolerance": 0.1, "constraint_data": "valid"}})
    got = tolerances(cfg, {"like": 0.2, "click": -0.5})
    assert got == pytest.approx({"like": 0.004 + 0.1 * 0.2, "click": 0.001 + 0.1 * 0.5}, rel=1e-15)


# share and follow need positives in every split of 3,000 rows (only on likely rows): like_rate 0.2
SMALL = {"data": {"synthetic": {"rows": 3000, "users": 200, "items": 300, "like_rate": 0.2}},
         "train": {"max_epochs": 1}}


def _only(paths) -> Path:
    found = sorted(paths)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_a_label_setting_trains_and_scores_that_column_and_appending_reuses_the_stages(tmp_path, capsys):
    """Run A: tasks [like, click]. Run B: the second task named `clicked`, label column click (set with
    --set): stage 1 reused, stage 2 trained on click, and its AUC is A's click AUC, under its own name.
    Run C appends `shared` (label share, pairwise loss): stages 1-2 reused, only stage 3 trains."""
    f = tmp_path / "a.yaml"
    f.write_text(yaml.safe_dump(tiny_config(name="labels", **SMALL).as_written()))
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "A")]) == 0
    capsys.readouterr()
    b_sets = ["--set", "tasks=[like, {name: clicked, label: click}]"]
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "B"), *b_sets]) == 0
    assert "stages trained: stage-2-clicked; reused from cache: stage-1-like" in capsys.readouterr().out
    a, b = (json.loads((tmp_path / r / "report.json").read_text()) for r in "AB")
    assert b["tasks"] == ["like", "clicked"]
    for kind in ("auc", "logloss", "gauc"):  # the same column, seeds and data: the same model
        assert b["methods"]["nmt"][kind] == {"like": a["methods"]["nmt"][kind]["like"],
                                             "clicked": a["methods"]["nmt"][kind]["click"]}
    # the oracle reads the label's true probabilities (sklearn on the test split's columns)
    dataset = _only((tmp_path / "A" / "kfp").glob("*/preprocess-dataset/dataset"))
    test = pa.concat_tables([pq.read_table(dataset / p) for p in FeatureSpec.read(dataset).split_files("test")])
    test = test.to_pandas()
    assert b["oracle_auc"]["clicked"] == pytest.approx(roc_auc_score(test["click"], test["true_click"]), abs=1e-12)
    # the effective config, saved with the run, is the file plus the --set
    assert load_config(tmp_path / "B" / "config.yaml") == load_config(f, [b_sets[1]])

    c_tasks = "tasks=[like, {name: clicked, label: click}, {name: shared, label: share, loss: pairwise}]"
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "C"), "--set", c_tasks]) == 0
    assert "stages trained: stage-3-shared; reused from cache: stage-1-like, stage-2-clicked" in capsys.readouterr().out
    assert {p.name for p in _only((tmp_path / "C" / "kfp").glob("*/")).iterdir()} == {"train-stage-3", "evaluate"}
    c = json.loads((tmp_path / "C" / "report.json").read_text())
    assert c["tasks"] == ["like", "clicked", "shared"] and c["stages"][:2] == b["stages"]
    assert set(c["stages"][2]["frozen_optima"]) == {"like", "clicked", "shared"}
    assert c["oracle_auc"]["shared"] == pytest.approx(roc_auc_score(test["share"], test["true_share"]), abs=1e-12)
    stage3 = _only((tmp_path / "C" / "kfp").glob("*/train-stage-3/checkpoint"))
    trained = json.loads((stage3 / "stage.json").read_text())["config"]
    assert Config.model_validate(trained).loss_of("shared") == "pairwise"

    # a checkpoint whose higher task read another label column is refused, the task and labels named
    stage2 = _only((tmp_path / "B" / "kfp").glob("*/train-stage-2/checkpoint"))
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "D"), "--from-checkpoint", str(stage2),
                 "--set", "tasks=[like, {name: clicked, label: follow}, share]"]) == 2
    err = capsys.readouterr().err
    assert "task 'clicked' with {'label': 'click', 'loss': 'bce'}" in err and "'label': 'follow'" in err


def test_the_preflight_checks_the_label_column_not_the_task_name():
    from nmtrec.pipelines.preflight import PreflightError, check_before_run

    ok = Config.model_validate({"tasks": ["like", {"name": "buy", "label": "click"}], "data": {"labels": ["like", "click"]}})
    check_before_run(ok)  # `buy` is no column, its label is
    bad = ok.updated(tasks=["like", {"name": "buy", "label": "share"}])
    with pytest.raises(PreflightError, match=r"tasks\.1\.label: label 'share' \(of task 'buy'\) is not in data\.labels"):
        check_before_run(bad)
