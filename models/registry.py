"""Build a model from the config's `model` section and a feature spec (architectures by name)."""
from __future__ import annotations

from nmtrec.models.mmoe import MMoE
from nmtrec.models.omoe import OMoE
from nmtrec.models.ple import PLE
from nmtrec.models.shared_bottom import SharedBottom
from nmtrec.models.sparse import FeatureLayout, build_ebc, check_spec, feature_names

ARCHITECTURES = {"shared_bottom": SharedBottom, "omoe": OMoE, "mmoe": MMoE, "ple": PLE}


def arch_kwargs(model_cfg) -> dict:
    """The config keys each architecture takes."""
    common = {"head": model_cfg.head, "tower_dims": list(model_cfg.tower_dims),
              "expert_dims": list(model_cfg.expert_dims), "embedding_l2": model_cfg.embedding_l2}
    if model_cfg.arch in ("omoe", "mmoe"):
        common.update(num_experts=model_cfg.num_experts, gate_dims=list(model_cfg.gate_dims))
    elif model_cfg.arch == "ple":
        common.update(levels=model_cfg.ple_levels, specific_experts=model_cfg.specific_experts,
                      shared_experts=model_cfg.shared_experts, gate_dims=list(model_cfg.gate_dims))
    return common


def build_model(model_cfg, feature_spec: FeatureLayout, num_tasks: int, device="meta", features_cfg=None):
    """The unsharded model; the embedding tables live on `device` (meta: DMP materialises them).
    `feature_spec`: the dataset's FeatureSpec (components/common/feature_spec.py) or anything shaped alike."""
    if features_cfg is not None:
        check_spec(feature_spec, features_cfg)
    ebc = build_ebc(feature_spec, model_cfg.embedding_dim, device)
    return ARCHITECTURES[model_cfg.arch](ebc, feature_names(feature_spec), num_tasks, **arch_kwargs(model_cfg))
