"""Issue 12, "reproducible on every machine": the synthetic CSV is the same bytes whatever SIMD code
numpy runs, and a row's split does not depend on how the other lines are printed."""
import json
import os
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocess_helpers import decode, line_numbers, read_rows, ref_uniform

SEED = 7
SPLITS = ("train", "valid", "test")
CHECK = ["user_id", "item_id", "click", "like", "video_category", "true_like"]

# In a child process: generate a small data set, preprocess it (several ranges), and report which SIMD
# code numpy's exp ran (a hash of its output), the CPU features numpy found and its dispatch targets.
CHILD = r"""
import hashlib, json, sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
from nmtrec.components.common.config import FeatureConfig
from nmtrec.components.generate.synthetic import SyntheticSpec, generate
from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec, run_preprocess

out = sys.argv[1]
generate(SyntheticSpec(rows=3000, users=60, items=120, latent_dim=6, seed=7), f"{out}/data.csv")
f = FeatureConfig()
run_preprocess(f"{out}/data.csv", f"{out}/dataset",
               PreprocessSpec(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables,
                              labels=["click", "follow", "like", "share"], fmt="synthetic", seed=7,
                              chunk_bytes=40_000))
x = np.linspace(-30.0, 30.0, 100_001)
print(json.dumps({"exp": hashlib.sha256(np.exp(x).tobytes()).hexdigest(), "dispatch": list(__cpu_dispatch__),
                  "found": [k for k in __cpu_dispatch__ if __cpu_features__.get(k)]}))
"""


def _child(out, env_extra):
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    env.update(TQDM_DISABLE="1", **env_extra)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _feature_spec(dataset):
    return json.loads((dataset / "feature_spec.json").read_text())


def _split_tables(dataset):
    spec = _feature_spec(dataset)
    return {s: pa.concat_tables([pq.read_table(dataset / f) for f in spec["splits"][s]["files"]]) for s in SPLITS}


def test_same_bytes_and_splits_with_and_without_simd(tmp_path):
    from numpy._core._multiarray_umath import __cpu_dispatch__

    normal = _child(tmp_path / "normal", {})
    # every target numpy dispatches to (numpy 2.4 on x86-64: X86_V3 = AVX2+FMA3, X86_V4 = AVX-512, ...):
    # the second run takes the baseline code paths, as on a CPU without AVX2 or AVX-512. numpy refuses
    # only baseline names; these never are.
    disabled = " ".join(__cpu_dispatch__)
    plain = _child(tmp_path / "plain", {"NPY_DISABLE_CPU_FEATURES": disabled})
    if not normal["found"]:
        pytest.skip("numpy found none of its SIMD dispatch targets on this CPU: both runs take the same path")
    # the test means something: numpy's exp really computed other last bits in the second run
    assert plain["exp"] != normal["exp"], f"NPY_DISABLE_CPU_FEATURES={disabled!r} changed no code path"
    assert (tmp_path / "normal" / "data.csv").read_bytes() == (tmp_path / "plain" / "data.csv").read_bytes()
    a, b = _split_tables(tmp_path / "normal" / "dataset"), _split_tables(tmp_path / "plain" / "dataset")
    for s in SPLITS:
        assert a[s].num_rows > 0 and a[s].equals(b[s]), s


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory):
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    path = tmp_path_factory.mktemp("repro") / "data.csv"
    generate(SyntheticSpec(rows=3000, users=60, items=120, latent_dim=6, seed=SEED), path)
    return path


def _spec(**kw):
    from nmtrec.components.common.config import FeatureConfig
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec

    f = FeatureConfig()
    return PreprocessSpec(**{**dict(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables,
                                    labels=["click", "follow", "like", "share"], fmt="synthetic", seed=SEED,
                                    chunk_bytes=30_000, negative_ratio=2.0), **kw})


def _rewrite(src, dst, edits):
    """Copy src to dst with lines replaced: {0-based line index: new line text without '\\n'}."""
    lines = src.read_bytes().split(b"\n")
    for i, text in edits.items():
        lines[i] = text.encode()
    dst.write_bytes(b"\n".join(lines))


