"""`feature_spec.json`: what preprocessing tells training and evaluation about a dataset, typed.

Preprocessing (components/preprocess/beam_pipeline.py) builds a `FeatureSpec` and `write`s it;
training, evaluation and the models read it with `FeatureSpec.read(dataset_dir)` and attribute access.
The JSON on disk is unchanged (same keys, same order), so datasets written before this class existed
read as they are; keys a reader does not know are ignored.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from nmtrec.components.common.files import write_text_atomic

FILE = "feature_spec.json"
NEEDED_SPLITS = ("train", "valid", "test")  # a task learns on train, stops on valid, is scored on test


class LabelError(ValueError):
    """A task whose label cannot be trained or scored (one class only in a split); names task, split, counts."""


@dataclass(frozen=True)
class SparseColumn:
    """A single-id feature: its embedding table."""
    table: str


@dataclass(frozen=True)
class BagColumn:
    """A multi-id feature (e.g. `hist`) built from several input columns, sharing `table`."""
    table: str
    columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Table:
    """One embedding table's vocabulary (index 0 = null/padding, 1 = out-of-vocabulary)."""
    vocab_size: int
    null_index: int = 0
    oov_index: int = 1
    distinct_ids: int = 0
    oov_ids: int = 0
    vocab: str = ""  # the vocabulary's Parquet file, relative to the dataset directory


@dataclass(frozen=True)
class Split:
    files: list[str] = field(default_factory=list)  # Parquet shards, relative to the dataset directory
    rows: int = 0


@dataclass(frozen=True)
class Sampling:
    """Tenrec's MTL protocol: negatives of `label` kept with `negative_keep_probability`."""
    label: str
    negative_ratio: float
    negative_keep_probability: float


@dataclass(frozen=True)
class FeatureSpec:
    source: str = ""
    format: str = ""
    sparse: dict[str, SparseColumn] = field(default_factory=dict)  # in KeyedJaggedTensor key order
    bags: dict[str, BagColumn] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    truth: dict[str, str] = field(default_factory=dict)  # task -> column of its true probability (synthetic)
    splits: dict[str, Split] = field(default_factory=dict)
    rows_read: int = 0
    bad_rows_skipped: int = 0
    positives: dict[str, int] = field(default_factory=dict)
    # positives of every label per split ({split: {label: count}}); empty in datasets written before it
    split_positives: dict[str, dict[str, int]] = field(default_factory=dict)
    sampling: Optional[Sampling] = None
    split_fractions: list[float] = field(default_factory=list)
    seed: int = 0
    min_count: int = 1

    # -- conversions ---------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["sparse"] = {n: SparseColumn(**f) for n, f in d.get("sparse", {}).items()}
        kw["bags"] = {n: BagColumn(**f) for n, f in d.get("bags", {}).items()}
        kw["tables"] = {n: Table(**t) for n, t in d.get("tables", {}).items()}
        kw["splits"] = {n: Split(**s) for n, s in d.get("splits", {}).items()}
        if d.get("sampling") is not None:
            kw["sampling"] = Sampling(**d["sampling"])
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, dataset_dir: str | Path) -> "FeatureSpec":
        path = Path(dataset_dir) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (not a preprocessed dataset directory?)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a valid feature spec ({e})") from None

    def write(self, dataset_dir: str | Path) -> Path:
        return write_text_atomic(Path(dataset_dir) / FILE, json.dumps(self.to_dict(), indent=2))

    # -- questions readers ask -----------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """Order of the KeyedJaggedTensor keys and of the pooled embeddings: single ids, then bags."""
        return list(self.sparse) + list(self.bags)

    def table_of(self, feature: str) -> str:
        return (self.sparse.get(feature) or self.bags[feature]).table

    def vocab_sizes(self) -> dict[str, int]:
        return {name: t.vocab_size for name, t in self.tables.items()}

    def split_files(self, split: str) -> list[str]:
        return list(self.splits[split].files)

    def rows_per_split(self) -> dict[str, int]:
        return {name: s.rows for name, s in self.splits.items()}

    def label_problems(self, tasks: list[str], splits=NEEDED_SPLITS, label_of: dict[str, str] | None = None) -> list[str]:
        """Why each task's label cannot be trained or scored: a split it needs with no rows, no positives
        or no negatives. Empty when fine, or when the dataset predates per-split counts. `label_of`:
        task -> its label column where that is not the task's name (a task's `label` setting)."""
        out = []
        for task in tasks:
            label = (label_of or {}).get(task, task)
            if label not in self.labels:
                out.append(f"task {task!r}: no label column {label!r} in the dataset (labels: {', '.join(self.labels)})")
                continue
            found = {"no rows": [], "no positives": [], "no negatives": []}
            for split in splits:
                rows = self.splits[split].rows if split in self.splits else 0
                pos = self.split_positives.get(split, {}).get(label)
                if rows == 0:
                    found["no rows"].append(split)
                elif pos == 0:
                    found["no positives"].append(f"{split} (0 of {rows:,} rows positive)")
                elif pos == rows:
                    found["no negatives"].append(f"{split} ({pos:,} of {rows:,} rows positive)")
            out += [f"task {task!r}: label {label!r} has {what} in split(s) {', '.join(where)}"
                    for what, where in found.items() if where]
        return out

    def check_labels(self, tasks: list[str], where: str = "", label_of: dict[str, str] | None = None) -> None:
        """LabelError naming every task, split and count that makes training or scoring meaningless."""
        problems = self.label_problems(tasks, label_of=label_of)
        if problems:
            raise LabelError(f"{where + ': ' if where else ''}{'; '.join(problems)}. A task needs both classes in "
                             f"{', '.join(NEEDED_SPLITS)}: drop it from `tasks` or use data where it varies")
