"""Bad input: the CLI exits non-zero naming file, line and column (or key), and leaves no dataset behind."""
import json

import pytest

from preprocess_helpers import write_config

HEADER = "user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age\n"
GOOD = "1,10,1,0,1,0,1,2,1,4\n2,11,0,0,0,0,\\N,0,2,3\n3,12,1,0,0,0,0,1,0,5\n"


def _cli(tmp_path, text, source="tenrec", config=None, **data):
    from nmtrec.pipelines.cli import main

    src = tmp_path / "in.csv"
    if text is not None:
        src.write_text(text)
    cfg = config or write_config(tmp_path / "cfg.yaml", source, **data)
    out = tmp_path / "out"
    rc = main(["preprocess", "--config", str(cfg), "--input", str(src), "--output", str(out)])
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))
    return rc, out, left


@pytest.mark.parametrize("text,needles", [
    (None, ["in.csv", "not found"]),
    ("", ["in.csv", "line 1", "empty file"]),
    ("1,10,1,0,1,0,1,2,1,4\n", ["line 1", "missing header"]),
    (HEADER + GOOD + "4,13,1,0,0\n", ["line 5", "expected 10 fields", "got 5"]),
    (HEADER + GOOD * 3 + "7,abc,1,0,0,0,1,1,0,2\n", ["line 11", "column 'item_id'", "integer id", "abc"]),
    (HEADER.replace("like", "liked") + GOOD, ["line 1", "['like']", "data.labels"]),
    (HEADER + GOOD + "4,13,1,0,3,0,1,2,1,4\n" + GOOD, ["line 5", "column 'like'", "0/1 label", "got 3"]),
])
def test_bad_tenrec_input_fails_with_location(tmp_path, capsys, text, needles):
    rc, out, left = _cli(tmp_path, text)
    err = capsys.readouterr().err
    assert rc == 2
    for n in needles:
        assert n in err, (n, err)
    assert left == []  # neither out/ nor out.partial/


def test_bad_row_deep_in_a_later_range_names_its_line(tmp_path, capsys):
    lines = HEADER + GOOD * 400 + "9,9,1,0,0,0,1,1,0\n" + GOOD * 50
    rc, _, left = _cli(tmp_path, lines, chunk_bytes=2_000)
    err = capsys.readouterr().err
    assert rc == 2 and "line 1202" in err and "expected 10 fields" in err and left == []


def test_tiktok_with_header_or_wrong_width(tmp_path, capsys):
    rc, _, left = _cli(tmp_path, "uid\tuser_city\n1\t2\n", source="tiktok")
    err = capsys.readouterr().err
    assert rc == 2 and "line 1" in err and "12 tab-separated" in err and left == []
    header = "\t".join(["uid", "user_city", "item_id", "author_id", "item_city", "channel", "finish", "like",
                        "music_id", "device", "time", "duration_time"]) + "\n"
    rc, _, _ = _cli(tmp_path, header + "1\t2\t3\t4\t5\t6\t0\t1\t-1\t7\t53085738314\t9\n", source="tiktok")
    err = capsys.readouterr().err
    assert rc == 2 and "line 1" in err and "column 'uid'" in err and "integer id" in err


def test_skip_policy_counts_bad_rows(tmp_path):
    text = HEADER + GOOD + "4,13,1,0,0\n" + GOOD + "5,x,1,0,0,0,1,1,0,2\n" + GOOD
    rc, out, left = _cli(tmp_path, text, on_bad_rows="skip")
    assert rc == 0 and left == ["out"]
    spec = json.loads((out / "feature_spec.json").read_text())
    assert spec["bad_rows_skipped"] == 2
    assert spec["rows_read"] == sum(s["rows"] for s in spec["splits"].values()) == 9


def test_a_failed_shard_write_fails_the_run_and_leaves_nothing(tmp_path, monkeypatch):
    """Shards are written behind the encoding, on another thread: its error still ends the run."""
    from nmtrec.components.preprocess import beam_pipeline
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec, run_preprocess

    def broken(self, index, encoded, bounds):
        raise OSError(f"disk full writing range {index}")

    monkeypatch.setattr(beam_pipeline._EncodeRange, "_write", broken)
    src = tmp_path / "in.csv"
    src.write_text(HEADER + GOOD * 50)
    spec = PreprocessSpec(sparse=["user_id", "item_id"], bags={}, bag_tables={}, labels=["click", "like"],
                          chunk_bytes=500)
    with pytest.raises(Exception, match="disk full writing range"):
        run_preprocess(str(src), str(tmp_path / "out"), spec)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
