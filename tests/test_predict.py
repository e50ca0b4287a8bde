"""`nmtrec predict`: raw rows of the training format -> Parquet scores, against evaluation on the test
split's lines, against the exported program on the same rows read by plain pyarrow, and bad input
with preprocessing's own messages."""
import shutil

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.evaluate.scoring import predict_checkpoint
from nmtrec.components.preprocess.beam_pipeline import run_preprocess
from nmtrec.components.preprocess.from_config import spec_from_config
from nmtrec.components.preprocess.read import PreprocessError
from nmtrec.components.serve.bundle import load_program, read_manifest
from nmtrec.components.serve.export import export_checkpoint
from nmtrec.components.serve.predict import predict_file
from nmtrec.pipelines.cli import main
from serve_helpers import split_lines


@pytest.fixture(scope="module")
def model_dir(tiny_stage2, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "model"
    export_checkpoint(tiny_stage2, out, dataset_dir=tiny_dataset / "dataset")
    return out


@pytest.fixture(scope="module")
def scores(model_dir, tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(tiny_dataset / "data.csv"),
                 "--output", str(out)]) == 0
    return pq.read_table(out)


def test_scores_of_the_test_lines_equal_evaluation(scores, tiny_stage2, tiny_dataset):
    spec = FeatureSpec.read(tiny_dataset / "dataset")
    assert scores.column_names == ["row", "line", "like", "click"]
    rows = sum(s.rows for s in spec.splits.values())
    assert scores.num_rows == rows
    assert np.array_equal(scores["row"].to_numpy(), np.arange(rows))
    assert np.array_equal(scores["line"].to_numpy(), np.arange(rows) + 2)  # header is line 1, no blank lines
    test = split_lines(scores["line"].to_numpy(), spec, 2)  # the lines preprocessing sent to the test split
    _, probs, _, _ = predict_checkpoint(str(tiny_stage2), str(tiny_dataset / "dataset"))
    got = np.stack([scores[t].to_numpy()[test] for t in ("like", "click")], axis=1)
    assert got.shape == probs.shape
    assert np.abs(got - probs).max() <= 1e-6


def test_scores_equal_the_program_on_rows_read_by_pyarrow(scores, model_dir, tiny_dataset):
    manifest = read_manifest(model_dir)
    columns = manifest["inputs"]["columns"]
    table = pacsv.read_csv(tiny_dataset / "data.csv", convert_options=pacsv.ConvertOptions(
        include_columns=columns, null_values=["\\N", ""], strings_can_be_null=True))
    ids = np.stack([table[c].fill_null(0).to_numpy() for c in columns], axis=1).astype(np.int64)
    present = np.stack([table[c].is_valid().to_numpy(zero_copy_only=False) for c in columns], axis=1)
    assert not present.all()  # the data has nulls (video_category)
    with torch.no_grad():
        out = load_program(model_dir)(torch.from_numpy(ids), torch.from_numpy(present))
    for task in manifest["tasks"]:
        assert np.abs(scores[task].to_numpy() - out[task].numpy()).max() <= 1e-7


def test_small_chunks_and_batches_give_the_same_scores(scores, model_dir, tiny_dataset, tmp_path):
    r = predict_file(model_dir, tiny_dataset / "data.csv", tmp_path / "s.parquet", chunk_bytes=20_000, batch_rows=97)
    small = pq.read_table(tmp_path / "s.parquet")
    assert r.rows == scores.num_rows and small["line"].equals(scores["line"]) and small["row"].equals(scores["row"])
    for task in ("like", "click"):
        assert np.abs(small[task].to_numpy() - scores[task].to_numpy()).max() <= 1e-7


def _file_with_bad_row(tiny_dataset, path):
    """data.csv's header and first 8 rows, line 3 blank, user_id 'abc' on line 6 (the 4th row)."""
    lines = (tiny_dataset / "data.csv").read_text().splitlines()[:9]
    lines.insert(2, "")
    fields = lines[5].split(",")
    fields[0] = "abc"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_row_exits_2_with_preprocessings_message(model_dir, tiny_dataset, tiny_cfg, tmp_path, capsys):
    bad = _file_with_bad_row(tiny_dataset, tmp_path / "bad.csv")
    with pytest.raises(PreprocessError) as reference:  # what preprocessing says of the same file
        run_preprocess(str(bad), str(tmp_path / "ds"), spec_from_config(tiny_cfg))
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(bad), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{bad}: line 6, column 'user_id': expected an integer id, got 'abc'" in err
    want = str(reference.value).replace("set data.on_bad_rows: skip", "give --on-bad-rows skip")
    assert err == "nmtrec: error: " + want
    assert not out.exists() and not list(tmp_path.glob("scores.parquet*"))


def test_skipped_bad_rows_keep_every_other_lines_number(model_dir, tiny_dataset, tmp_path, capsys):
    bad = _file_with_bad_row(tiny_dataset, tmp_path / "bad.csv")
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", str(model_dir), "--input", str(bad), "--output", str(out),
                 "--on-bad-rows", "skip"]) == 0
    assert "1 bad row(s) skipped" in capsys.readouterr().out
    got = pq.read_table(out)
    assert got["line"].to_pylist() == [2, 4, 5, 7, 8, 9, 10]  # line 3 blank, line 6 bad
    full = predict_file(model_dir, tiny_dataset / "data.csv", tmp_path / "full.parquet")
    assert full.rows > 8
    whole = pq.read_table(tmp_path / "full.parquet").slice(0, 8)  # the same rows at lines 2..9 of data.csv
    keep = [0, 1, 2, 4, 5, 6, 7]  # all but the row made bad
    assert np.abs(got["like"].to_numpy() - whole["like"].to_numpy()[keep]).max() <= 1e-7


def test_other_bad_input_exits_2_with_one_line(model_dir, tiny_dataset, tmp_path, capsys):
    lines = (tiny_dataset / "data.csv").read_text().splitlines()[:4]
    header = lines[0].split(",")
    drop = header.index("age")
    (tmp_path / "no_age.csv").write_text("\n".join(",".join(f for i, f in enumerate(x.split(",")) if i != drop)
                                                   for x in lines) + "\n")
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.pt2").write_bytes((broken / "model.pt2").read_bytes()[:1000])
    cases = [
        (["--model", str(tmp_path), "--input", str(tiny_dataset / "data.csv")], "not an exported model"),
        (["--model", str(broken), "--input", str(tiny_dataset / "data.csv")], "cannot load the exported program"),
        (["--model", str(model_dir), "--input", str(tmp_path / "none.csv")], "input file not found"),
        (["--model", str(model_dir), "--input", str(tmp_path / "no_age.csv")], "no column(s) ['age']"),
        (["--model", str(model_dir), "--input", str(tiny_dataset / "data.csv"), "--batch-rows", "0"],
         "--batch-rows must be at least 1"),
    ]
    for args, message in cases:
        assert main(["predict", *args, "--output", str(tmp_path / "out.parquet")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not (tmp_path / "out.parquet").exists()
