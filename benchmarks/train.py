"""Training throughput of the paper-sized MMoE against torch-rechub's MMOE and the GEMM ceiling.

`nmtrec bench train`: in one run, on the same synthetic batches (features, vocab sizes, experts and
batch), (a) our trainer's step (DMP-sharded EmbeddingBagCollection, fused embedding optimizer, fused
dense Adam, batched experts) on batches built beforehand, (b) the same model and step fed by the
streaming reader that training uses (components/train/data.py: a Parquet split read window by window
and batched in its prefetch thread), (c) torch-rechub's MMOE with Adam (the peer), and (d) fp32 GEMMs
of the shapes the dense layers need forward and backward, which bounds any trainer on this CPU. The
last line is JSON: ours_samples_per_s, peer_samples_per_s, ratio_vs_peer, gemm_ceiling_fraction,
streaming_samples_per_s, streaming_ratio_vs_peer, streaming_gemm_ceiling_fraction.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

FEATURES = ["user_id", "item_id", "video_category", "gender", "age"]
HIST_LEN = 10
# the streaming split's row groups, preprocessing's (beam_pipeline.ROW_GROUP_ROWS), one shuffle window
# each: window reads and shuffles fall inside the timed steps (training's default window is 8 row
# groups: the same work per batch in fewer, larger reads)
STREAM_ROWS_PER_GROUP = 1 << 15


def add_arguments(p) -> None:
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--steps", type=int, default=4, help="timed steps per trainer and round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the trainers take turns in each, so load "
                   "from other processes hits all of them alike (median of rounds reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=30000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--skip-peer", action="store_true", help="ours and the ceiling only")


def feature_spec(users: int, items: int):
    from nmtrec.components.common.feature_spec import FeatureSpec

    vocab = {"user_id": users, "item_id": items, "video_category": 40, "gender": 4, "age": 9}
    return FeatureSpec.from_dict({
        "sparse": {f: {"table": f} for f in FEATURES},
        "bags": {"hist": {"table": "item_id", "columns": [f"hist_{i}" for i in range(1, HIST_LEN + 1)]}},
        "tables": {f: {"vocab_size": v} for f, v in vocab.items()}, "labels": ["like", "click"]})


def model_config():
    from nmtrec.components.common.config import ModelConfig

    return ModelConfig(arch="mmoe", embedding_dim=16, num_experts=4, expert_dims=[512, 512, 512],
                       gate_dims=[], tower_dims=[128, 64], embedding_l2=1e-6)


def synthetic_batches(spec, batch: int, count: int, seed: int = 0):
    """`count` batches of ids as numpy arrays: single ids [B, 5], hist [B, 10] (0 = padding), labels [B, 2]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        single = np.stack([rng.integers(1, spec.tables[f].vocab_size, batch) for f in FEATURES], axis=1)
        hist = rng.integers(1, spec.tables["item_id"].vocab_size, (batch, HIST_LEN))
        hist[rng.random((batch, HIST_LEN)) < 0.3] = 0  # some empty slots
        labels = (rng.random((batch, 2)) < 0.3).astype(np.float32)
        out.append((single, hist, labels))
    return out


def to_kjt(single, hist):
    from torchrec import KeyedJaggedTensor

    mask = hist > 0
    lengths = np.concatenate([np.ones(single.size, dtype=np.int64), mask.sum(1)])
    values = np.concatenate([single.T.reshape(-1), hist[mask]])
    return KeyedJaggedTensor.from_lengths_sync(keys=FEATURES + ["hist"], values=torch.from_numpy(values),
                                               lengths=torch.from_numpy(lengths))


def timed(step, inputs) -> float:
    """Seconds per step (mean over `inputs`)."""
    t0 = time.perf_counter()
    for x in inputs:
        step(x)
    return (time.perf_counter() - t0) / len(inputs)


