"""Sparse features of a feature spec as one TorchRec EmbeddingBagCollection (pooled).

Each table comes from the spec's vocabularies; a bag feature (e.g. `hist`) shares its table with the
single-id feature it is drawn from (hist items use the item table).
"""
from __future__ import annotations

from typing import Protocol

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType


class FeatureLayout(Protocol):
    """What the models read of a dataset's feature spec (components/common/feature_spec.FeatureSpec
    has these; models/ does not import components/): features in key order with their tables, and
    each table's vocab size."""
    sparse: dict  # feature -> .table
    bags: dict  # bag feature -> .table, .columns
    tables: dict  # table -> .vocab_size


def feature_names(feature_spec: FeatureLayout) -> list[str]:
    """Order of the KeyedJaggedTensor keys and of the pooled embeddings."""
    return list(feature_spec.sparse) + list(feature_spec.bags)


def table_configs(feature_spec: FeatureLayout, embedding_dim: int) -> list[EmbeddingBagConfig]:
    features_of: dict[str, list[str]] = {}
    for name, f in feature_spec.sparse.items():
        features_of.setdefault(f.table, []).append(name)
    for name, f in feature_spec.bags.items():
        features_of.setdefault(f.table, []).append(name)
    return [
        EmbeddingBagConfig(
            name=f"t_{table}",
            embedding_dim=embedding_dim,
            num_embeddings=feature_spec.tables[table].vocab_size,
            feature_names=feats,
            pooling=PoolingType.MEAN if any(f in feature_spec.bags for f in feats) else PoolingType.SUM,
        )
        for table, feats in features_of.items()
    ]


def build_ebc(feature_spec: FeatureLayout, embedding_dim: int, device: str | torch.device = "meta") -> EmbeddingBagCollection:
    return EmbeddingBagCollection(tables=table_configs(feature_spec, embedding_dim), device=torch.device(device))


class FeatureSpecMismatch(ValueError):
    """The dataset's feature spec and the config's `features` section disagree."""


def check_spec(feature_spec: FeatureLayout, features_cfg) -> None:
    """Refuse a dataset whose features are not the ones the model config was written for."""
    problems = []
    sparse, bags, tables = feature_spec.sparse, feature_spec.bags, feature_spec.tables
    if list(sparse) != list(features_cfg.sparse):
        problems.append(f"features.sparse is {list(features_cfg.sparse)} but the dataset has {list(sparse)}")
    if sorted(bags) != sorted(features_cfg.bags):
        problems.append(f"features.bags is {sorted(features_cfg.bags)} but the dataset has {sorted(bags)}")
    for bag, f in bags.items():
        want = features_cfg.bag_tables.get(bag, bag)
        if bag in features_cfg.bags and f.table != want:
            problems.append(f"features.bag_tables.{bag} is {want!r} but the dataset's bag uses table {f.table!r}")
    for name in list(sparse) + list(bags):
        table = (sparse.get(name) or bags[name]).table
        if table not in tables or tables[table].vocab_size < 1:
            problems.append(f"feature {name!r}: table {table!r} has no vocab_size in the feature spec")
    if problems:
        raise FeatureSpecMismatch("feature_spec.json disagrees with the config: " + "; ".join(problems))
