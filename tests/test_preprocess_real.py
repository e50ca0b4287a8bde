"""The real format samples in shared/data (Tenrec sbr_data, ICME TikTok track 1), read end to end."""
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from conftest import SHARED_DATA
from preprocess_helpers import read_rows, write_config

TENREC = SHARED_DATA / "sbr_data_1M_very_small.csv"
TIKTOK = SHARED_DATA / "byterec_sample.txt"


def _preprocess(tmp_path, source, path, **data):
    from nmtrec.components.preprocess.from_config import spec_from_config
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess
    from nmtrec.components.common.config import load_config

    cfg = load_config(write_config(tmp_path / "cfg.yaml", source, chunk_bytes=100_000, **data))
    out = tmp_path / "ds"
    return run_preprocess(str(path), str(out), spec_from_config(cfg)), out


def _column(out, spec, name):
    return [v for s in spec.splits.values() for f in s.files for v in pq.read_table(out / f).column(name).to_pylist()]


@pytest.mark.skipif(not TENREC.exists(), reason="shared/data Tenrec sample absent")
def test_tenrec_sample_rows_nulls_labels_vocab(tmp_path):
    names, rows = read_rows(TENREC)
    spec, out = _preprocess(tmp_path, "tenrec", TENREC)
    assert spec.rows_read == len(rows) == 25_092
    assert sum(spec.rows_per_split().values()) == len(rows)
    assert spec.bad_rows_skipped == 0
    col = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    # `\N` video_category -> null index 0, and nowhere else
    cats = _column(out, spec, "video_category")
    assert cats.count(0) == col["video_category"].count(None) == 5
    for label in ("click", "follow", "like", "share"):
        assert sum(_column(out, spec, label)) == sum(col[label]) == spec.positives[label]
    assert spec.positives == {"click": 25_092, "follow": 64, "like": 727, "share": 98}
    assert spec.tables["user_id"].vocab_size == len(set(col["user_id"])) + 2 == 552
    assert spec.tables["item_id"].vocab_size == len(set(col["item_id"])) + 2 == 17_075
    # most frequent user gets index 2
    top_user = Counter(col["user_id"]).most_common(1)[0][0]
    vocab = pq.read_table(out / spec.tables["user_id"].vocab).column("raw_id").to_pylist()
    assert vocab[0] == top_user


@pytest.mark.skipif(not TIKTOK.exists(), reason="shared/data TikTok sample absent")
def test_tiktok_sample_headerless_tabs_and_minus_one_ids(tmp_path):
    from nmtrec.components.preprocess.schemas import TIKTOK_COLUMNS

    _, rows = read_rows(TIKTOK, delimiter="\t", header=False)
    col = {n: [r[i] for r in rows] for i, n in enumerate(TIKTOK_COLUMNS)}
    spec, out = _preprocess(tmp_path, "tiktok", TIKTOK)
    assert spec.rows_read == len(rows) == 200
    assert spec.labels == ["finish", "like"]
    assert sum(_column(out, spec, "finish")) == sum(col["finish"]) == 76
    assert sum(_column(out, spec, "like")) == sum(col["like"]) == 7
    # music_id -1 ("no music") is a real id: its own index, neither null (0) nor OOV (1)
    vocab = pq.read_table(out / spec.tables["music_id"].vocab).column("raw_id").to_pylist()
    minus_one = vocab.index(-1) + 2
    assert _column(out, spec, "music_id").count(minus_one) == col["music_id"].count(-1) > 0
    assert json.loads((out / "feature_spec.json").read_text())["format"] == "tiktok"
