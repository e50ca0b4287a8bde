"""Oracle AUC: how well each row's true probability (synthetic data only) ranks its label.

It is the quality ceiling of any model on that data; report.json carries it as `oracle_auc`.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.metrics import auc


def oracle_auc(test_table: pa.Table, truth: dict[str, str], tasks: list[str]) -> dict[str, float]:
    """{task: AUC of the label against its true probability}; tasks without truth or with one class
    are left out."""
    out = {}
    for t in tasks:
        if t not in truth:
            continue
        labels = test_table.column(t).to_numpy()
        if labels.min() == labels.max():
            continue
        out[t] = auc(labels, test_table.column(truth[t]).to_numpy())
    return out


def oracle_report(dataset_dir: str | Path, tasks: list[str], split: str = "test") -> dict:
    """{"oracle_auc": {...}} when the dataset has true probabilities, else {}."""
    root = Path(dataset_dir)
    spec = FeatureSpec.read(root)
    truth = {t: c for t, c in spec.truth.items() if t in tasks}
    files = spec.split_files(split)
    if not truth or not files:
        return {}
    table = pa.concat_tables([pq.read_table(root / f, columns=list(truth) + list(truth.values())) for f in files])
    scores = oracle_auc(table, truth, tasks)
    return {"oracle_auc": scores} if scores else {}
