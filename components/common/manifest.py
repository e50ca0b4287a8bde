"""`stage.json`: what a training step hands to the next one, typed.

A stage's artifact carries one `StageManifest`: the task order, the stage index and task, the method,
the model hash and the step's config, the world size, the frozen optima of every task so far (training
loss, validation loss and AUC) and one `StageSummary` per stage so far (frozen optima, final
multipliers, tolerances, constraint audit, losses, AUCs, epochs). A joint-training baseline's artifact
carries the same class with `stage = None` and its `valid_loss`, `epochs` and `final_state`.

Per-step series (batch losses, multipliers, held-out losses, per-epoch validation) are not in the
manifest: each stage writes them to a file of its own, `histories/stage-<k>.json` in its artifact, and
every later stage copies the earlier stages' files into its own artifact (each file is bounded by its
stage's steps; the manifest stays small). `StageSummary.history` names the file (relative to the
artifact); `read_history` reads it. Manifests written before this split (version 1) held each stage's
series inline under `stages[i].history`: they still read, and `read_history` returns the inline series.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

VERSION = 2
FILE = "stage.json"
HISTORIES = "histories"


def history_file(stage: int) -> str:
    """The artifact-relative file of stage `stage`'s (0-based) per-step history."""
    return f"{HISTORIES}/stage-{stage + 1}.json"


JOINT_HISTORY = f"{HISTORIES}/joint.json"


@dataclass(frozen=True)
class StageSummary:
    task: str
    method: str
    frozen_optima: dict[str, float]
    lambda_final: dict[str, float]
    tolerance: dict[str, float]
    constraint_audit: list[dict]
    train_loss: dict[str, float]
    valid_loss: dict[str, float]
    valid_auc: dict[str, float]
    epochs: int
    history: Optional[str] = None  # artifact-relative file of the per-step history
    # every higher task on the test split at the end of this stage against its frozen model, paired on
    # the same rows (out of sample: no decision of any stage read the test split)
    test_audit: Optional[list[dict]] = None
    # a fresh stage that broke a higher task's constraint on validation fell back to the previous stage's
    # model with its own task's parameters trained on it (components/train/fallback.py):
    # {"breached": [tasks], "epochs": epochs of that training}
    fallback: Optional[dict] = None
    # nmt.alternatives: every candidate the stage trained, [{"nmt": its keys ({} for the stage's own settings),
    # "distilled_from" [variant indices] for the model distilled from them (nmt.distill_variants), "valid_loss":
    # {task: loss}, "kept": bool}] (components/train/alternatives.py)
    alternatives: Optional[list[dict]] = None
    # a version-1 manifest's inline series; never written back
    inline_history: Optional[dict] = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "StageSummary":
        kw = {k: v for k, v in d.items() if k in _names(cls) and k != "inline_history"}
        if isinstance(kw.get("history"), dict):  # version 1: the series inline
            kw["inline_history"] = kw.pop("history")
        return cls(**kw)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "inline_history"}
        for key in ("history", "test_audit", "fallback"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True, kw_only=True)
class StageManifest:
    version: int = VERSION
    tasks: list[str]
    stage: Optional[int] = None  # 0-based; None: a joint-training baseline (every task at once)
    task: Optional[str] = None  # the stage's task, tasks[stage]
    method: str = "nmt"
    model_hash: str
    world_size: int = 1
    # a checkpoint taken during training (best epoch, resume point): where it was taken
    epoch: Optional[int] = None
    step: Optional[int] = None
    # a finished NMT stage: frozen values of every task so far, one summary per stage so far
    frozen_optima: Optional[dict[str, float]] = None  # training loss
    frozen_valid: Optional[dict[str, float]] = None
    frozen_valid_auc: Optional[dict[str, float]] = None
    frozen_test_auc: Optional[dict[str, float]] = None  # reported only (the out-of-sample audit)
    stages: Optional[list[StageSummary]] = None
    # a finished joint baseline
    valid_loss: Optional[dict[str, float]] = None
    epochs: Optional[int] = None
    final_state: Optional[dict] = None
    history: Optional[str] = None  # artifact-relative file of the baseline's history
    config: dict  # the step's config (JSON form of components/common/config.Config)

    @classmethod
    def from_dict(cls, d: dict) -> "StageManifest":
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in _names(cls)}
        if kw.get("stages") is not None:
            kw["stages"] = [StageSummary.from_dict(s) for s in kw["stages"]]
        if isinstance(kw.get("history"), dict):  # version 1 joint baseline: its validation series inline
            kw.pop("history")
        kw.setdefault("version", 1)
        return cls(**kw)

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = [s.to_dict() for s in value] if f.name == "stages" else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "StageManifest":
        return cls.from_dict(json.loads(text))

    def updated(self, **changes) -> "StageManifest":
        from dataclasses import replace

        return replace(self, **changes)

    def parsed_config(self):
        """The step's config as a `Config`."""
        from nmtrec.components.common.config import Config

        return Config.model_validate(self.config)

    @property
    def is_joint(self) -> bool:
        return self.stage is None


def dump_history(history: dict) -> str:
    """A history as JSON with one line per series (readable, and compact for long series)."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in history.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_history(artifact_dir: str | Path, summary: StageSummary) -> Optional[dict]:
    """One stage's per-step history (`step`, `loss`, `lambda`, `valid`, and `held_out` when the
    multipliers followed held-out batches) from the artifact that lists `summary`; None if it has none."""
    if summary.inline_history is not None:
        return summary.inline_history
    if summary.history is None:
        return None
    return json.loads((Path(artifact_dir) / summary.history).read_text())


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}
