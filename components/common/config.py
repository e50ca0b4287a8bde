"""Run configuration: one YAML file describes data, tasks (in priority order), model and training.

Validated with pydantic so that a bad file fails early with the offending key named.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from nmtrec.components.common.cluster import ClusterConfig
from nmtrec.components.common.methods import parse_method
from nmtrec.components.common.overrides import OverrideError, apply_overrides, parse_override, source_of


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
    runner: str = "DirectRunner"  # or dask, FlinkRunner, SparkRunner, DataflowRunner (+ beam_options)
    num_workers: int = Field(1, ge=1)  # DirectRunner processes; dask: LocalCluster processes (no scheduler given)
    beam_options: dict[str, Any] = {}  # Beam's options, e.g. {flink_master: "host:8081"}, {dask_client_address: ...}
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
    # rows of a split one process holds while training: the epoch is a seeded permutation of the row
    # groups, cut into windows of this many rows, each shuffled (components/train/data.py)
    shuffle_rows: int = Field(1 << 18, gt=0)


# The variant an nmt stage also trains by default (nmt.alternatives): half the higher tasks' own loss weight,
# multipliers from 0, epochs feasible only 1 SE better than level. Where a lower task helps the top one, the
# stage as configured sits at the joint curve's 0.5:0.5 point and this one nearer the points weighted
# towards the new task, which dominate it there (README, "Variants of a stage").
DEFAULT_ALTERNATIVE = {"feasible_z": -1.0, "higher_weight": 0.5, "lambda_init": 0.0}

# nmt.preset: the keys a preset pins (every other key stays as configured). "paper": the paper's exact
# form -- projected gradient ascent lambda += tau * g on the training-loss constraints f_j <= f_j* + r_j,
# the raw batch value (no smoothing), no warm-up; tau, lambda_init and r (tolerance, relative_tolerance)
# as configured, the dense learning rate eta is train.lr
NMT_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"multiplier": "gradient", "constraint_data": "train", "ema": 0.0, "warmup_epochs": 0,
              "init": "previous", "anchor": "loss", "higher_weight": 0.0, "alternatives": [],
              "distill_variants": False},
}


class NMTConfig(_Strict):
    # the multipliers' start (1: stage k starts as an equal mix of f_k and the constraint terms)
    lambda_init: float = Field(1.0, ge=0)
    tau: float = Field(0.05, gt=0)  # multiplier step
    # r_j: allowed excess over the frozen optimum (paired: of the mean per-row loss, judged with z SEs)
    tolerance: float = Field(0.0, ge=0)
    ema: float = Field(0.9, ge=0, lt=1)  # smoothing of the per-batch constraint before the λ step
    # valid and train only: r_j also grows with the optimum, r_j = tolerance + relative_tolerance * f_j*
    relative_tolerance: float = Field(0.0, ge=0)
    # multiplier update: "pi" (nuPI on the relative violation, no τ to search) or "gradient" (λ += τ g)
    multiplier: Literal["pi", "gradient"] = "pi"
    # the data the multipliers measure the constraints on: "paired" (default: every higher task's per-row
    # validation losses against the frozen model's on the same rows, a few times an epoch; a task counts
    # as degraded when the mean paired difference exceeds z standard errors), "valid" (held-out batches
    # against the frozen validation loss) or "train" (training batches against the frozen training
    # loss, as the paper)
    constraint_data: Literal["paired", "valid", "train"] = "paired"
    # paired: the audits call a higher task degraded when its mean paired loss change exceeds z standard
    # errors (epochs are judged by feasible_z below); the multipliers aim at no change at all
    z: float = Field(2.0, gt=0)
    checks_per_epoch: int = Field(4, ge=1)  # paired: full-validation measurements per epoch (λ steps)
    # epochs at the start of stage k that train only task k's own parameters (tower, gates) on the frozen
    # shared ones: the new head learns before it can pull the shared layers (0: off)
    warmup_epochs: int = Field(1, ge=0)  # with init: previous only (a fresh model has nothing to keep)
    # where stage k starts: "fresh" (default: a new seeded initialisation; the previous stage's model is
    # the reference and the teacher of the higher tasks) or "previous" (its parameters, as the paper)
    init: Literal["fresh", "previous"] = "fresh"
    # what the multipliers weigh: "distill" (default: each higher task's divergence from the previous
    # stage's predictions on the batch) or "loss" (its training loss minus f_j* + r_j, as the paper)
    anchor: Literal["distill", "loss"] = "distill"
    # each higher task's own loss keeps this weight in stage k's objective beside the multiplier term
    # (1: the higher tasks keep learning with the new one, so they can gain from it; 0: the paper)
    higher_weight: float = Field(1.0, ge=0)
    # paired: an epoch is a candidate for the stage's early stopping when no higher task's paired t
    # exceeds this (0: not worse on average on validation; the audits keep z)
    feasible_z: float = 0.0
    # paired: what the multipliers and the epoch choice hold each higher task at on validation: "level" (no
    # change: t = 0) or "audit" (a margin below level derived from z and the sizes of the validation and test
    # splits, so that a stage held exactly there passes the out-of-sample audit at its nominal rate;
    # components/train/paired.audit_margin)
    aim: Literal["level", "audit"] = "audit"
    # paired: a multiplier does not rise while its task's mean paired change still reaches new lows (a fresh
    # stage k is catching up with the higher tasks; only an excess that has stopped shrinking is a conflict)
    catch_up: bool = True
    # what ends stage k: train.patience epochs in a row without a new kept (best feasible) epoch ("kept"), or
    # without either that or a new best validation f_k ("kept_or_task": while lambda holds a binding
    # constraint near its frozen quality about half the epochs are infeasible; the stage trains on while its
    # task still improves)
    patience_on: Literal["kept_or_task", "kept"] = "kept_or_task"
    # paired: a higher task with a pairwise (ranking) loss is judged by its paired AUC change on validation
    # (DeLong) rather than by its surrogate loss: a ranking score means only its order, and the surrogate
    # can fall while the AUC falls too (its tolerance r_j is then AUC it may lose)
    rank_by_auc: bool = True
    fail_on_breach: bool = False  # constraint audit: fail the stage instead of only flagging a breach
    # a fresh stage whose own model fails its validation audit falls back to the previous stage's model with
    # the new task's own parameters trained on it (components/train/fallback.py); false: keep its own model
    fallback: bool = True
    # a named set of the keys above (NMT_PRESETS); a key it pins may be repeated with the preset's value,
    # any other value is an error naming the key (a run labelled "paper" must be the paper's form)
    preset: Optional[Literal["paper"]] = None
    # variants of the keys above (a mapping each, e.g. {higher_weight: 0.5}): an nmt stage past the first
    # also trains under each and keeps, among those no worse on any higher task's validation loss than
    # the stage as configured, the lowest of its own task's (components/train/alternatives.py; one more
    # stage's training per variant; the default's one variant is what `nmtrec bench priority` judges: README)
    alternatives: list[dict[str, Any]] = Field(default_factory=lambda: [dict(DEFAULT_ALTERNATIVE)],
                                               validate_default=True)
    # with alternatives: the stage also trains one fresh model distilled from all its variants (their averaged
    # predictions) and offers it to the same choice (components/train/objectives/distilled.py; one more
    # stage's training)
    distill_variants: bool = True

    @field_validator("alternatives")
    @classmethod
    def _alternatives_name_nmt_keys(cls, alternatives):
        allowed = set(cls.model_fields) - {"alternatives", "distill_variants"}
        out = []
        for i, alt in enumerate(alternatives):
            unknown = sorted(set(alt) - allowed)
            if unknown:
                raise ValueError(f"alternative {i}: {', '.join(unknown)} not an nmt key (expected some of "
                                 f"{', '.join(sorted(allowed))})")
            try:
                valid = NMTConfig.model_validate({**alt, "alternatives": []})
            except ValidationError as e:
                err = e.errors()[0]
                raise ValueError(f"alternative {i}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
            # the validated values in key order: a variant written otherwise is the same step input
            out.append({k: getattr(valid, k) for k in sorted(alt)})
        return out

    def alternative(self, i: int) -> "NMTConfig":
        """This section with alternative i's keys in place (and no alternatives of its own)."""
        return NMTConfig.model_validate({**self.model_dump(exclude={"alternatives"}), **self.alternatives[i],
                                         "alternatives": []})

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


