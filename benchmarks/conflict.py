"""Planted task conflict on synthetic data: like-only vs equal-weight click+like training of one
shared-bottom model; the like AUC each reaches, beside the oracle AUC (true probabilities).

The generator gives like its own user and item factors, correlated with click's by `--conflict` (0:
unrelated). A shared representation trained on both with equal weights is pulled towards click (12x
more positives), so like, the higher-priority task, should lose AUC against like-only training.
Prints a table, then one JSON line {like_auc_like_only, like_auc_joint, like_auc_drop, oracle_auc, ...}.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--conflict", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--users", type=int, default=1_000)
    p.add_argument("--items", type=int, default=1_000)
    p.add_argument("--seed", type=int, default=0)


def _load(dataset: Path, spec, split: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(dataset / f) for f in spec.split_files(split)])
    return {c: t.column(c).to_numpy() for c in ("user_id", "item_id", "click", "like", "true_click", "true_like")}


def _train(data: dict, valid: dict, sizes: dict, weights: tuple[float, float], epochs: int, seed: int) -> np.ndarray:
    """Shared bottom (user, item embeddings -> MLP) with a click and a like head; returns like scores."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    dim = 16
    user, item = nn.Embedding(sizes["user_id"], dim), nn.Embedding(sizes["item_id"], dim)
    shared = nn.Sequential(nn.Linear(2 * dim, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU())
    heads = nn.Linear(8, 2)
    params = [*user.parameters(), *item.parameters(), *shared.parameters(), *heads.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    u, i = torch.from_numpy(data["user_id"]), torch.from_numpy(data["item_id"])
    y = torch.from_numpy(np.stack([data["click"], data["like"]], 1))
    w = torch.tensor(weights)
    gen = torch.Generator().manual_seed(seed)

    def forward(uu, ii):
        return heads(shared(torch.cat([user(uu), item(ii)], 1)))
    for _ in range(epochs):
        for idx in torch.randperm(len(u), generator=gen).split(1024):
            losses = nn.functional.binary_cross_entropy_with_logits(forward(u[idx], i[idx]), y[idx], reduction="none").mean(0)
            opt.zero_grad()
            (losses * w).sum().backward()
            opt.step()
    with torch.no_grad():
        return forward(torch.from_numpy(valid["user_id"]), torch.from_numpy(valid["item_id"]))[:, 1].numpy()


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table
    from sklearn.metrics import roc_auc_score

    from nmtrec.components.generate.synthetic import SyntheticSpec, generate
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec, run_preprocess

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(SyntheticSpec(rows=args.rows, users=args.users, items=args.items, conflict=args.conflict, seed=args.seed),
                 root / "data.csv")
        spec = run_preprocess(str(root / "data.csv"), str(root / "ds"), PreprocessSpec(
            sparse=["user_id", "item_id"], bags={}, bag_tables={}, labels=["click", "like"], fmt="synthetic",
            seed=args.seed))
        train, test = _load(root / "ds", spec, "train"), _load(root / "ds", spec, "test")
    sizes = spec.vocab_sizes()
    like_only = roc_auc_score(test["like"], _train(train, test, sizes, (0.0, 1.0), args.epochs, args.seed))
    joint = roc_auc_score(test["like"], _train(train, test, sizes, (1.0, 1.0), args.epochs, args.seed))
    result = {
        "rows": args.rows, "users": args.users, "items": args.items, "conflict": args.conflict, "epochs": args.epochs,
        "like_auc_like_only": round(like_only, 4), "like_auc_joint": round(joint, 4),
        "like_auc_drop": round(like_only - joint, 4),
        "oracle_auc": {t: round(roc_auc_score(test[t], test[f"true_{t}"]), 4) for t in ("click", "like")},
    }
    table = Table(title=f"planted conflict {args.conflict}: like AUC on the test split")
    for col in ("training", "like AUC"):
        table.add_column(col, justify="right")
    table.add_row("like only", f"{like_only:.4f}")
    table.add_row("click + like, equal weights", f"{joint:.4f}")
    table.add_row("oracle (true probability)", f"{result['oracle_auc']['like']:.4f}")
    Console().print(table)
    print(json.dumps(result))
    return 0
