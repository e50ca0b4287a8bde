"""The KFP pipeline compiles and really runs end to end through kfp.local."""
import json

import yaml

from pipelines.cli import main
from conftest import tiny_config


def test_compile_has_preprocess_one_step_per_stage_and_evaluate(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"tasks": ["like", "click", "share"], "name": "three"}))
    out = tmp_path / "p.yaml"
    assert main(["compile", "--config", str(cfg_file), "--output", str(out)]) == 0
    spec = yaml.safe_load(out.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {"generate-synthetic", "preprocess-dataset", "evaluate"} <= set(tasks)
    stages = sorted(t for t in tasks if t.startswith("train-stage"))
    assert len(stages) == 3
    # stage k consumes stage k-1's checkpoint
    second = tasks["train-stage-2"]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]
    assert second == {"outputArtifactKey": "checkpoint", "producerTask": "train-stage"}


def test_local_run_writes_report(tmp_path, capsys):
    cfg = tiny_config(name="tiny-e2e")
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    assert main(["run", "--config", str(cfg_file), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["tasks"] == ["like", "click"]
    assert set(report["methods"]["nmt"]["auc"]) == {"like", "click"}
    assert [s["task"] for s in report["stages"]] == ["like", "click"]
    # synthetic data carries its true probabilities through generate -> preprocess -> evaluate
    assert set(report["oracle_auc"]) == {"like", "click"}
    assert "nmt" in capsys.readouterr().out


def test_cli_bad_config_exits_nonzero(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("tasks: []\n")
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "o")]) == 2
    assert "tasks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
