"""Oracle AUC: how well each row's true probability (synthetic data only) ranks its label.

It is the quality ceiling of any model on that data; report.json carries it as `oracle_auc`.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.metrics import auc


def oracle_auc(test_table: pa.Table, truth: dict[str, str], tasks: list[str],
               label_of: dict[str, str] | None = None) -> dict[str, float]:
    """{task: AUC of its label against the label's true probability}; tasks without truth or with one
    class are left out. `truth`: label column -> its true-probability column; `label_of`: task -> its
    label column where that is not the task's name."""
    out = {}
    for t in tasks:
        label = (label_of or {}).get(t, t)
        if label not in truth:
            continue
        labels = test_table.column(label).to_numpy()
        if labels.min() == labels.max():
            continue
        out[t] = auc(labels, test_table.column(truth[label]).to_numpy())
    return out


def oracle_report(dataset_dir: str | Path, tasks: list[str], label_of: dict[str, str] | None = None,
                  split: str = "test") -> dict:
    """{"oracle_auc": {task: ...}} when the dataset has true probabilities, else {}."""
    root = Path(dataset_dir)
    spec = FeatureSpec.read(root)
    labels = {(label_of or {}).get(t, t) for t in tasks}
    truth = {label: c for label, c in spec.truth.items() if label in labels}
    files = spec.split_files(split)
    if not truth or not files:
        return {}
    table = pa.concat_tables([pq.read_table(root / f, columns=list(truth) + list(truth.values())) for f in files])
    scores = oracle_auc(table, truth, tasks, label_of)
    return {"oracle_auc": scores} if scores else {}
