"""Onboarding a lower-priority objective: appending a task reruns only the new stage (kfp.local's
cache), `--from-checkpoint` starts after an earlier run's stage, and a changed model or task order
is refused with the difference named."""
import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from nmtrec.pipelines.cli import main
from nmtrec.components.common.step_inputs import Step, step_inputs_json
from nmtrec.pipelines.local import run_local

# like_rate 0.2: share and follow (only on likely rows) then have positives in every split of 3,000 rows
SMALL = {"data": {"synthetic": {"rows": 3000, "users": 200, "items": 300, "like_rate": 0.2}}, "train": {"max_epochs": 1}}


def write_config(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    return path


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    cfg = tiny_config(name="reuse-two", **SMALL)
    run = run_local(cfg, root / "two")
    return root, cfg, run


def only(paths) -> Path:
    found = sorted(paths)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_appending_a_task_trains_only_the_new_stage(two_task_run, capsys):
    root, cfg, first = two_task_run
    assert first.trained_stages == ["stage-1-like", "stage-2-click"] and first.reused_stages == []
    three = cfg.model_copy(update={"name": "reuse-three", "tasks": ["like", "click", "share"]})
    assert main(["run", "--config", str(write_config(root / "three.yaml", three)), "--output",
                 str(root / "three")]) == 0
    out = capsys.readouterr().out
    assert "stages trained: stage-3-share; reused from cache: stage-1-like, stage-2-click" in out
    # nothing of stages 1-2 (or the data steps) was produced by the second run: only stage 3 and evaluate
    produced = {p.name for p in only((root / "three" / "kfp").glob("*/")).iterdir()}
    assert produced == {"train-stage-3", "evaluate"}, produced
    # stage 3 continued from the first run's stage-2 checkpoint: its frozen optima are carried unchanged
    before = json.loads((root / "two" / "report.json").read_text())["stages"]
    after = json.loads((root / "three" / "report.json").read_text())["stages"]
    assert after[:2] == before and after[2]["task"] == "share"
    assert set(after[2]["frozen_optima"]) == {"like", "click", "share"}


def test_cache_keys_follow_what_a_stage_depends_on():
    cfg = tiny_config(tasks=["like", "click"])
    more = cfg.model_copy(update={"tasks": ["like", "click", "share"], "name": "other"})
    assert [step_inputs_json(more, Step("stage", k)) for k in (0, 1)] == [step_inputs_json(cfg, Step("stage", k)) for k in (0, 1)]
    assert step_inputs_json(more, Step("preprocess")) == step_inputs_json(cfg, Step("preprocess"))
    # a reordered priority or another model changes stage 1's inputs: no stale reuse
    swapped = cfg.model_copy(update={"tasks": ["click", "like"]})
    assert step_inputs_json(swapped, Step("stage", 0)) != step_inputs_json(cfg, Step("stage", 0))
    wider = cfg.model_copy(update={"model": cfg.model.model_copy(update={"embedding_dim": 32})})
    assert step_inputs_json(wider, Step("stage", 0)) != step_inputs_json(cfg, Step("stage", 0))
    assert step_inputs_json(wider, Step("preprocess")) == step_inputs_json(cfg, Step("preprocess"))  # but the data is reused


@pytest.mark.slow
def test_from_checkpoint_starts_at_the_next_stage(two_task_run, tmp_path, capsys):
    root, cfg, _ = two_task_run
    ckpt = only((root / "two" / "kfp").glob("*/train-stage-2/checkpoint"))
    stage1 = only((root / "two" / "kfp").glob("*/train-stage/checkpoint"))
    three = cfg.model_copy(update={"name": "from-ckpt", "tasks": ["like", "click", "follow"]})
    f = write_config(tmp_path / "three.yaml", three)
    start = ["--from-checkpoint", str(ckpt), "--first-stage", str(stage1)]
    # stage 2's checkpoint alone is not enough: the report also evaluates stage 1's model
    assert main(["compile", "--config", str(f), "--output", str(tmp_path / "p.yaml"), *start[:2]]) == 2
    assert "give stage 1's checkpoint of the same run with --first-stage" in capsys.readouterr().err
    # compiled: an importer feeds the first train step, which is stage 3
    assert main(["compile", "--config", str(f), "--output", str(tmp_path / "p.yaml"), *start]) == 0
    dag = yaml.safe_load((tmp_path / "p.yaml").read_text())["root"]["dag"]["tasks"]
    trains = sorted(t for t in dag if t.startswith("train-stage"))
    assert trains == ["train-stage"] and dag["train-stage"]["taskInfo"]["name"] == "stage-3-follow"
    assert dag["train-stage"]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]["producerTask"] == "importer"
    # and run locally
    assert main(["run", "--config", str(f), "--output", str(root / "from-ckpt"), *start]) == 0
    assert "stages trained: stage-3-follow" in capsys.readouterr().out
    report = json.loads((root / "from-ckpt" / "report.json").read_text())
    before = json.loads((root / "two" / "report.json").read_text())["stages"]
    assert report["tasks"] == ["like", "click", "follow"] and report["stages"][:2] == before


@pytest.mark.parametrize("change, message", [
    ({"tasks": ["click", "like", "share"]}, "needs the higher-priority tasks ['click', 'like'] in this order"),
    ({"model": {"embedding_dim": 32}}, "model or features changed"),
    ({"tasks": ["like", "click"]}, "already covers all tasks"),
])
def test_from_checkpoint_refuses_a_mismatch(two_task_run, tmp_path, capsys, change, message):
    root, cfg, _ = two_task_run
    ckpt = only((root / "two" / "kfp").glob("*/train-stage-2/checkpoint"))
    raw = json.loads(cfg.to_json())
    raw["tasks"] = ["like", "click", "share"]
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "o"), "--from-checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "--from-checkpoint" in err and message in err
    assert not (tmp_path / "o").exists()


def test_remote_checkpoint_needs_its_stage(tmp_path, capsys):
    f = write_config(tmp_path / "c.yaml", tiny_config(tasks=["like", "click", "share"]))
    assert main(["compile", "--config", str(f), "--output", str(tmp_path / "p.yaml"),
                 "--from-checkpoint", "s3://bucket/run/stage-2"]) == 2
    assert "needs --from-stage K" in capsys.readouterr().err
    assert main(["compile", "--config", str(f), "--output", str(tmp_path / "p.yaml"),
                 "--from-checkpoint", "s3://bucket/run/stage-2", "--from-stage", "2",
                 "--first-stage", "s3://bucket/run/stage-1"]) == 0
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    importer = spec["deploymentSpec"]["executors"]["exec-importer"]["importer"]
    assert importer["artifactUri"]["constant"] == "s3://bucket/run/stage-2"
    assert importer["typeSchema"]["schemaTitle"] == "system.Model"
    dag = spec["root"]["dag"]["tasks"]
    assert dag["train-stage"]["taskInfo"]["name"] == "stage-3-share"
