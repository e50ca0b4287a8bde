"""The synthetic generator's planted structure and the oracle AUC carried through preprocessing."""
import json

import numpy as np
import pytest
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from preprocess_helpers import line_numbers, read_rows, ref_uniform


def _read(path):
    t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(null_values=["\\N"], strings_can_be_null=True))
    return t, {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def test_generator_rates_truth_and_determinism(tmp_path):
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(rows=40_000, users=500, items=800, seed=4, chunk_rows=7_000)
    n = generate(spec, tmp_path / "a.csv")
    table, t = _read(tmp_path / "a.csv")
    assert table.num_rows == n and 40_000 < n < 40_000 * 1.01  # planted duplicates on top
    assert abs(t["click"].mean() - 0.24) < 0.02 and abs(t["like"].mean() - 0.019) < 0.005
    assert (t["like"] <= t["click"]).all()  # likes only on clicks
    assert 0.002 < table.column("video_category").null_count / n < 0.02
    rows = list(zip(*(t[c].tolist() for c in table.column_names)))
    assert len(set(rows)) < len(rows)  # exact duplicates present
    # true probabilities are calibrated: their mean matches the label rate (float64 reference)
    for label in ("click", "like", "follow", "share"):
        assert abs(t[f"true_{label}"].mean() - t[label].mean()) < 4 * np.sqrt(t[label].mean() / n) + 1e-4
    # same seed -> same bytes, whatever the chunking
    generate(SyntheticSpec(rows=40_000, users=500, items=800, seed=4, chunk_rows=7_000), tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_oracle_auc_matches_sklearn_on_raw_truth(tiny_cfg, tiny_dataset):
    from nmtrec.components.evaluate.oracle import oracle_report

    ds = tiny_dataset / "dataset"
    spec = json.loads((ds / "feature_spec.json").read_text())
    assert spec["truth"] == {t: f"true_{t}" for t in ("click", "follow", "like", "share")}
    report = oracle_report(ds, ["like", "click"])
    # reference: the test split picked from the raw CSV with the documented draw (plain Python)
    names, rows = read_rows(tiny_dataset / "data.csv")
    in_test = np.array([ref_uniform(n, tiny_cfg.seed, 1) >= 0.9 for n in line_numbers(tiny_dataset / "data.csv")])
    raw = {n: np.array([r[i] for r in rows]) for i, n in enumerate(names) if n in ("click", "like", "true_click", "true_like")}
    assert in_test.sum() == spec["splits"]["test"]["rows"]
    for task in ("like", "click"):
        expected = roc_auc_score(raw[task][in_test], raw[f"true_{task}"][in_test])
        assert report["oracle_auc"][task] == pytest.approx(expected, abs=1e-12)
        assert 0.6 < report["oracle_auc"][task] < 1.0
    # the test split carries the truth column unchanged (float64)
    f = spec["splits"]["test"]["files"][0]
    assert pq.read_schema(ds / f).field("true_like").type == "double"


def test_like_has_its_own_signal(tmp_path):
    """The planted conflict: like's ranking comes from its own factors; click's probability explains
    little of it (a model must make room for both), and `conflict` brings the two together."""
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    def aucs(conflict):
        path = tmp_path / f"c{conflict}.csv"
        generate(SyntheticSpec(rows=60_000, users=100, items=200, latent_dim=6, seed=3, conflict=conflict), path)
        _, t = _read(path)
        return roc_auc_score(t["like"], t["true_like"]), roc_auc_score(t["like"], t["true_click"])

    own, by_click = aucs(0.0)
    assert own > 0.85 and by_click < 0.70 and own - by_click > 0.2
    own_c, by_click_c = aucs(0.9)
    assert by_click_c > by_click + 0.1  # correlated factors: click's probability now ranks likes too
