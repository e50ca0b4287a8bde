"""Real sharding on the CPU: 2 processes under torchrun (gloo) against a single process of the same
seed, and checkpoints resharded 2 -> 1 and 1 -> 2 processes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from components.train import checkpoint
from components.train.launch import train_stage_main
from conftest import tiny_config

# 2 processes sum the same numbers in another order (all-reduce, all-to-all); a few steps of Adam
# and Adagrad keep the difference far below this
TOLERANCE = 2e-4
WORKER = Path(__file__).with_name("dist_worker.py")


def dist_config(sharding: str, nproc: int):
    return tiny_config(train={"batch_size": 256, "max_epochs": 1, "patience": 0, "nproc": nproc,
                              "sharding": [sharding], "threads": 1})


def plain_model(cfg, dataset: Path, ckpt: Path):
    from models.registry import build_model

    spec = json.loads((dataset / "feature_spec.json").read_text())
    model = build_model(cfg.model, spec, len(cfg.tasks[:1]), device="cpu")
    checkpoint.load_unsharded(ckpt, model)
    return model.eval(), spec


@torch.no_grad()
def plain_predictions(cfg, dataset: Path, ckpt: Path) -> np.ndarray:
    from components.train.data import eval_batches, load_split

    model, spec = plain_model(cfg, dataset, ckpt)
    cols = load_split(dataset, spec, "valid", cfg.tasks[:1])
    return torch.cat([model(kjt) for kjt, _, _ in eval_batches(cols, 512)]).numpy()


def run_worker(cfg, dataset: Path, ckpt: Path, tmp: Path, nproc: int) -> np.ndarray:
    cfg_file, out = tmp / f"worker-{nproc}.json", tmp / f"pred-{nproc}.npy"
    cfg_file.write_text(cfg.model_copy(update={"tasks": cfg.tasks[:1]}).to_json())
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    str(WORKER), str(cfg_file), str(dataset), str(ckpt), str(out)], check=True)
    return np.load(out)


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """Stage 1 trained by 1 process and by 2 processes (torchrun), for both CPU sharding kinds."""
    root = tmp_path_factory.mktemp("dist")
    data = str(tiny_dataset / "dataset")
    out = {}
    for sharding in ("table_wise", "column_wise"):
        for nproc in (1, 2):
            cfg = dist_config(sharding, nproc)
            ckpt = root / f"{sharding}-{nproc}"
            train_stage_main(cfg.to_json(), 0, data, str(ckpt), None)
            out[sharding, nproc] = ckpt
    return out


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise"])
def test_two_processes_match_one_process(runs, sharding, tiny_dataset):
    one = torch.load(runs[sharding, 1] / checkpoint.UNSHARDED, weights_only=True)
    two = torch.load(runs[sharding, 2] / checkpoint.UNSHARDED, weights_only=True)
    assert one.keys() == two.keys()
    diffs = {k: float((one[k] - two[k]).abs().max()) for k in one}
    assert max(diffs.values()) < TOLERANCE, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    # and they really trained: far from the shared initial weights
    assert float((one["sparse.embedding_bags.t_item_id.weight"]).abs().max()) > 0.05
    plan = json.loads((runs[sharding, 2] / checkpoint.PLAN).read_text())
    tables = {k: v for k, v in plan.items() if "t_" in k}
    assert tables and all(v["sharding_type"] == sharding for v in tables.values())
    used = {s["rank"] for v in tables.values() for s in v["shards"]}
    assert used == {0, 1}  # both processes hold shards
    m1, m2 = checkpoint.read_meta(runs[sharding, 1]), checkpoint.read_meta(runs[sharding, 2])
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m1["stages"][0]["history"]["step"] == m2["stages"][0]["history"]["step"]


def test_reshard_two_to_one_and_one_to_two(runs, tiny_dataset, tmp_path):
    import importlib.util

    data = tiny_dataset / "dataset"
    spec_ = importlib.util.spec_from_file_location("dist_worker", WORKER)
    worker = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(worker)
    cfg = dist_config("table_wise", 1).model_copy(update={"tasks": ["like"]})
    # 2 -> 1: the 2-process checkpoint loaded into this single process (sharded, world of one)
    two = runs["table_wise", 2]
    resharded = worker.sharded_predictions(cfg, str(data), str(two))
    assert np.array_equal(resharded, plain_predictions(cfg, data, two))
    # 1 -> 2: the single-process checkpoint loaded by 2 processes with a column-wise plan
    one = runs["table_wise", 1]
    cfg2 = dist_config("column_wise", 2).model_copy(update={"tasks": ["like"]})
    assert np.array_equal(run_worker(cfg2, data, one, tmp_path, 2), plain_predictions(cfg, data, one))
