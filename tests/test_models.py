"""Each architecture on a tiny config: output shapes, which parameters each task's loss reaches, and
the loss falling on a learnable toy problem. Plain (unsharded) modules on the CPU."""
import pytest
import torch
from torchrec import KeyedJaggedTensor

from nmtrec.models.registry import ARCHITECTURES, build_model
from nmtrec.components.common.config import ModelConfig
from nmtrec.components.common.feature_spec import FeatureSpec

SPEC_JSON = {
    "sparse": {"user_id": {"table": "user_id"}, "item_id": {"table": "item_id"}},
    "bags": {"hist": {"table": "item_id", "columns": ["h1", "h2", "h3"]}},
    "tables": {"user_id": {"vocab_size": 20}, "item_id": {"vocab_size": 30}},
}
SPEC = FeatureSpec.from_dict(SPEC_JSON)
ARCH_CFG = {
    "shared_bottom": {"expert_dims": [16, 8]},
    "omoe": {"num_experts": 3, "expert_dims": [16, 8], "gate_dims": [4]},
    "mmoe": {"num_experts": 3, "expert_dims": [16, 8], "gate_dims": [4]},
    "ple": {"ple_levels": 2, "specific_experts": 2, "shared_experts": 1, "expert_dims": [16, 8]},
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread is many times faster than two on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(1, 20, (n,), generator=g)
    items = torch.randint(1, 30, (n,), generator=g)
    lens = torch.randint(0, 4, (n,), generator=g)
    hist = torch.randint(1, 30, (int(lens.sum()),), generator=g)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["user_id", "item_id", "hist"], values=torch.cat([users, items, hist]),
        lengths=torch.cat([torch.ones(2 * n, dtype=torch.long), lens]))
    # task 0 depends on the item, task 1 on the user: learnable from the embeddings
    labels = torch.stack([(items % 3 == 0).float(), (users % 2 == 0).float()], dim=1)
    return kjt, labels


def make(arch: str, head: str = "towers", tasks: int = 2):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, head=head, embedding_dim=4, tower_dims=[4], **ARCH_CFG[arch])
    return build_model(cfg, SPEC, tasks, device="cpu")


def test_every_architecture_is_registered():
    assert set(ARCHITECTURES) == {"shared_bottom", "omoe", "mmoe", "ple"}


@pytest.mark.parametrize("arch", sorted(ARCH_CFG))
@pytest.mark.parametrize("head", ["towers", "shared_score"])
def test_output_shape_and_shared_score(arch, head):
    model = make(arch, head, tasks=3)
    kjt, _ = toy_batch(7)
    out = model(kjt)
    assert out.shape == (7, 3)
    if head == "shared_score":  # one score, returned once per task
        assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    else:
        assert not torch.allclose(out[:, 0], out[:, 1])


def grads_of_task(model, task: int) -> dict[str, torch.Tensor]:
    model.zero_grad()
    kjt, labels = toy_batch(64)
    out = model(kjt)
    torch.nn.functional.binary_cross_entropy_with_logits(out[:, task], labels[:, task]).backward()
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def reached(g: torch.Tensor) -> bool:
    return bool(g.abs().sum() > 0)


@pytest.mark.parametrize("arch", ["omoe", "mmoe"])
def test_moe_gradients_reach_every_expert_and_only_own_gate_and_tower(arch):
    model = make(arch)
    g = grads_of_task(model, 0)
    for n, grad in g.items():
        if n.startswith("experts."):  # every expert of the bank (first dim) gets task 0's gradient
            assert all(reached(grad[e]) for e in range(grad.shape[0])), n
        elif n.startswith(("towers.1", "gates.1")):
            assert not reached(grad), f"task 0's loss reached task 1's {n}"
        elif n.startswith(("towers.0", "gates.0", "gate.")):
            assert reached(grad), n
    assert reached(g["sparse.embedding_bags.t_item_id.weight"])


def test_shared_bottom_gradients():
    model = make("shared_bottom")
    g = grads_of_task(model, 1)
    assert all(reached(v) for n, v in g.items() if n.startswith(("bottom.", "towers.1")))
    assert not any(reached(v) for n, v in g.items() if n.startswith("towers.0"))


def test_ple_task_specific_experts_get_only_their_task():
    model = make("ple")  # 2 levels, 1 shared + 2 specific per task: bank rows [shared, t0, t0, t1, t1]
    g = grads_of_task(model, 0)
    last = g["levels.1.experts.weights.0"]
    assert reached(last[0]) and reached(last[1]) and reached(last[2])  # shared + task 0's own
    assert not reached(last[3]) and not reached(last[4])  # task 1's experts: untouched by task 0
    # level 0 feeds both heads and the shared gate: every expert there is reached
    first = g["levels.0.experts.weights.0"]
    assert all(reached(first[e]) for e in range(first.shape[0]))
    assert reached(g["levels.0.shared_gate.out.weight"]) and reached(g["levels.1.gates.0.out.weight"])
    assert not reached(g["levels.1.gates.1.out.weight"]) and not reached(g["towers.1.1.weight"])