def _splits(dataset):
    return {s: decode(dataset, s, CHECK) for s in SPLITS}


def _old_split(offset, seed=SEED):
    u = ref_uniform(offset, seed, 1)  # the byte-offset keying before issue 12, for comparison
    return 0 if u < 0.8 else 1 if u < 0.9 else 2


def test_a_wider_float_moves_no_other_row(raw_csv, tmp_path):
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    names, rows = read_rows(raw_csv)
    lines = raw_csv.read_bytes().split(b"\n")
    k = 100  # line index 100 (line number 101): a click row's true_click written with 9 more digits
    col = names.index("true_click")
    fields = lines[k].decode().split(",")
    assert "e" not in fields[col]
    fields[col] += "123456789"
    wide = tmp_path / "wide.csv"
    _rewrite(raw_csv, wide, {k: ",".join(fields)})
    run_preprocess(str(raw_csv), str(tmp_path / "a"), _spec())
    run_preprocess(str(wide), str(tmp_path / "b"), _spec(chunk_bytes=17_000, num_workers=2))
    a, b = _feature_spec(tmp_path / "a"), _feature_spec(tmp_path / "b")
    # CHECK leaves true_click out: every row, the widened one too, is in the same split (and kept or
    # sampled out alike) whatever the range cuts and workers
    assert _splits(tmp_path / "a") == _splits(tmp_path / "b")
    assert {s: a["splits"][s]["rows"] for s in SPLITS} == {s: b["splits"][s]["rows"] for s in SPLITS}
    # ... where the byte-offset keying would have moved about a fifth of the later rows
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    moved = sum(_old_split(o) != _old_split(o + 9) for o in offsets[k + 1:len(rows) + 1])
    assert moved > 0.1 * (len(rows) - k)


def test_skipped_bad_and_blank_lines_keep_the_other_rows_draws(raw_csv, tmp_path):
    """A bad row (policy skip: that range is re-read by the line scan) and a blank line replace two
    rows; every other row keeps its line number, so its split: the rest is exactly the clean run's."""
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    names, rows = read_rows(raw_csv)
    bad, blank = 500, 1500  # line indices (data row i is line index i + 1)
    variant = tmp_path / "variant.csv"
    lines = raw_csv.read_bytes().split(b"\n")
    _rewrite(raw_csv, variant, {bad: "x" + lines[bad].decode(), blank: ""})
    spec = _spec(negative_ratio=None)  # keep every row: removed rows change no sampling rate
    run_preprocess(str(raw_csv), str(tmp_path / "clean"), spec)
    run_preprocess(str(variant), str(tmp_path / "v"), _spec(negative_ratio=None, on_bad_rows="skip"))
    fs = _feature_spec(tmp_path / "v")
    assert fs["bad_rows_skipped"] == 1 and fs["rows_read"] == len(rows) - 2
    clean, got = _splits(tmp_path / "clean"), _splits(tmp_path / "v")
    idx = [names.index(c) for c in CHECK]
    numbers = line_numbers(raw_csv)
    removed = Counter()
    for i in (bad - 1, blank - 1):  # their data-row indices
        u = ref_uniform(numbers[i], SEED, 1)
        split = 0 if u < 0.8 else 1 if u < 0.9 else 2
        removed[SPLITS[split], tuple(float(rows[i][j]) if names[j] in ("click", "like") else rows[i][j] for j in idx)] += 1
    for s in SPLITS:
        expected = clean[s] - Counter({r: n for (split, r), n in removed.items() if split == s})
        assert got[s] == expected, s


def test_true_probabilities_are_written_at_six_significant_digits(raw_csv):
    from nmtrec.components.generate.synthetic import TRUTH_COLUMNS, TRUTH_DIGITS

    assert TRUTH_DIGITS == 6
    lines = raw_csv.read_text().splitlines()
    header = lines[0].split(",")
    cols = [header.index(c) for c in TRUTH_COLUMNS]
    values = [line.split(",")[i] for line in lines[1:] for i in cols]
    assert values and all(f"{float(v):.6g}" == v for v in values)
    assert any("e-" in v for v in values)  # the smallest probabilities keep their digits (no fixed decimals)
