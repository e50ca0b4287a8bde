"""Streaming, shardable evaluation (components/evaluate/scoring.py): a split read in batches across many
row groups gives the whole split's predictions in row order, exact AUC and gAUC against scikit-learn,
and the same numbers from 2 processes as from 1."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.evaluate.scoring import predict_checkpoint, task_metrics
from nmtrec.components.train import checkpoint
from nmtrec.components.train.data import load_split, make_batch
from nmtrec.models.registry import build_model
from conftest import tiny_config

WORKER = Path(__file__).with_name("eval_worker.py")
BATCH = 50  # rows per evaluation batch: the test split is many batches and many row groups


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A dataset whose splits are written in row groups of 61 rows, and a stage-1 model trained on it."""
    from nmtrec.components.train.stage import run_stage

    root = tmp_path_factory.mktemp("evalstream")
    data = root / "dataset"
    shutil.copytree(tiny_dataset / "dataset", data)
    spec = FeatureSpec.read(data)
    for split in spec.splits:
        for f in spec.split_files(split):
            pq.write_table(pq.read_table(data / f), data / f, row_group_size=61)
    cfg = tiny_config(train={"max_epochs": 1, "threads": 1})
    run_stage(cfg, 0, str(data), str(root / "s1"))
    return data, root / "s1", cfg


def reference(data: Path, ckpt: Path, cfg):
    """The whole test split in memory, scored in one batch: float64 probabilities, labels, user ids."""
    spec = FeatureSpec.read(data)
    split = load_split(data, spec, "test", cfg.tasks[:1])
    cols = split.columns_of(pa.concat_tables([pq.read_table(f) for f in split.files]))
    model = build_model(cfg.model, spec, 1, device="cpu")
    checkpoint.load_unsharded(ckpt, model)
    model.eval()
    with torch.no_grad():
        kjt, _ = make_batch(cols, np.arange(cols.rows))
        probs = torch.sigmoid(model(kjt)).double().numpy()
    return cols.labels, probs, cols.single[:, list(spec.sparse).index("user_id")]


def sklearn_gauc(labels, scores, users):
    num = den = 0.0
    for u in np.unique(users):
        sel = users == u
        if 0 < labels[sel].sum() < sel.sum():
            num += sel.sum() * roc_auc_score(labels[sel], scores[sel])
            den += sel.sum()
    return num / den


def test_streamed_predictions_are_the_whole_splits_and_metrics_match_sklearn(trained):
    data, ckpt, cfg = trained
    labels, probs, users, meta = predict_checkpoint(str(ckpt), str(data), "test", BATCH)
    ref_labels, ref_probs, ref_users = reference(data, ckpt, cfg)
    assert len(labels) > 5 * BATCH and len(load_split(data, FeatureSpec.read(data), "test", ["like"]).groups) > 5
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(users, ref_users)
    np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=1e-6)
    m = task_metrics(labels, probs, users, meta.tasks)
    y, p = labels[:, 0], probs[:, 0]
    assert m["auc"]["like"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["gauc"]["like"] == pytest.approx(sklearn_gauc(y, p, users), abs=1e-12)
    # and on the reference's float64 probabilities: the streamed evaluation loses nothing that AUC sees
    assert m["auc"]["like"] == pytest.approx(roc_auc_score(y, ref_probs[:, 0]), abs=1e-9)


def test_two_processes_evaluate_exactly_as_one(trained, tmp_path):
    data, ckpt, _ = trained
    torch.set_num_threads(1)  # as the workers (torchrun's default): the same kernels on both sides
    labels, probs, users, meta = predict_checkpoint(str(ckpt), str(data), "test", BATCH)
    out = tmp_path / "two.npz"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER),
                    str(ckpt), str(data), "test", str(BATCH), str(out)], check=True)
    two = np.load(out)
    np.testing.assert_array_equal(two["labels"], labels)
    np.testing.assert_array_equal(two["users"], users)
    np.testing.assert_array_equal(two["probs"], probs)  # each row scored in the same batch as by one process
    assert task_metrics(two["labels"], two["probs"], two["users"], meta.tasks) == task_metrics(labels, probs, users, meta.tasks)
