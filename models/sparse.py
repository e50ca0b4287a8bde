"""Sparse features of a feature spec as one TorchRec EmbeddingBagCollection (pooled).

Each table comes from the spec's vocabularies; a bag feature (e.g. `hist`) shares its table with the
single-id feature it is drawn from (hist items use the item table).
"""
from __future__ import annotations

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, PoolingType


def feature_names(feature_spec: dict) -> list[str]:
    """Order of the KeyedJaggedTensor keys and of the pooled embeddings."""
    return list(feature_spec["sparse"]) + list(feature_spec["bags"])


def table_configs(feature_spec: dict, embedding_dim: int) -> list[EmbeddingBagConfig]:
    features_of: dict[str, list[str]] = {}
    for name, f in feature_spec["sparse"].items():
        features_of.setdefault(f["table"], []).append(name)
    for name, f in feature_spec["bags"].items():
        features_of.setdefault(f["table"], []).append(name)
    return [
        EmbeddingBagConfig(
            name=f"t_{table}",
            embedding_dim=embedding_dim,
            num_embeddings=feature_spec["tables"][table]["vocab_size"],
            feature_names=feats,
            pooling=PoolingType.MEAN if any(f in feature_spec["bags"] for f in feats) else PoolingType.SUM,
        )
        for table, feats in features_of.items()
    ]


def build_ebc(feature_spec: dict, embedding_dim: int, device: str | torch.device = "meta") -> EmbeddingBagCollection:
    return EmbeddingBagCollection(tables=table_configs(feature_spec, embedding_dim), device=torch.device(device))
