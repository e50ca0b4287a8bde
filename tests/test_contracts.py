"""The typed contracts between steps (components/common): feature_spec.json, stage.json and the
atomic-write helpers."""
import json

import pytest

from nmtrec.components.common import files
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.manifest import StageManifest, StageSummary, read_history


def test_feature_spec_reads_and_writes_the_same_json(tiny_dataset, tmp_path):
    raw = (tiny_dataset / "dataset" / "feature_spec.json").read_text()
    spec = FeatureSpec.read(tiny_dataset / "dataset")
    assert spec.to_dict() == json.loads(raw)
    assert list(spec.to_dict()) == list(json.loads(raw))  # same key order on disk
    spec.write(tmp_path)
    assert (tmp_path / "feature_spec.json").read_text() == raw
    assert spec.feature_names()[:2] == ["user_id", "item_id"] and spec.table_of("hist") == "item_id"
    assert spec.rows_per_split() == {s: v["rows"] for s, v in json.loads(raw)["splits"].items()}


def test_feature_spec_ignores_unknown_keys_and_names_a_missing_file(tmp_path):
    spec = FeatureSpec.from_dict({"labels": ["click"], "future_key": 1, "tables": {"t": {"vocab_size": 3}}})
    assert spec.labels == ["click"] and spec.vocab_sizes() == {"t": 3}
    with pytest.raises(FileNotFoundError, match="feature_spec.json: missing"):
        FeatureSpec.read(tmp_path)


SUMMARY = {"task": "like", "method": "nmt", "frozen_optima": {"like": 0.1}, "lambda_final": {},
           "tolerance": {}, "constraint_audit": [], "train_loss": {"like": 0.1}, "valid_loss": {"like": 0.2},
           "valid_auc": {"like": 0.7}, "epochs": 2}


def test_stage_manifest_round_trip_and_version_1(tmp_path):
    m = StageManifest(tasks=["like"], stage=0, task="like", model_hash="h", config={"seed": 1},
                      frozen_optima={"like": 0.1}, frozen_valid={"like": 0.2}, frozen_valid_auc={"like": 0.7},
                      stages=[StageSummary(**SUMMARY, history="histories/stage-1.json")])
    assert StageManifest.from_json(m.to_json()) == m
    assert '\n  "tasks": [' in m.to_json()  # indented, readable
    # version 1 (before the split): the per-step series inline in each stage summary, no version key
    old = json.loads(m.to_json())
    del old["version"]
    old["stages"][0]["history"] = {"step": [1, 2], "loss": [[0.5], [0.4]], "lambda": [{}, {}]}
    v1 = StageManifest.from_dict(old)
    assert v1.version == 1 and v1.stages[0].history is None
    assert read_history(tmp_path, v1.stages[0])["step"] == [1, 2]
    assert "history" not in v1.to_dict()["stages"][0]  # inline series never written back


def test_stage_artifacts_carry_every_stage_history_outside_the_manifest(tiny_cfg, tiny_dataset, tmp_path):
    from nmtrec.components.train import checkpoint
    from nmtrec.components.train.stage import run_stage

    data = str(tiny_dataset / "dataset")
    run_stage(tiny_cfg, 0, data, str(tmp_path / "s1"))
    m2 = run_stage(tiny_cfg, 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"))
    raw = json.loads((tmp_path / "s2" / "stage.json").read_text())
    assert all(isinstance(s["history"], str) for s in raw["stages"])  # file names, not series
    listed = json.loads((tmp_path / "s2" / checkpoint.MANIFEST).read_text())["files"]
    assert {"histories/stage-1.json", "histories/stage-2.json"} <= set(listed)  # covered by the sha256s
    h1 = read_history(tmp_path / "s2", m2.stages[0])
    assert h1 == read_history(tmp_path / "s1", checkpoint.read_meta(tmp_path / "s1").stages[0])
    h2 = read_history(tmp_path / "s2", m2.stages[1])
    # the default (paired) constraints: one entry per full-validation check, with the multipliers after it
    assert len(h2["step"]) == len(h2["loss"]) == len(h2["lambda"]) > 0 and h2["paired"][-1]["lambda"]


def test_atomic_file_and_dir_leave_nothing_half_written(tmp_path):
    target = tmp_path / "a.json"
    files.write_json_atomic(target, {"x": 1}, fsync=True)
    assert json.loads(target.read_text()) == {"x": 1} and not (tmp_path / "a.json.tmp").exists()
    with pytest.raises(RuntimeError):
        with files.atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert json.loads(target.read_text()) == {"x": 1} and not (tmp_path / "a.json.tmp").exists()
    files.copy_file_atomic(target, tmp_path / "b.json")
    assert (tmp_path / "b.json").read_text() == target.read_text()

    out = tmp_path / "d"
    with files.atomic_dir(out) as tmp:
        (tmp / "f").write_text("1")
        assert not out.exists()
    with pytest.raises(RuntimeError):
        with files.atomic_dir(out) as tmp:
            (tmp / "f").write_text("2")
            raise RuntimeError
    assert (out / "f").read_text() == "1" and not (tmp_path / "d.partial").exists()
    with files.atomic_dir(out, fsync=True) as tmp:
        (tmp / "g").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["g"] and not (tmp_path / "d.old").exists()
