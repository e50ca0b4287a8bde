"""Training steps through TorchRec's TrainPipelineSparseDist (components/train/pipelined.py). On CUDA the
loop picks it; here, without a GPU, the same class runs on the CPU (gloo, no CUDA streams) when forced,
and must train exactly what the plain loop trains: stage 1, and a paired NMT stage 2 with a warm-up,
paired checks and resume checkpoints between its runs of steps; 1 and 2 processes."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nmtrec.components.common.manifest import read_history
from nmtrec.components.train import checkpoint, epochs
from nmtrec.components.train.objectives import SingleTask
from nmtrec.components.train.pipelined import use_sparse_dist_pipeline
from conftest import tiny_config

WORKER = Path(__file__).with_name("pipeline_worker.py")


class _Objective:
    def __init__(self, post=False):
        self.needs_post_step_losses = post


def test_pipeline_is_chosen_on_cuda_for_objectives_that_look_only_at_the_batch():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert use_sparse_dist_pipeline(cuda, SingleTask(0), None)
    assert not use_sparse_dist_pipeline(cpu, SingleTask(0), None)  # the CPU keeps the plain loop
    assert not use_sparse_dist_pipeline(cuda, _Objective(post=True), None)  # FAMO: losses after the step
    assert not use_sparse_dist_pipeline(cuda, SingleTask(0), object())  # held-out batches inside a step


def config(nproc=1):
    # checkpoint_every 7: resume points cut the epochs into runs of steps besides the paired checks
    return tiny_config(train={"max_epochs": 2, "patience": 1, "threads": 1, "checkpoint_every": 7, "nproc": nproc,
                              "shuffle_rows": 1500},
                       model={"embedding_l2": 1e-4},
                       nmt={"fallback": False})  # compare the constrained stage's own training


def weights(out: Path) -> dict:
    return torch.load(out / checkpoint.UNSHARDED, weights_only=True)


@pytest.fixture(scope="module")
def plain(tiny_dataset, tmp_path_factory):
    from nmtrec.components.train.stage import run_stage

    root, data = tmp_path_factory.mktemp("plain"), str(tiny_dataset / "dataset")
    cfg = config().model_copy(update={"train": config().train.model_copy(update={"resume_root": str(root / "r")})})
    run_stage(cfg, 0, data, str(root / "s1"))
    run_stage(cfg, 1, data, str(root / "s2"), str(root / "s1"))
    return root


def test_pipelined_steps_train_exactly_the_plain_loop_in_one_process(plain, tiny_dataset, tmp_path, monkeypatch):
    from nmtrec.components.train.stage import run_stage

    monkeypatch.setattr(epochs, "use_sparse_dist_pipeline", lambda device, objective, held_out: True)
    built = []
    original = epochs.PipelinedSteps.__init__

    def spy(self, *args):
        original(self, *args)
        built.append(self)

    monkeypatch.setattr(epochs.PipelinedSteps, "__init__", spy)
    data = str(tiny_dataset / "dataset")
    cfg = config().model_copy(update={"train": config().train.model_copy(update={"resume_root": str(tmp_path / "r")})})
    run_stage(cfg, 0, data, str(tmp_path / "s1"))
    run_stage(cfg, 1, data, str(tmp_path / "s2"), str(tmp_path / "s1"))
    # one pipeline a stage, which really pipelined the sharded EmbeddingBagCollection, step after step
    assert len(built) == 2
    for b in built:
        assert [type(m).__name__ for m in b.pipeline._pipelined_modules] == ["ShardedEmbeddingBagCollection"]
    steps = [len(read_history(tmp_path / s, checkpoint.read_meta(tmp_path / s).stages[-1])["step"]) for s in ("s1", "s2")]
    assert [b.pipeline._batch_count for b in built] == steps
    for stage in ("s1", "s2"):
        a, b = weights(plain / stage), weights(tmp_path / stage)
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    ma, mb = checkpoint.read_meta(plain / "s2"), checkpoint.read_meta(tmp_path / "s2")
    ha, hb = read_history(plain / "s2", ma.stages[-1]), read_history(tmp_path / "s2", mb.stages[-1])
    assert ha["loss"] == hb["loss"] and ha["lambda"] == hb["lambda"] and ha["paired"] == hb["paired"]
    assert len(ha["paired"]) > 2  # the stage did run paired checks between runs of pipelined steps


def test_pipelined_steps_with_two_processes_match_the_plain_loop(plain, tiny_dataset, tmp_path):
    data = str(tiny_dataset / "dataset")
    f = tmp_path / "cfg.json"
    f.write_text(config(nproc=2).to_json())
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
                    str(f), "0", data, str(tmp_path / "s1"), "-", "pipelined"], check=True)
    a, b = weights(plain / "s1"), weights(tmp_path / "s1")
    diffs = {k: float((a[k] - b[k]).abs().max()) for k in a}
    # 2 processes sum the same numbers in another order (see test_distributed.py)
    assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("arch", ["shared_bottom", "omoe", "mmoe", "ple"])
@pytest.mark.parametrize("head", ["towers", "shared_score"])
def test_every_architecture_can_be_pipelined_and_steps_as_the_plain_loop(arch, head):
    """The pipeline fx-traces the model to find the sharded module's input: every architecture must
    trace (no control flow on tensors where it looks), and give the plain loop's weights."""
    from nmtrec.components.common.config import ModelConfig, TrainConfig
    from nmtrec.components.train.distributed import init_process_group, shard
    from nmtrec.components.train.epochs import objective_loss
    from nmtrec.components.train.pipelined import PipelinedSteps, PlainSteps
    from nmtrec.models.registry import build_model
    from test_models import SPEC, toy_batch

    device = init_process_group()
    torch.manual_seed(5)
    data = [toy_batch(16) for _ in range(4)]
    got = []
    for steps_cls in (PlainSteps, PipelinedSteps):
        torch.manual_seed(0)
        model = build_model(ModelConfig(arch=arch, head=head, embedding_dim=4, expert_dims=[8], tower_dims=[4],
                                        ple_levels=2, embedding_l2=1e-3), SPEC, 2)
        dmp, opt, _ = shard(model, device, TrainConfig(embedding_lr=0.1), seed=0)
        steps = steps_cls(dmp, opt, device)
        objective = SingleTask(0)
        losses = [float(l[0]) for l, _, _ in steps.run(iter(data), lambda k, y, i: objective_loss(dmp, objective, k, y, "t"))]
        got.append((checkpoint.unsharded_state_dict(dmp), losses))
    (a, la), (b, lb) = got
    assert la == lb and len(la) == 4
    assert all(torch.equal(a[k], b[k]) for k in a)