class EvaluateConfig(_Strict):
    # processes scoring the test split (torchrun, gloo on the CPU: evaluation runs the unsharded model.pt);
    # its own key, not train.nproc, which follows the GPUs of the train pods and the evaluate pod has none
    nproc: int = Field(1, ge=1)
    # rows scored at once; read by the evaluate step (a row's float32 score may differ in its last bits
    # with the batch it is scored in), so unlike nproc it is part of the step's inputs
    batch_size: int = Field(8192, gt=0)


class TaskConfig(_Strict):
    """A task's own settings; each unset one falls back to the run's (written in `tasks` as a mapping:
    `- {name: purchase, label: buy, loss: pairwise, tolerance: 0.001}`)."""
    label: Optional[str] = None  # its label column in the data (default: the task's name)
    loss: Optional[Literal["bce", "pairwise"]] = None  # default: train.loss
    # r_j's absolute part while it constrains lower tasks (default: nmt.tolerance): with paired
    # constraints the mean per-row loss increase the task may spend, beyond which z standard errors count
    tolerance: Optional[float] = Field(None, ge=0)


TASK_KEYS = ("name", *TaskConfig.model_fields)


class Config(_Strict):
    name: str = "nmtrec"
    seed: int = 0
    # in priority order; each a name or a mapping with its own settings (TaskConfig). Code reads the
    # names here and a task's settings through label_of / loss_of / tolerance_of
    tasks: list[str] = Field(min_length=1)
    # filled from the mappings in `tasks` (only tasks with a setting); left out of a dump when empty, so a
    # config without per-task settings dumps (and keys its steps) as before they existed
    task_settings: dict[str, TaskConfig] = {}
    # methods to train and compare; "nmt" is the staged chain, others are baselines beside it
    # (nmt, single_task, equal_weights, famo, famo+nmt, weight_grid:<w1>:<w2>...; pipelines/baselines.py)
    methods: list[str] = ["nmt"]
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    nmt: NMTConfig = NMTConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    # Kubernetes side (image, resources, GPUs, TrainJob); never part of a step's inputs
    cluster: Optional[ClusterConfig] = None

    @model_validator(mode="before")
    @classmethod
    def _split_task_mappings(cls, data):
        """`tasks: [like, {name: buy, loss: pairwise}]` -> tasks (names) + task_settings (by name)."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
            return data
        names, settings = [], dict(data.get("task_settings") or {})
        for i, item in enumerate(data["tasks"]):
            if not isinstance(item, dict):
                names.append(item)
                continue
            unknown = sorted(set(item) - set(TASK_KEYS))
            if unknown or not isinstance(item.get("name"), str) or not item["name"]:
                raise ValueError(f"tasks.{i}: a task written as a mapping needs `name` and may set "
                                 f"{', '.join(TASK_KEYS[1:])}" + (f"; unknown key(s) {unknown}" if unknown else ""))
            name = item["name"]
            if name in settings:
                raise ValueError(f"tasks.{i}: the settings of task {name!r} are given twice")
            settings[name] = {k: v for k, v in item.items() if k != "name"}
            names.append(name)
        return {**data, "tasks": names, "task_settings": settings}

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"tasks must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _task_settings_fit(self):
        stray = [t for t in self.task_settings if t not in self.tasks]
        if stray:
            raise ValueError(f"task_settings: {stray} are not in tasks {self.tasks}")
        # canonical: a label equal to the name and an empty mapping mean the bare name (the same step inputs)
        settings = {}
        for t, s in self.task_settings.items():
            if s.label == t:
                s = s.model_copy(update={"label": None})
            if s.model_dump(exclude_none=True):
                settings[t] = s
        self.task_settings = settings
        return self

    @model_validator(mode="after")
    def _known_methods(self):
        for name in self.methods:
            parse_method(name, len(self.tasks))
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be distinct, got {self.methods}")
        return self

    @model_serializer(mode="wrap")
    def _omit_empty_task_settings(self, handler):
        d = handler(self)
        if not self.task_settings:
            d.pop("task_settings", None)
        return d

    def label_of(self, task: str) -> str:
        """The label column `task` trains and is scored on."""
        s = self.task_settings.get(task)
        return s.label if s is not None and s.label is not None else task

    def labels_of(self, tasks: list[str]) -> list[str]:
        return [self.label_of(t) for t in tasks]

    def label_map(self) -> dict[str, str]:
        """{task: its label column} of every task."""
        return {t: self.label_of(t) for t in self.tasks}

    def loss_of(self, task: str) -> str:
        s = self.task_settings.get(task)
        return s.loss if s is not None and s.loss is not None else self.train.loss

    def tolerance_of(self, task: str) -> float:
        """r_j's absolute part when `task` constrains a lower one."""
        s = self.task_settings.get(task)
        return s.tolerance if s is not None and s.tolerance is not None else self.nmt.tolerance

    def as_written(self) -> dict:
        """The config as a file would write it (JSON types): tasks with settings as mappings, no
        task_settings key; load_config reads it back to an equal Config."""
        d = self.model_dump(mode="json")
        settings = d.pop("task_settings", {})
        d["tasks"] = [{"name": t, **{k: v for k, v in settings[t].items() if v is not None}} if t in settings else t
                      for t in self.tasks]
        return d

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.model_validate_json(text)

    def updated(self, **changes) -> "Config":
        """A copy with top-level keys replaced (a dict is merged into its section), validated again
        (model_copy would skip validation, e.g. a weight grid no longer matching the task count)."""
        d = self.model_dump()
        if "tasks" in changes and "task_settings" not in changes:  # settings follow the tasks that stay
            d["task_settings"] = {t: s for t, s in d.get("task_settings", {}).items()
                                  if t in changes["tasks"]}
        for k, v in changes.items():
            d[k] = {**d[k], **v} if isinstance(v, dict) else v
        return Config.model_validate(d)

    def model_hash(self) -> str:
        """Identity of what a checkpoint depends on: features and model (not data sizes or lr)."""
        key = {"features": self.features.model_dump(), "model": self.model.model_dump()}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read and validate a config file; `overrides` ("key.path=value", components/common/overrides.py)
    change its keys before validation, and an error in one names the key and the --set it came from."""
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
        sets = [parse_override(o) for o in overrides]
        raw = apply_overrides(raw, sets)
    except OverrideError as e:
        raise ConfigError(f"{path}: {e}") from None
    where = f"{path}" + (f" with {' '.join('--set ' + o.text for o in sets)}" if sets else "")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = _error_key(err["loc"], raw)
            msg = err["msg"].removeprefix("Value error, ")
            named = _NAMED_KEY.match(msg)
            if named and (not key or named.group(1).startswith(key + ".")):  # a check naming its key itself
                key, msg = named.group(1), msg[named.end():]
            came = source_of(key, sets) if key else None
            lines.append(f"{key or '<root>'}: {msg}" + (f" (from --set {came.text})" if came else ""))
        # one problem: one line; several: one line each
        listed = f": {lines[0]}" if len(lines) == 1 else "".join(f"\n  {line}" for line in lines)
        raise ConfigError(f"{where}: invalid config{listed}") from None


_NAMED_KEY = re.compile(r"([A-Za-z_]\w*(?:\.\w+)+): ")


def _error_key(loc: tuple, raw: dict) -> str:
    """A validation error's location as the file spells it: task_settings.<name>.x is tasks.<i>.x."""
    parts = [str(p) for p in loc if p != "[key]"]  # [key]: a bad dict key
    if len(parts) >= 2 and parts[0] == "task_settings" and "task_settings" not in raw:
        names = [t.get("name") if isinstance(t, dict) else t for t in raw.get("tasks") or []]
        if parts[1] in names:
            parts[:2] = ["tasks", str(names.index(parts[1]))]
    return ".".join(parts)
