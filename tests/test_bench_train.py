"""`nmtrec bench train`'s streaming variant: the Parquet split it writes streams back, through training's
reader, exactly the features and labels of the in-memory batches; the last JSON line keeps its keys and
adds the streaming figures."""
import argparse
import json

import numpy as np
import pytest
import torch

from conftest import import_benchmark
from nmtrec.components.train.data import batches

bench = import_benchmark("train")


def test_written_split_streams_the_in_memory_batches(tmp_path):
    spec = bench.feature_spec(500, 700)
    data = bench.synthetic_batches(spec, 64, 5, seed=4)
    split = bench.write_split(spec, data, tmp_path / "dataset")
    assert split.rows == 5 * 64
    streamed = list(batches(split, 64))  # natural order: batch i is in-memory batch i
    assert len(streamed) == len(data)
    for (kjt, labels), (single, hist, y) in zip(streamed, data):
        ref = bench.to_kjt(single, hist)
        assert kjt.keys() == ref.keys()
        assert torch.equal(kjt.values(), ref.values()) and torch.equal(kjt.lengths(), ref.lengths())
        np.testing.assert_array_equal(labels.numpy(), y)


def test_last_line_has_the_streaming_figures(capsys):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    args = p.parse_args(["--batch-size", "64", "--steps", "1", "--rounds", "1", "--warmup", "1", "--users", "300",
                         "--items", "300", "--threads", "1", "--skip-peer"])
    threads = torch.get_num_threads()
    try:
        assert bench.run(args) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert {"ours_samples_per_s", "peer_samples_per_s", "ratio_vs_peer", "gemm_ceiling_fraction",
            "streaming_samples_per_s", "streaming_gemm_ceiling_fraction"} <= set(last)
    assert last["peer_samples_per_s"] is None and last["streaming_ratio_vs_peer"] is None
    # both fractions are of the same measured ceiling
    ceiling = last["ours_samples_per_s"] / last["gemm_ceiling_fraction"]
    assert last["streaming_samples_per_s"] / last["streaming_gemm_ceiling_fraction"] == pytest.approx(ceiling, rel=0.01)
    assert "streaming input" in out and "batches in memory" in out
