"""Real sharding on the CPU: 2 processes under torchrun (gloo) against a single process of the same
seed, and checkpoints resharded 2 -> 1 and 1 -> 2 processes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nmtrec.components.common.manifest import read_history
from nmtrec.components.train import checkpoint
from nmtrec.components.train.launch import train_stage_main
from conftest import tiny_config

# 2 processes sum the same numbers in another order (all-reduce, all-to-all); over the 18 steps
# here the weights differ by ~1e-7 (float32 rounding), far below this
TOLERANCE = 1e-5
WORKER = Path(__file__).with_name("dist_worker.py")


def dist_config(sharding: str, nproc: int):
    # shuffle_rows below the split's rows: the epoch streams several shuffle windows (components/train/data.py)
    return tiny_config(train={"batch_size": 256, "max_epochs": 1, "patience": 0, "nproc": nproc,
                              "sharding": [sharding], "threads": 1,
                              "min_column_shard": 4, "shuffle_rows": 1500})


def plain_model(cfg, dataset: Path, ckpt: Path):
    from nmtrec.models.registry import build_model

    from nmtrec.components.common.feature_spec import FeatureSpec

    spec = FeatureSpec.read(dataset)
    model = build_model(cfg.model, spec, len(cfg.tasks[:1]), device="cpu")
    checkpoint.load_unsharded(ckpt, model)
    return model.eval(), spec


@torch.no_grad()
def plain_predictions(cfg, dataset: Path, ckpt: Path) -> np.ndarray:
    from nmtrec.components.train.data import eval_batches, load_split

    model, spec = plain_model(cfg, dataset, ckpt)
    cols = load_split(dataset, spec, "valid", cfg.tasks[:1])
    return torch.cat([model(kjt) for kjt, _, _ in eval_batches(cols, 512)]).numpy()


def run_worker(cfg, dataset: Path, ckpts: list[Path], tmp: Path, nproc: int) -> list[np.ndarray]:
    """Predictions of each checkpoint loaded by `nproc` processes."""
    cfg_file = tmp / f"worker-{nproc}.json"
    cfg_file.write_text(cfg.model_copy(update={"tasks": cfg.tasks[:1]}).to_json())
    outs = [tmp / f"pred-{nproc}-{i}.npy" for i in range(len(ckpts))]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                    str(WORKER), str(cfg_file), str(dataset)] + [str(a) for pair in zip(ckpts, outs) for a in pair],
                   check=True)
    return [np.load(o) for o in outs]


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
            train_stage_main(cfg, 0, data, str(ckpt), None)
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
    if sharding == "column_wise":  # the columns of a table are really split across the processes
        assert any(len(v["shards"]) == 2 and {s["rank"] for s in v["shards"]} == {0, 1} for v in tables.values())
    m1, m2 = checkpoint.read_meta(runs[sharding, 1]), checkpoint.read_meta(runs[sharding, 2])
    assert (m1.world_size, m2.world_size) == (1, 2)
    assert (read_history(runs[sharding, 1], m1.stages[0])["step"]
            == read_history(runs[sharding, 2], m2.stages[0])["step"])


def test_reshard_two_to_one_and_one_to_two(runs, tiny_dataset, tmp_path):
    import importlib.util

    data = tiny_dataset / "dataset"
    spec_ = importlib.util.spec_from_file_location("dist_worker", WORKER)
    worker = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(worker)
    one, two = runs["table_wise", 1], runs["table_wise", 2]
    # the 2-process and the 1-process checkpoints, each loaded by 2 processes with a column-wise plan
    cfg2 = dist_config("column_wise", 2).model_copy(update={"tasks": ["like"]})
    two_by_two, one_by_two = run_worker(cfg2, data, [two, one], tmp_path, 2)
    # ... and by this single process (table-wise, world of one)
    cfg1 = dist_config("table_wise", 1).model_copy(update={"tasks": ["like"]})
    two_by_one = worker.sharded_predictions(cfg1, str(data), str(two))
    one_by_one = worker.sharded_predictions(cfg1, str(data), str(one))
    # 2 -> 1 and 1 -> 2: the same predictions up to float32 rounding (a column-wise plan pools each half of a
    # table on its own process; the summation order, hence the last bits, depends on the CPU's kernels: 2e-8
    # seen on an AVX-512 machine). Rows scrambled by a wrong reshard would move by about the rows' spread.
    np.testing.assert_allclose(two_by_one, two_by_two, rtol=0, atol=1e-6)
    np.testing.assert_allclose(one_by_two, one_by_one, rtol=0, atol=1e-6)
    # the unsharded export serves the same model (plain nn.EmbeddingBag sums in another order)
    np.testing.assert_allclose(plain_predictions(cfg1, data, two), two_by_one, rtol=0, atol=1e-6)
    assert np.ptp(two_by_one) > 1e-2  # the rows' predictions spread far beyond the tolerance


def test_embedding_l2_decays_only_the_rows_a_batch_touches():
    """model.embedding_l2 under the fused optimizer: same batch, same init, with and without it: rows the
    batch looked up differ, all other rows stay equal."""
    from nmtrec.components.train.distributed import init_process_group, shard
    from nmtrec.components.train.epochs import train_step
    from nmtrec.components.train.objectives import SingleTask
    from nmtrec.models.registry import build_model
    from nmtrec.components.common.config import ModelConfig, TrainConfig
    from test_models import SPEC, toy_batch

    device = init_process_group()
    kjt, labels = toy_batch(16)
    users = set(kjt["user_id"].values().tolist())

    def one_step(l2):
        torch.manual_seed(0)
        model = build_model(ModelConfig(embedding_dim=4, expert_dims=[8], tower_dims=[4], embedding_l2=l2), SPEC, 2)
        dmp, opt, _ = shard(model, device, TrainConfig(embedding_lr=0.1), seed=0)
        train_step(dmp, opt, SingleTask(0), kjt, labels)
        return checkpoint.unsharded_state_dict(dmp)["sparse.embedding_bags.t_user_id.weight"]

    plain, decayed = one_step(0.0), one_step(10.0)
    differs = {r for r in range(plain.shape[0]) if not torch.equal(plain[r], decayed[r])}
    assert differs == users


def test_embedding_l2_gradient_equals_explicit_penalty():
    """The gradient the L2 hook adds equals that of loss + l2 * mean_batch ||x||^2 written out."""
    from nmtrec.models.registry import build_model
    from nmtrec.components.common.config import ModelConfig
    from test_models import SPEC, toy_batch

    kjt, labels = toy_batch(16)
    grads = []
    for l2, explicit in ((0.3, False), (0.0, True)):
        torch.manual_seed(0)
        model = build_model(ModelConfig(embedding_dim=4, expert_dims=[8], tower_dims=[4], embedding_l2=l2),
                            SPEC, 2, device="cpu")
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(kjt), labels)
        if explicit:
            loss = loss + 0.3 * model.embed(kjt).pow(2).sum(1).mean()
        loss.backward()
        grads.append(model.sparse.embedding_bags["t_user_id"].weight.grad)
    assert grads[0].abs().max() > 1e-3
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k] + _descendants(k)
    return out


def test_two_process_stage_killed_resumes_on_one_process(tiny_dataset, tmp_path):
    """A 2-process stage loses its processes (kill -9 of torchrun and both workers) and is restarted
    with 1 process (a pod rescheduled with fewer GPUs): it resumes from the last checkpoint, model and
    optimizer state resharded 2 -> 1, and ends where an uninterrupted 1-process run ends."""
    import os
    import signal
    import time

    data = str(tiny_dataset / "dataset")
    # no resume_root: the default, `<stage output>.resume`
    train = {"batch_size": 64, "max_epochs": 1, "patience": 0, "threads": 1, "checkpoint_every": 5,
             "sharding": ["table_wise"], "shuffle_rows": 1500}  # several windows: the resume skips some

    def launch(nproc, out):
        f = tmp_path / f"cfg{nproc}.json"
        f.write_text(tiny_config(train={**train, "nproc": nproc}).to_json())
        return subprocess.Popen([sys.executable, "-m", "nmtrec.components.train.launch", f"@{f}", "0", data, str(tmp_path / out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    proc = launch(2, "out")
    killed_at, deadline = None, time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        metas = list((tmp_path / "out.resume").glob("*/last/stage.json"))
        if metas and json.loads(metas[0].read_text())["step"] >= 20:
            for pid in reversed(_descendants(proc.pid)):  # the workers, then torchrun, then us
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
            killed_at = json.loads(metas[0].read_text())["step"]
            break
        time.sleep(0.02)
    assert killed_at is not None, "the stage finished before it could be killed"
    time.sleep(1)
    assert not (tmp_path / "out").exists()
    log, _ = launch(1, "out").communicate(timeout=300)
    assert "resuming from" in log, log[-2000:]
    resumed = int(log.split("at step ")[1].split()[0])
    assert resumed >= 20
    assert not (tmp_path / "out.resume").exists()  # resume state removed once the stage is done
    train["checkpoint_every"] = 0
    ref_log, _ = launch(1, "ref").communicate(timeout=300)
    a = torch.load(tmp_path / "out" / checkpoint.UNSHARDED, weights_only=True)
    b = torch.load(tmp_path / "ref" / checkpoint.UNSHARDED, weights_only=True)
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a}
    assert max(diffs.values()) < TOLERANCE, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
    rows = json.loads((tiny_dataset / "dataset" / "feature_spec.json").read_text())["splits"]["train"]["rows"]
    steps = rows // train["batch_size"]  # one epoch; training drops the tail that does not fill a batch
    meta = checkpoint.read_meta(tmp_path / "out")
    assert read_history(tmp_path / "out", meta.stages[0])["step"] == list(range(1, steps + 1))
