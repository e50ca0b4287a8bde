"""The KFP pipeline compiles and really runs end to end through kfp.local."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from nmtrec.pipelines.cli import main
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


def test_compile_demo_has_every_method_step(tmp_path):
    from nmtrec.components.common.config import load_config
    from nmtrec.pipelines.pipeline import build_pipeline
    from kfp import compiler

    from conftest import ROOT

    cfg = load_config(ROOT / "configs" / "demo.yaml")
    out = tmp_path / "demo.yaml"
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    spec = yaml.safe_load(out.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert "evaluate-all" in tasks
    # famo+nmt's stage 2 starts from NMT's stage 1 (shared)
    famo_stage = [t for t in tasks.values() if t["taskInfo"]["name"].startswith("famo-nmt-stage-2")]
    assert famo_stage[0]["inputs"]["artifacts"]["previous"]["taskOutputArtifact"]["producerTask"] == "train-stage"
    # one joint-training step per baseline, fanned out over the method names
    loop = next(t for t in tasks.values() if "iteratorPolicy" in t or "parameterIterator" in t)
    items = json.loads(loop["parameterIterator"]["items"]["raw"])
    assert items == [m for m in cfg.methods if m in ("equal_weights", "famo") or m.startswith("weight_grid:")]


def test_local_run_from_a_folder_with_decoy_packages(tmp_path):
    """`nmtrec run` end to end (kfp.local), started from a folder that holds its own `models`,
    `components` and `pipelines` packages: every step imports ours (nmtrec.*), not the user's."""
    for name in ("models", "components", "pipelines"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\'s own {name} was imported')\n")
    nmtrec = [str(Path(sys.executable).with_name("nmtrec"))]
    assert subprocess.run(nmtrec + ["--help"], cwd=tmp_path, capture_output=True).returncode == 0
    cfg = tiny_config(name="tiny-e2e", methods=["nmt", "single_task", "equal_weights"])
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(json.loads(cfg.to_json())))
    done = subprocess.run(nmtrec + ["run", "--config", "tiny.yaml", "--output", "out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "was imported" not in done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["tasks"] == ["like", "click"]
    assert set(report["methods"]["nmt"]["auc"]) == {"like", "click"}
    assert [s["task"] for s in report["stages"]] == ["like", "click"]
    assert set(report["methods"]) == {"nmt", "single_task", "equal_weights"}
    assert "data:image/png;base64," in (tmp_path / "out" / "report.html").read_text()
    assert "equal_weights" in done.stdout and "report.html" in done.stdout
    # synthetic data carries its true probabilities through generate -> preprocess -> evaluate
    assert set(report["oracle_auc"]) == {"like", "click"}


def test_cli_bad_config_exits_nonzero(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("tasks: []\n")
    assert main(["run", "--config", str(f), "--output", str(tmp_path / "o")]) == 2
    assert "tasks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