@pytest.mark.parametrize("arch", sorted(ARCH_CFG))
def test_loss_falls_on_learnable_toy_problem(arch):
    model = make(arch)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    kjt, labels = toy_batch(512, seed=1)

    def loss():
        return torch.nn.functional.binary_cross_entropy_with_logits(model(kjt), labels)

    first = loss().item()
    for _ in range(80):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    # the labels are functions of the ids: a working model gets far below the initial ~0.69
    assert loss().item() < 0.5 * first


def test_expert_bank_equals_separate_linear_experts():
    """The batched expert computation is the same function as a loop of per-expert MLPs (float64)."""
    from nmtrec.models.base import ExpertBank

    torch.manual_seed(0)
    bank = ExpertBank(3, 5, [4, 2]).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    out = bank(x)
    for e in range(3):
        h = x
        for w, b in zip(bank.weights, bank.biases):
            h = torch.relu(h @ w[e] + b[e, 0])
        assert torch.allclose(out[e], h, atol=1e-12)
    stacked = torch.randn(3, 6, 5, dtype=torch.float64)  # per-expert inputs (PLE's upper levels)
    h = torch.relu(stacked[1] @ bank.weights[0][1] + bank.biases[0][1, 0])
    h = torch.relu(h @ bank.weights[1][1] + bank.biases[1][1, 0])
    assert torch.allclose(bank(stacked)[1], h, atol=1e-12)


def test_feature_spec_disagreeing_with_config_is_named():
    from nmtrec.models.sparse import FeatureSpecMismatch
    from nmtrec.components.common.config import FeatureConfig

    cfg = FeatureConfig(sparse=["user_id", "item_id", "age"], bags={"hist": ["h1"]}, bag_tables={"hist": "item_id"})
    with pytest.raises(FeatureSpecMismatch, match=r"features.sparse is \['user_id', 'item_id', 'age'\]"):
        build_model(ModelConfig(), SPEC, 2, device="cpu", features_cfg=cfg)


@pytest.mark.parametrize("arch", sorted(ARCH_CFG))
def test_paper_config_builds_every_architecture_at_paper_sizes(arch):
    from pathlib import Path

    from nmtrec.components.common.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert cfg.train.batch_size == 4096 and cfg.model.embedding_l2 == 1e-6
    spec = FeatureSpec.from_dict({**SPEC_JSON, "sparse": {f: {"table": f} for f in cfg.features.sparse},
                                  "tables": {f: {"vocab_size": 50} for f in cfg.features.sparse},
                                  "bags": {"hist": {"table": "item_id", "columns": cfg.features.bags["hist"]}}})
    model = build_model(cfg.model.model_copy(update={"arch": arch}), spec, 2, device="cpu",
                        features_cfg=cfg.features)
    # output widths of the first three expert (or bottom) layers: [E, in, out] banks, [out, in] Linear
    widths = [p.shape[0] if n.startswith("bottom") else p.shape[-1]
              for n, p in model.named_parameters() if ("experts" in n or "bottom" in n) and p.dim() >= 2]
    assert widths[:3] == [512, 512, 512]
    towers = [p.shape[0] for n, p in model.named_parameters() if n.startswith("towers.0") and n.endswith("weight")]
    assert towers == [128, 64, 1]


def _keys_and_shapes(arch: str, head: str, tasks: int) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in make(arch, head, tasks).state_dict().items()}


@pytest.mark.parametrize("arch", sorted(ARCH_CFG))
@pytest.mark.parametrize("head", ["towers", "shared_score"])
@pytest.mark.parametrize("n", [1, 2])
def test_task_hooks_name_exactly_what_appending_a_task_adds(arch, head, n):
    """The model's own account of task-owned state (what checkpoint.load_into asks) equals the
    difference between an n-task and an (n+1)-task model of the same config: new keys are the new
    task's `task_state_keys`, tensors that change shape are `grows_with_tasks` and grow by its
    `task_rows` along dim 0 only."""
    small, big = _keys_and_shapes(arch, head, n), _keys_and_shapes(arch, head, n + 1)
    model = make(arch, head, n + 1)
    assert set(big) - set(small) == model.task_state_keys(n)
    assert not set(small) - set(big)
    grown = {k for k in small if small[k] != big[k]}
    assert grown == model.grows_with_tasks() == set(model.task_rows(n))
    for k in grown:
        rows = model.task_rows(n)[k]
        assert big[k][1:] == small[k][1:] and big[k][0] - small[k][0] == rows.stop - rows.start
        assert rows.stop == big[k][0]  # the new task's rows come last
    # every task's own keys are disjoint and exist
    owned = [model.task_state_keys(t) for t in range(n + 1)]
    assert all(o <= set(big) for o in owned)
    assert sum(len(o) for o in owned) == len(set().union(*owned))
    if head == "shared_score":
        assert not any(owned) and not grown


def test_ple_task_rows_are_the_task_specific_experts():
    model = make("ple")  # 2 levels, 1 shared + 2 specific per task: bank rows [shared, t0, t0, t1, t1]
    rows = model.task_rows(1)
    assert rows["levels.1.experts.weights.0"] == slice(3, 5)
    assert rows["levels.0.shared_gate.out.weight"] == slice(3, 5)
    assert "levels.1.shared_gate.out.weight" not in rows  # the last level has no shared gate
    assert {"towers.1.1.weight", "levels.0.gates.1.out.bias", "levels.1.gates.1.out.weight"} <= model.task_state_keys(1)