def setup_ours(spec, data):
    """Our trainer's step: returns (step function, inputs)."""
    from nmtrec.components.train.distributed import init_process_group, shard
    from nmtrec.components.train.epochs import train_step
    from nmtrec.components.train.objectives import Objective
    from nmtrec.models.registry import build_model
    from nmtrec.components.common.config import TrainConfig

    class Sum(Objective):
        def loss(self, task_losses):
            return task_losses.sum()

    device = init_process_group()
    torch.manual_seed(0)
    model = build_model(model_config(), spec, 2)
    dmp, dense_opt, _ = shard(model, device, TrainConfig())
    inputs = [(to_kjt(s, h), torch.from_numpy(y)) for s, h, y in data]
    objective = Sum()
    return (lambda x: train_step(dmp, dense_opt, objective, *x)), inputs


def write_split(spec, data, root: Path):
    """`data`'s rows as the train split of a preprocessed dataset in `root` (preprocessing's column types:
    int64 ids, list<int64> bags without the padding, float32 labels); returns it opened for streaming."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.train.data import load_split

    single = np.concatenate([s for s, _, _ in data])
    hist = np.concatenate([h for _, h, _ in data])
    labels = np.concatenate([y for _, _, y in data])
    kept = hist > 0
    offsets = np.concatenate([[0], np.cumsum(kept.sum(1))]).astype(np.int32)
    table = pa.table({**{f: single[:, i] for i, f in enumerate(FEATURES)},
                      "hist": pa.ListArray.from_arrays(pa.array(offsets), pa.array(hist[kept])),
                      **{t: labels[:, j] for j, t in enumerate(spec.labels)}})
    (root / "train").mkdir(parents=True)
    pq.write_table(table, root / "train" / "part-00000.parquet", row_group_size=STREAM_ROWS_PER_GROUP)
    FeatureSpec.from_dict({**spec.to_dict(), "splits": {"train": {"files": ["train/part-00000.parquet"],
                                                                 "rows": len(labels)}}}).write(root)
    return load_split(root, FeatureSpec.read(root), "train", spec.labels)


def setup_streaming(step, split, batch: int):
    """Our step fed by training's reader (shuffled windows, batches built in the prefetch thread): returns
    (step function, inputs, drain). `drain` empties the prefetch queue, so a timed round starts with
    the reader working, not with batches it built while the other trainers ran."""
    from nmtrec.components.train.data import PREFETCH_BATCHES, batches

    stream = batches(split, batch, shuffle_seed=0, window_rows=STREAM_ROWS_PER_GROUP)

    def drain():
        for _ in range(PREFETCH_BATCHES):
            next(stream)

    return (lambda _: step(next(stream))), stream, drain


def stream_batches_needed(args) -> int:
    """Batches the streaming trainer takes: warm-up, each round's drain and steps, and the prefetch
    queue's worth beyond the last, so the reader keeps working until the last timed step."""
    from nmtrec.components.train.data import PREFETCH_BATCHES

    return args.warmup + args.rounds * (PREFETCH_BATCHES + args.steps) + PREFETCH_BATCHES + 2


def setup_peer(spec, data):
    """torch-rechub's MMOE trained with Adam, its documented way: returns (step function, inputs)."""
    from torch_rechub.basic.features import SequenceFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE

    cfg = model_config()
    feats = [SparseFeature(f, vocab_size=spec.tables[f].vocab_size, embed_dim=cfg.embedding_dim)
             for f in FEATURES]
    feats.append(SequenceFeature("hist", vocab_size=spec.tables["item_id"].vocab_size,
                                 embed_dim=cfg.embedding_dim, pooling="mean", shared_with="item_id"))
    torch.manual_seed(0)
    model = MMOE(feats, ["classification", "classification"], n_expert=cfg.num_experts,
                 expert_params={"dims": cfg.expert_dims},
                 tower_params_list=[{"dims": cfg.tower_dims}, {"dims": cfg.tower_dims}])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    loss_fn = torch.nn.BCELoss()

    def step(x):
        inputs, y = x
        pred = model(inputs)
        loss = loss_fn(pred[:, 0], y[:, 0]) + loss_fn(pred[:, 1], y[:, 1])
        opt.zero_grad()
        loss.backward()
        opt.step()

    inputs = [({**{f: torch.from_numpy(s[:, i]) for i, f in enumerate(FEATURES)}, "hist": torch.from_numpy(h)},
               torch.from_numpy(y)) for s, h, y in data]
    return step, inputs


