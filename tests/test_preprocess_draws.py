"""Split, MTL sampling and vocabularies against plain-Python references computed here."""
import math
from collections import Counter

import pyarrow.parquet as pq
import pytest

from preprocess_helpers import decode, line_numbers, read_rows, ref_uniform

SEED = 11
CHECK = ["user_id", "item_id", "click", "like", "video_category"]


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory):
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    path = tmp_path_factory.mktemp("draws") / "data.csv"
    generate(SyntheticSpec(rows=4000, users=150, items=250, seed=SEED, duplicates=0.05, null_category=0.05), path)
    return path


def _spec(**kw):
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec
    from nmtrec.components.common.config import FeatureConfig

    f = FeatureConfig()
    base = dict(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables, labels=["click", "follow", "like", "share"],
                fmt="synthetic", seed=SEED, chunk_bytes=50_000)
    return PreprocessSpec(**{**base, **kw})


def _reference(raw_csv, spec):
    """Per raw row: (split index or None if sampled out, row values), with the documented draws."""
    names, rows = read_rows(raw_csv)
    lines = line_numbers(raw_csv)
    click = names.index("click")
    pos = sum(r[click] for r in rows)
    keep_p = 1.0 if spec.negative_ratio is None else min(1.0, spec.negative_ratio * pos / (len(rows) - pos))
    out = []
    for r, line in zip(rows, lines, strict=True):
        kept = r[click] == 1 or ref_uniform(line, spec.seed, 2) < keep_p
        u = ref_uniform(line, spec.seed, 1)
        split = 0 if u < spec.split[0] else 1 if u < spec.split[0] + spec.split[1] else 2
        out.append((split if kept else None, r))
    return names, out



def _expected(names, ref, split_index):
    idx = [names.index(c) for c in CHECK]
    return Counter(tuple(float(r[i]) if names[i] in ("click", "like") else r[i] for i in idx)
                   for s, r in ref if s == split_index)


def test_split_matches_reference_disjoint_and_independent_of_chunking(raw_csv, tmp_path):
    from nmtrec.components.preprocess.beam_pipeline import SPLITS, run_preprocess

    spec = _spec()
    names, ref = _reference(raw_csv, spec)
    fs = run_preprocess(str(raw_csv), str(tmp_path / "a"), spec)
    for k, name in enumerate(SPLITS):
        assert decode(tmp_path / "a", name, CHECK) == _expected(names, ref, k), name
    assert fs.splits["train"].rows == sum(1 for s, _ in ref if s == 0)
    # the planted exact duplicates (5%) are kept as rows, each drawn on its own
    assert sum(sum(decode(tmp_path / "a", name, CHECK).values()) for name in SPLITS) == len(ref)
    assert len({tuple(r) for _, r in ref}) < len(ref)
    # other range cuts and 2 worker processes give the same rows per split
    run_preprocess(str(raw_csv), str(tmp_path / "b"), _spec(chunk_bytes=7_000, num_workers=2))
    for name in SPLITS:
        assert decode(tmp_path / "b", name, CHECK) == decode(tmp_path / "a", name, CHECK)


def test_mtl_sampling_keeps_all_clicks_and_about_twice_as_many_negatives(raw_csv, tmp_path):
    from nmtrec.components.preprocess.beam_pipeline import SPLITS, run_preprocess

    spec = _spec(negative_ratio=2.0)
    names, ref = _reference(raw_csv, spec)
    fs = run_preprocess(str(raw_csv), str(tmp_path / "s"), spec)
    for k, name in enumerate(SPLITS):
        assert decode(tmp_path / "s", name, CHECK) == _expected(names, ref, k), name
    click = names.index("click")
    pos = sum(r[click] for _, r in ref)
    neg_total = len(ref) - pos
    kept_neg = sum(1 for s, r in ref if s is not None and r[click] == 0)
    out_clicks = sum(sum(pq.read_table(tmp_path / "s" / f).column("click").to_pylist())
                     for s in fs.splits.values() for f in s.files)
    assert out_clicks == pos
    p = 2.0 * pos / neg_total
    assert abs(kept_neg - 2 * pos) < 4 * math.sqrt(neg_total * p * (1 - p))
    assert fs.sampling.negative_keep_probability == pytest.approx(p)


def test_vocab_min_count_oov_and_null(raw_csv, tmp_path):
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    run_preprocess(str(raw_csv), str(tmp_path / "v"), _spec(min_count=30))
    names, rows = read_rows(raw_csv)
    col = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    users = Counter(col["user_id"])
    items = Counter(col["item_id"])
    for k in range(1, 11):  # hist shares the item table; 0 is padding, not an id
        items.update(v for v in col[f"hist_{k}"] if v != 0)
    for table, counts in (("user_id", users), ("item_id", items)):
        kept = sorted((v for v, c in counts.items() if c >= 30), key=lambda v: (-counts[v], v))
        vocab = pq.read_table(tmp_path / "v" / "vocab" / f"{table}.parquet").column("raw_id").to_pylist()
        assert vocab == kept and 0 < len(kept) < len(counts)
    # rare users decode to OOV, `\N` categories to null
    decoded = sum((decode(tmp_path / "v", s, ["user_id", "video_category"]) for s in ("train", "valid", "test")), Counter())
    rare_rows = sum(c for u, c in users.items() if c < 30)
    assert sum(c for (u, _), c in decoded.items() if u == "OOV") == rare_rows > 0
    assert sum(c for (_, v), c in decoded.items() if v is None) == col["video_category"].count(None) > 0
