"""What each pipeline step depends on: the one definition of a step's inputs (hence its KFP cache key,
its resume key and its local source digest's companion) and of the settings that only say how it runs.

A step receives `step_inputs(cfg, step)` as its config parameter: the config keys it reads, every other
key at its default. The run-only settings travel beside it in the environment variable RUN_SETTINGS_ENV:
KFP's cache key on a cluster covers the image, the command and the input parameters, not the
environment, and kfp.local's covers only the environment set on the task, not the one its subprocess
inherits. `runtime_config` merges them back inside the step.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Literal

from nmtrec.components.common.config import Config

RUN_SETTINGS_ENV = "NMTREC_RUN_SETTINGS"

# how a step runs, never what it computes: processes, threads, fault tolerance, where Beam runs and
# in which chunks (splits are drawn per line, independent of runner and chunking), the run's name
RUN_ONLY = ("name", "cluster", "train.nproc", "train.threads", "train.retries", "train.checkpoint_every",
            "train.resume_root", "data.runner", "data.num_workers", "data.beam_options", "data.chunk_bytes",
            "evaluate.nproc")

Kind = Literal["generate", "preprocess", "stage", "joint", "evaluate"]

# the config keys each kind of step reads; a step's upstream artifacts (raw data, dataset, checkpoints)
# carry the rest of what it depends on. A training step also reads its tasks' own settings
# (task_settings, `_task_settings_read`)
READS: dict[str, tuple[str, ...]] = {
    "generate": ("seed", "data.synthetic"),
    "preprocess": ("seed", "data", "features"),  # not data.synthetic: the generated file is its input
    "stage": ("seed", "tasks", "features", "model", "train", "nmt"),  # tasks[:k+1]; stage 1: not nmt
    "joint": ("seed", "tasks", "features", "model", "train"),  # its method is a parameter of its own
    "evaluate": ("tasks", "methods", "evaluate"),  # evaluate.nproc: run-only (RUN_ONLY)
}


@dataclass(frozen=True)
class Step:
    kind: Kind
    stage: int = 0  # "stage": 0-based index of the task it trains


def _get(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def _set(d: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        d = d[part]
    d[last] = copy.deepcopy(value)


def _pop(d: dict, key: str) -> None:
    *parents, last = key.split(".")
    for part in parents:
        d = d[part]
    d.pop(last, None)


def _defaults() -> dict:
    return Config(tasks=["-"]).model_dump()


def _read_keys(step: Step) -> tuple[str, ...]:
    if step.kind == "stage" and step.stage == 0:  # one task, no constraints: NMT's settings are not read
        return tuple(k for k in READS["stage"] if k != "nmt")
    return READS[step.kind]


# inside a section a step reads, the keys it does not: run-only settings, and preprocess's generator
def _unread_within(step: Step) -> tuple[str, ...]:
    return RUN_ONLY + (("data.synthetic",) if step.kind == "preprocess" else ())


def step_inputs(cfg: Config, step: Step) -> Config:
    """The config a step is given: what it reads from `cfg`, everything else at its default."""
    full, base = cfg.model_dump(), _defaults()
    out = copy.deepcopy(base)
    for key in _read_keys(step):
        _set(out, key, _get(full, key))
    for key in _unread_within(step):
        _set(out, key, _get(base, key))
    if step.kind == "stage":
        if not 0 <= step.stage < len(cfg.tasks):
            raise ValueError(f"stage {step.stage + 1} does not exist for tasks {cfg.tasks}")
        out["tasks"] = cfg.tasks[:step.stage + 1]
    if step.kind in ("stage", "joint"):
        out["task_settings"] = _task_settings_read(cfg, step, out["tasks"])
    return Config.model_validate(out)


def step_reads(cfg: Config, step: Step) -> dict:
    """Only what a step reads (dotted key -> value, as in `step_inputs`), none of the defaults it is given
    beside: a key for caches that must survive a change of an unread default (a new nmt.* key does not
    change what a joint baseline trains)."""
    inputs = step_inputs(cfg, step).model_dump(mode="json")
    out = {key: _get(inputs, key) for key in _read_keys(step)}
    if step.kind in ("stage", "joint") and inputs.get("task_settings"):  # dumped only when some task has one
        out["task_settings"] = inputs["task_settings"]
    for key in _unread_within(step):
        section, _, rest = key.partition(".")
        if section in out and rest:
            _pop(out[section], rest)
    return out


def _task_settings_read(cfg: Config, step: Step, tasks: list[str]) -> dict:
    """The per-task settings a training step reads: those of its tasks only (so appending a task leaves
    the stages above it unchanged); a tolerance only where it constrains a lower task, i.e. in stage k
    for the higher tasks tasks[:k] (not the stage's own task, not the joint baselines). Evaluation
    reads none: each checkpoint's manifest names the label columns it was trained on."""
    constrains = set(tasks[:step.stage]) if step.kind == "stage" else set()
    out = {}
    for t in tasks:
        s = cfg.task_settings.get(t)
        if s is not None:
            out[t] = s.model_dump() if t in constrains else {**s.model_dump(), "tolerance": None}
    return out


def step_inputs_json(cfg: Config, step: Step) -> str:
    return step_inputs(cfg, step).to_json()


def run_settings(cfg: Config) -> dict:
    """The run-only values of `cfg` (dotted key -> value). With GPUs, a train pod runs one process per GPU."""
    full = cfg.model_dump()
    out = {key: _get(full, key) for key in RUN_ONLY}
    if cfg.cluster is not None and cfg.cluster.gpus:
        out["train.nproc"] = cfg.cluster.gpus
    return out


def run_settings_json(cfg: Config) -> str:
    return json.dumps(run_settings(cfg), sort_keys=True)


def runtime_config(config_json: str, settings_json: str | None = None) -> Config:
    """A step's config inside the step: its inputs plus the run settings of its environment (if any)."""
    settings_json = settings_json if settings_json is not None else os.environ.get(RUN_SETTINGS_ENV)
    cfg = Config.from_json(config_json)
    if not settings_json:
        return cfg
    out = cfg.model_dump()
    for key, value in json.loads(settings_json).items():
        if key not in RUN_ONLY:
            raise ValueError(f"{RUN_SETTINGS_ENV}: {key!r} is not a run-only setting ({', '.join(RUN_ONLY)})")
        _set(out, key, value)
    return Config.model_validate(out)
