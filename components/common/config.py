"""Run configuration: one YAML file describes data, tasks (in priority order), model and training.

Validated with pydantic so that a bad file fails early with the offending key named.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nmtrec.components.common.cluster import ClusterConfig
from nmtrec.components.common.methods import parse_method


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticConfig(_Strict):
    rows: int = Field(50_000, gt=0)
    users: int = Field(2_000, gt=0)
    items: int = Field(3_000, gt=0)
    latent_dim: int = Field(8, gt=0)
    click_rate: float = Field(0.24, gt=0, lt=1)  # share of rows clicked (Tenrec ctr_data: 24%)
    like_rate: float = Field(0.019, gt=0, lt=1)  # share of rows liked, only on clicks (Tenrec: 1.9%)
    conflict: float = Field(0.0, ge=-1, le=1)  # correlation of the like and click factors (see generate/core.py)
    like_scale: float = Field(1.5, gt=0)  # spread of the like logit (how predictable like is)
    popularity: float = Field(1.0, ge=0)  # Zipf exponent of item popularity
    null_category: float = Field(0.01, ge=0, lt=1)  # share of `\N` video_category
    duplicates: float = Field(0.005, ge=0, lt=1)  # share of rows repeated verbatim
    with_truth: bool = True  # write true_<label> probability columns (-> report.json oracle_auc)


class DataConfig(_Strict):
    source: Literal["synthetic", "tenrec", "tiktok"] = "synthetic"
    path: Optional[str] = None  # CSV file (tenrec/tiktok); ignored for synthetic
    synthetic: SyntheticConfig = SyntheticConfig()
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_count: int = Field(1, ge=1)
    chunk_bytes: int = Field(64 << 20, gt=0)
    runner: str = "DirectRunner"  # or FlinkRunner, SparkRunner, DataflowRunner (+ beam_options)
    num_workers: int = Field(1, ge=1)  # DirectRunner processes (direct_num_workers)
    beam_options: dict[str, Any] = {}  # passed to Beam's PipelineOptions, e.g. {flink_master: "host:8081"}
    # label columns kept in the dataset; default: every label of the format (tenrec/synthetic:
    # click, follow, like, share; tiktok: finish, like)
    labels: Optional[list[str]] = None
    on_bad_rows: Literal["error", "skip"] = "error"  # skip: drop unparsable rows, count them in the spec
    negative_ratio: Optional[float] = Field(None, gt=0)  # Tenrec MTL protocol: 2.0 keeps ~2 negatives per positive
    sample_label: str = "click"  # the label whose positives are all kept when sampling

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, v):
        if any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"train/valid/test fractions must be >= 0 and sum to 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _path_for_files(self):
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data.path is required when data.source is {self.source!r}")
        if self.negative_ratio is not None and self.labels is not None and self.sample_label not in self.labels:
            raise ValueError(f"data.sample_label {self.sample_label!r} is not in data.labels {self.labels}")
        return self


class FeatureConfig(_Strict):
    # single-id categorical columns, each its own embedding table
    sparse: list[str] = ["user_id", "item_id", "video_category", "gender", "age"]
    # multi-id bag features: name -> columns; they share the table of `table`
    bags: dict[str, list[str]] = {"hist": [f"hist_{i}" for i in range(1, 11)]}
    bag_tables: dict[str, str] = {"hist": "item_id"}


class ModelConfig(_Strict):
    arch: Literal["shared_bottom", "omoe", "mmoe", "ple"] = "mmoe"
    # towers: one tower per task; shared_score: one output score for every task (pairwise ranking)
    head: Literal["towers", "shared_score"] = "towers"
    embedding_dim: int = Field(16, gt=0)
    num_experts: int = Field(4, gt=0)  # omoe / mmoe
    expert_dims: list[int] = [64]  # the shared bottom's layers for shared_bottom
    gate_dims: list[int] = []  # hidden layers of each gate (empty: a linear gate)
    tower_dims: list[int] = [32]
    ple_levels: int = Field(1, gt=0)
    specific_experts: int = Field(1, gt=0)  # per task and level (ple)
    shared_experts: int = Field(1, gt=0)  # per level (ple)
    embedding_l2: float = Field(0.0, ge=0)  # L2 on the embeddings a batch looks up (gradient only)


class TrainConfig(_Strict):
    batch_size: int = Field(1024, gt=0)
    lr: float = Field(1e-3, gt=0)
    embedding_lr: float = Field(0.05, gt=0)
    # fused into backward; adam needs CUDA (fbgemm's CPU kernels: rowwise_adagrad, adagrad, sgd)
    embedding_optimizer: Literal["rowwise_adagrad", "adagrad", "sgd", "adam"] = "rowwise_adagrad"
    max_epochs: int = Field(8, gt=0)
    patience: int = Field(1, ge=0)  # epochs without validation improvement before stopping
    nproc: int = Field(1, ge=1)  # processes of a stage (torchrun --nproc_per_node); one per GPU on GPUs
    # sharding types the planner may choose from (CPU/gloo: data_parallel, table_wise, column_wise,
    # table_column_wise; row_wise needs CUDA)
    sharding: list[Literal["data_parallel", "table_wise", "column_wise", "table_column_wise", "row_wise",
                           "table_row_wise"]] = ["table_wise"]
    # smallest column-wise shard (columns); None: TorchRec's default. Set it below embedding_dim to
    # split small tables' columns across processes
    min_column_shard: Optional[int] = Field(None, gt=0)
    threads: int = Field(0, ge=0)  # torch intra-op threads per process; 0: cores / nproc
    # fault tolerance: save a resume checkpoint every N optimiser steps (0: off) under resume_root
    # (default: `<output>/.resume` under `nmtrec run`, else `<stage output>.resume`; on a cluster a
    # persistent volume or the pipeline root); a restarted stage continues from its last one
    checkpoint_every: int = Field(0, ge=0)
    resume_root: Optional[str] = None
    retries: int = Field(0, ge=0)  # KFP retry policy of each train step (a retried step resumes)
    loss: Literal["bce", "pairwise"] = "bce"  # per-task loss (components/train/losses.py)


# nmt.preset: the keys a preset pins (every other key stays as configured). "paper": the paper's exact
# form -- projected gradient ascent lambda += tau * g on the training-loss constraints f_j <= f_j* + r_j,
# the raw batch value (no smoothing), no warm-up; tau, lambda_init and r (tolerance, relative_tolerance)
# as configured, the dense learning rate eta is train.lr
NMT_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"multiplier": "gradient", "constraint_data": "train", "ema": 0.0, "warmup_epochs": 0},
}


class NMTConfig(_Strict):
    lambda_init: float = Field(0.0, ge=0)
    tau: float = Field(0.05, gt=0)  # multiplier step
    tolerance: float = Field(0.0, ge=0)  # r_j: allowed excess over the frozen optimum
    ema: float = Field(0.9, ge=0, lt=1)  # smoothing of the per-batch constraint before the λ step
    # r_j also grows with the optimum: r_j = tolerance + relative_tolerance * f_j* (train and validation)
    relative_tolerance: float = Field(0.0, ge=0)
    # multiplier update: "pi" (nuPI on the relative violation, no τ to search) or "gradient" (λ += τ g)
    multiplier: Literal["pi", "gradient"] = "pi"
    # the data the multipliers measure the constraints on: "paired" (default: every higher task's per-row
    # validation losses against the frozen model's on the same rows, a few times an epoch; a task counts
    # as degraded when the mean paired difference exceeds z standard errors), "valid" (held-out batches
    # against the frozen validation loss) or "train" (training batches against the frozen training
    # loss, as the paper)
    constraint_data: Literal["paired", "valid", "train"] = "paired"
    # paired: a higher task is degraded when its mean paired loss change exceeds z standard errors (the
    # feasibility of an epoch and the audit); the multipliers aim at no change at all
    z: float = Field(2.0, gt=0)
    checks_per_epoch: int = Field(4, ge=1)  # paired: full-validation measurements per epoch (λ steps)
    # epochs at the start of stage k that train only task k's own parameters (tower, gates) on the frozen
    # shared ones: the new head learns before it can pull the shared layers (0: off)
    warmup_epochs: int = Field(1, ge=0)
    fail_on_breach: bool = False  # constraint audit: fail the stage instead of only flagging a breach
    # a named set of the keys above (NMT_PRESETS); a key it pins may be repeated with the preset's value,
    # any other value is an error naming the key (a run labelled "paper" must be the paper's form)
    preset: Optional[Literal["paper"]] = None

    @model_validator(mode="after")
    def _apply_preset(self):
        for key, value in NMT_PRESETS.get(self.preset, {}).items():
            if key in self.model_fields_set and getattr(self, key) != value:
                raise ValueError(f"nmt.{key}: {getattr(self, key)!r} conflicts with nmt.preset {self.preset!r}, "
                                 f"which sets it to {value!r} (drop the key or the preset)")
            setattr(self, key, value)
        return self

    def with_preset(self, name: str) -> "NMTConfig":
        """This section under preset `name`: the keys it pins replaced, every other key kept (a dumped
        section names every key, so adding `preset` alone to it would conflict)."""
        return NMTConfig.model_validate({**self.model_dump(), **NMT_PRESETS[name], "preset": name})


class Config(_Strict):
    name: str = "nmtrec"
    seed: int = 0
    tasks: list[str] = Field(min_length=1)
    # methods to train and compare; "nmt" is the staged chain, others are baselines beside it
    # (nmt, single_task, equal_weights, famo, famo+nmt, weight_grid:<w1>:<w2>...; pipelines/baselines.py)
    methods: list[str] = ["nmt"]
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    nmt: NMTConfig = NMTConfig()
    # Kubernetes side (image, resources, GPUs, TrainJob); never part of a step's inputs
    cluster: Optional[ClusterConfig] = None

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"tasks must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _known_methods(self):
        for name in self.methods:
            parse_method(name, len(self.tasks))
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct, got {self.methods}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.model_validate_json(text)

    def updated(self, **changes) -> "Config":
        """A copy with top-level keys replaced (a dict is merged into its section), validated again
        (model_copy would skip validation, e.g. a weight grid no longer matching the task count)."""
        d = self.model_dump()
        for k, v in changes.items():
            d[k] = {**d[k], **v} if isinstance(v, dict) else v
        return Config.model_validate(d)

    def model_hash(self) -> str:
        """Identity of what a checkpoint depends on: features and model (not data sizes or lr)."""
        key = {"features": self.features.model_dump(), "model": self.model.model_dump()}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"] if p != "[key]") or "<root>"  # [key]: a bad dict key
            lines.append(f"  {key}: {err['msg']}")
        raise ConfigError(f"{path}: invalid config\n" + "\n".join(lines)) from None
