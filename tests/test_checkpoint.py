"""Checkpoint integrity and mismatch errors, NaN loss, and resuming a stage after `kill -9`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmtrec.components.common.manifest import StageManifest, read_history
from nmtrec.components.train import checkpoint
from nmtrec.components.train.stage import run_stage
from conftest import tiny_config


@pytest.fixture(scope="module")
def stage1(tiny_dataset, tmp_path_factory):
    cfg = tiny_config(train={"max_epochs": 1, "threads": 1})
    out = tmp_path_factory.mktemp("ck") / "s1"
    run_stage(cfg, 0, str(tiny_dataset / "dataset"), str(out))
    return cfg, out


def copy_of(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_manifest_lists_every_file_and_verifies(stage1):
    _, ck = stage1
    files = json.loads((ck / checkpoint.MANIFEST).read_text())["files"]
    assert {checkpoint.META, checkpoint.UNSHARDED, checkpoint.PLAN} <= set(files)
    assert any(f.startswith(checkpoint.DCP_DIR + "/") for f in files)
    checkpoint.verify(ck)


def test_truncated_checkpoint_is_named(stage1, tmp_path):
    ck = copy_of(stage1[1], tmp_path / "c")
    data_file = next(p for p in (ck / checkpoint.DCP_DIR).iterdir() if p.suffix == ".distcp")
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match=rf"{data_file.name}: truncated"):
        checkpoint.read_meta(ck)


def test_corrupted_checkpoint_is_named(stage1, tmp_path):
    ck = copy_of(stage1[1], tmp_path / "c")
    f = ck / checkpoint.UNSHARDED
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError, match=r"model.pt: corrupted \(sha256"):
        checkpoint.read_meta(ck)


def test_unfinished_checkpoint_is_refused(stage1, tmp_path):
    ck = copy_of(stage1[1], tmp_path / "c")
    (ck / checkpoint.MANIFEST).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="incomplete checkpoint"):
        checkpoint.read_meta(ck)


def test_checkpoint_of_other_model_config_names_the_difference(stage1, tiny_dataset, tmp_path):
    cfg, ck = stage1
    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"expert_dims": [32]})})
    with pytest.raises(checkpoint.CheckpointError, match=r"model.expert_dims: \[16\] vs \[32\]"):
        run_stage(other, 1, str(tiny_dataset / "dataset"), str(tmp_path / "s2"), str(ck))
    assert not (tmp_path / "s2").exists()


def test_feature_spec_mismatch_is_named(tiny_dataset, tmp_path):
    from nmtrec.models.sparse import FeatureSpecMismatch

    cfg = tiny_config(features={"sparse": ["user_id", "item_id"]})
    with pytest.raises(FeatureSpecMismatch, match=r"features.sparse is \['user_id', 'item_id'\]"):
        run_stage(cfg, 0, str(tiny_dataset / "dataset"), str(tmp_path / "s1"))
    assert not (tmp_path / "s1").exists()


def test_nan_loss_names_stage_and_step(tiny_dataset, tmp_path):
    from nmtrec.components.train.epochs import NonFiniteLoss

    cfg = tiny_config(train={"lr": 1e30, "embedding_lr": 1e30, "max_epochs": 2, "threads": 1})
    with pytest.raises(NonFiniteLoss, match=r"stage 1 \(like\): at epoch \d, step \d+: loss is (nan|inf)"):
        run_stage(cfg, 0, str(tiny_dataset / "dataset"), str(tmp_path / "s1"))
    assert not (tmp_path / "s1").exists()


def launch(cfg, data: str, out: Path, tmp: Path) -> subprocess.Popen:
    f = tmp / "cfg.json"
    f.write_text(cfg.to_json())
    return subprocess.Popen([sys.executable, "-m", "nmtrec.components.train.launch", f"@{f}", "0", data, str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill_9_mid_stage_resumes_to_the_uninterrupted_result(tiny_dataset, tmp_path):
    data = str(tiny_dataset / "dataset")
    train = {"batch_size": 64, "max_epochs": 3, "patience": 5, "threads": 1, "checkpoint_every": 5,
             "resume_root": str(tmp_path / "resume")}
    cfg = tiny_config(train=train)
    reference = run_stage(cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume_root": None})}),
                          0, data, str(tmp_path / "ref"))

    proc = launch(cfg, data, tmp_path / "out", tmp_path)
    killed_at = None
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        metas = list((tmp_path / "resume").glob("*/last/stage.json"))
        if metas:
            step = json.loads(metas[0].read_text())["step"]
            if step >= 20:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed_at = step
                break
        time.sleep(0.02)
    assert killed_at is not None, "the stage finished before it could be killed"
    assert not (tmp_path / "out").exists()

    proc = launch(cfg, data, tmp_path / "out", tmp_path)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    resumed = int(log.split("at step ")[1].split()[0])
    assert killed_at <= resumed < killed_at + train["checkpoint_every"] + 1  # lost at most one interval
    meta = checkpoint.read_meta(tmp_path / "out")
    steps = read_history(tmp_path / "out", meta.stages[0])["step"]
    assert steps == list(range(1, len(steps) + 1))  # the counter continued, no step twice or missing
    assert steps == read_history(tmp_path / "ref", reference.stages[0])["step"]
    a = torch.load(tmp_path / "out" / checkpoint.UNSHARDED, weights_only=True)
    b = torch.load(tmp_path / "ref" / checkpoint.UNSHARDED, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-exact: same data order, states restored
    assert meta.frozen_optima == reference.frozen_optima
    assert not any((tmp_path / "resume").iterdir())  # resume state removed once the stage is done


def test_next_stage_keeps_saved_experts_and_adds_new_task_parts(tmp_path):
    """PLE: the stage adding a task loads the saved experts as the leading rows of its grown expert
    banks; the new task's experts, gate and tower keep their fresh initialisation."""
    from nmtrec.components.train.distributed import init_process_group, shard
    from nmtrec.models.registry import build_model
    from nmtrec.components.common.config import ModelConfig, TrainConfig
    from test_models import SPEC

    device = init_process_group()
    cfg = ModelConfig(arch="ple", ple_levels=2, specific_experts=1, shared_experts=2, embedding_dim=4,
                      expert_dims=[8], tower_dims=[4])

    def sharded(tasks, seed):
        torch.manual_seed(seed)
        return shard(build_model(cfg, SPEC, tasks), device, TrainConfig(), seed=seed)[0]

    one = sharded(1, 0)
    checkpoint.save(tmp_path / "s1", one, StageManifest(tasks=["a"], stage=0, task="a", model_hash="-", config={}))
    saved = checkpoint.unsharded_state_dict(one)
    two = sharded(2, 1)
    fresh = checkpoint.unsharded_state_dict(two)
    checkpoint.load_into(tmp_path / "s1", two, allow_new_heads=True)
    got = checkpoint.unsharded_state_dict(two)
    bank = "levels.1.experts.weights.0"  # rows: 2 shared, task a's, task b's
    assert torch.equal(got[bank][:3], saved[bank]) and torch.equal(got[bank][3:], fresh[bank][3:])
    shared_gate = "levels.0.shared_gate.out.weight"  # one output per expert of level 0
    assert torch.equal(got[shared_gate][:3], saved[shared_gate])
    assert torch.equal(got["towers.1.1.weight"], fresh["towers.1.1.weight"])
    assert torch.equal(got["sparse.embedding_bags.t_item_id.weight"], saved["sparse.embedding_bags.t_item_id.weight"])
    with pytest.raises(checkpoint.CheckpointError, match=r"levels.0.gates.1.out.bias missing from the checkpoint"):
        checkpoint.load_into(tmp_path / "s1", two)  # without allow_new_heads: the new task's parts are missing