def setup_gemm(batch: int, count: int):
    """A step of the dense layers' GEMMs alone: for every layer (experts batched, gates, towers)
    the forward product and the two backward products (input and weight gradients), fp32."""
    cfg = model_config()
    in_dim = cfg.embedding_dim * (len(FEATURES) + 1)
    shapes = []
    d = in_dim
    for out in cfg.expert_dims:
        shapes += [(d, out)] * cfg.num_experts
        d = out
    shapes += [(in_dim, cfg.num_experts)] * 2  # gates
    for _ in range(2):
        t = cfg.expert_dims[-1]
        for out in cfg.tower_dims + [1]:
            shapes.append((t, out))
            t = out
    mats = [(torch.randn(batch, i), torch.randn(i, o), torch.randn(batch, o)) for i, o in shapes]

    def step(_):
        for x, w, g in mats:
            torch.mm(x, w)
            torch.mm(g, w.t())
            torch.mm(x.t(), g)

    return step, list(range(count))


def run(args) -> int:
    from nmtrec.components.train.distributed import set_threads

    threads = set_threads(args.threads)
    spec = feature_spec(args.users, args.items)
    b = args.batch_size
    data = synthetic_batches(spec, b, args.warmup + args.steps)
    with tempfile.TemporaryDirectory(prefix="nmtrec-bench-train-") as tmp:
        split = write_split(spec, synthetic_batches(spec, b, stream_batches_needed(args), seed=1), Path(tmp))
        ours = setup_ours(spec, data)
        streaming_step, stream, drain = setup_streaming(ours[0], split, b)
        names = {"ours": "ours, batches in memory (TorchRec DMP, fused optimizers)",
                 "streaming": "ours, streaming input (Parquet reader, prefetch thread)",
                 "peer": "torch-rechub 0.9.0 MMOE + Adam", "gemm": "fp32 GEMM ceiling (dense layers fwd+bwd)"}
        trainers = {"ours": ours, "streaming": (streaming_step, list(range(args.warmup + args.steps)))}
        if not args.skip_peer:
            trainers["peer"] = setup_peer(spec, data)
        trainers["gemm"] = setup_gemm(b, args.warmup + args.steps)
        try:
            for step, inputs in trainers.values():
                timed(step, inputs[:args.warmup])
            per_step = {name: [] for name in trainers}
            for _ in tqdm(range(args.rounds), desc="rounds"):
                for name, (step, inputs) in trainers.items():
                    if name == "streaming":
                        drain()
                    per_step[name].append(timed(step, inputs[args.warmup:]))
        finally:
            stream.close()
    rate = {name: b / float(np.median(t)) for name, t in per_step.items()}
    table = Table(title=f"train throughput: paper-sized MMoE, batch {b}, {threads} threads, "
                        f"median of {args.rounds} interleaved rounds")
    table.add_column("trainer")
    table.add_column("samples/s", justify="right")
    for name, v in rate.items():
        table.add_row(names[name], f"{v:,.0f}")
    Console().print(table)
    peer, ceiling = rate.get("peer"), rate["gemm"]

    def vs_peer(x):
        return peer and round(x / peer, 3)
    print(json.dumps({"ours_samples_per_s": round(rate["ours"], 1), "peer_samples_per_s": peer and round(peer, 1),
                      "ratio_vs_peer": vs_peer(rate["ours"]),
                      "gemm_ceiling_fraction": round(rate["ours"] / ceiling, 3), "batch_size": b, "threads": threads,
                      "streaming_samples_per_s": round(rate["streaming"], 1),
                      "streaming_ratio_vs_peer": vs_peer(rate["streaming"]),
                      "streaming_gemm_ceiling_fraction": round(rate["streaming"] / ceiling, 3)}))
    return 0
