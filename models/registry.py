"""Build a model from the config's `model` section and a feature spec (architectures by name)."""
from __future__ import annotations

import torch

from models.mmoe import MMoE
from models.sparse import build_ebc, feature_names

ARCHITECTURES = {"mmoe": MMoE}


def build_model(model_cfg, feature_spec: dict, num_tasks: int, device="meta"):
    ebc = build_ebc(feature_spec, model_cfg.embedding_dim, device)
    arch = ARCHITECTURES[model_cfg.arch]
    return arch(ebc, feature_names(feature_spec), num_tasks, num_experts=model_cfg.num_experts,
                expert_dims=model_cfg.expert_dims, tower_dims=model_cfg.tower_dims)