def test_compiled_train_steps_carry_the_retry_policy(tmp_path):
    import yaml

    from nmtrec.pipelines.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"tasks": ["like", "click"], "name": "retry",
                                        "train": {"retries": 3, "checkpoint_every": 50, "resume_root": "/mnt/resume"}}))
    assert main(["compile", "--config", str(cfg_file), "--output", str(tmp_path / "p.yaml")]) == 0
    tasks = yaml.safe_load((tmp_path / "p.yaml").read_text())["root"]["dag"]["tasks"]
    stages = {k: v for k, v in tasks.items() if k.startswith("train-stage")}
    assert len(stages) == 2 and all(v["retryPolicy"]["maxRetryCount"] == 3 for v in stages.values())
    assert "retryPolicy" not in tasks["evaluate"]


def test_republish_moves_the_files_under_the_new_manifest_keeping_their_checksums(stage1, tmp_path):
    from dataclasses import replace

    want = json.loads((stage1[1] / checkpoint.MANIFEST).read_text())["files"]
    src = copy_of(stage1[1], tmp_path / "src")
    meta = checkpoint.read_meta(src)
    meta = meta.updated(stages=[*meta.stages[:-1], replace(meta.stages[-1], alternatives=[{"nmt": {}}])])
    checkpoint.republish(src, tmp_path / "out", meta)
    assert checkpoint.read_meta(tmp_path / "out").to_json() == meta.to_json()
    got = json.loads((tmp_path / "out" / checkpoint.MANIFEST).read_text())["files"]
    assert {k: v for k, v in got.items() if k != checkpoint.META} == \
        {k: v for k, v in want.items() if k != checkpoint.META}
    assert not [p for p in src.rglob("*") if p.is_file() and p.name not in (checkpoint.META, checkpoint.MANIFEST)]
    assert not list(tmp_path.glob("*.partial"))

    # a file damaged after training keeps its old checksum: verify names it instead of a new hash hiding it
    src = copy_of(stage1[1], tmp_path / "src2")
    f = src / checkpoint.UNSHARDED
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    checkpoint.republish(src, tmp_path / "out2", meta)
    with pytest.raises(checkpoint.CheckpointError, match=r"model.pt: corrupted \(sha256"):
        checkpoint.read_meta(tmp_path / "out2")
