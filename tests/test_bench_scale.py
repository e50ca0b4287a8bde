"""`nmtrec bench scale` at tiny sizes: every figure is measured, the ratios are computed from them, and
the outputs (JSON, table, plot, last JSON line) are written."""
import argparse
import json

import pytest

from conftest import import_benchmark


@pytest.mark.slow
def test_bench_scale_writes_measured_figures_and_their_ratios(tmp_path, capsys):
    scale = import_benchmark("scale")
    p = argparse.ArgumentParser()
    scale.add_arguments(p)
    args = p.parse_args(["--rows", "40000,20000", "--out", str(tmp_path), "--users", "2000", "--items", "3000",
                         "--batch-size", "1024"])
    assert scale.run(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rows", "train_rss_ratio", "eval_rss_ratio", "train_throughput_ratio"} <= set(last)
    result = json.loads((tmp_path / "scale.json").read_text())
    assert result["rows"] == last["rows"] == [20000, 40000]
    small, large = result["sizes"]
    for s in (small, large):
        assert len(s["train"]["peak_rss_mib_per_process"]) == 2  # both training processes reported
        assert s["train"]["peak_rss_mib"] == max(s["train"]["peak_rss_mib_per_process"]) > 100
        assert s["train"]["steps"] == s["train"]["train_rows"] // 1024  # one epoch of full global batches
        assert s["train"]["samples_per_s"] == pytest.approx(s["train"]["steps"] * 1024 / s["train"]["seconds"])
        for step in ("preprocess", "evaluate"):
            assert s[step]["peak_rss_mib"] > 50 and s[step]["seconds"] > 0
    assert last["train_rss_ratio"] == round(large["train"]["peak_rss_mib"] / small["train"]["peak_rss_mib"], 3)
    assert last["eval_rss_ratio"] == round(large["evaluate"]["peak_rss_mib"] / small["evaluate"]["peak_rss_mib"], 3)
    assert last["train_throughput_ratio"] == round(large["train"]["samples_per_s"] / small["train"]["samples_per_s"], 3)
    assert large["evaluate"]["rows"] > small["evaluate"]["rows"]
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    assert "| 40,000 |" in (tmp_path / "scale.md").read_text()
    assert not (tmp_path / "data" / "20000" / "data.csv").exists()  # the data is removed unless --keep-data
