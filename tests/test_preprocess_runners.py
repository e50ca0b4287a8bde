"""Beam runners: the DaskRunner (on a 2-process dask.distributed LocalCluster) writes what the
DirectRunner writes, row for row; runner names resolve as Beam's do, and a wrong one is a config error."""
import json

import pyarrow.parquet as pq
import pytest

from preprocess_helpers import write_config

SEED = 13
DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory):
    """Synthetic rows with a bad line (skipped) and a blank line, cut into several ranges below."""
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    path = tmp_path_factory.mktemp("runners") / "data.csv"
    generate(SyntheticSpec(rows=3000, users=200, items=300, seed=SEED, duplicates=0.02, null_category=0.05), path)
    lines = path.read_bytes().split(b"\n")
    lines[700] = b"x" + lines[700]  # not an integer id: dropped and counted under on_bad_rows: skip
    lines[1900] = b""
    path.write_bytes(b"\n".join(lines))
    return path


def _spec(**kw):
    from nmtrec.components.common.config import FeatureConfig
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec

    f = FeatureConfig()
    return PreprocessSpec(**{**dict(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables,
                                    labels=["click", "follow", "like", "share"], fmt="synthetic", seed=SEED,
                                    chunk_bytes=40_000, negative_ratio=2.0, on_bad_rows="skip"), **kw})


@pytest.fixture(scope="module")
def direct(raw_csv, tmp_path_factory):
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    out = tmp_path_factory.mktemp("direct") / "ds"
    run_preprocess(str(raw_csv), str(out), _spec())
    return out


def _content(dataset):
    """Everything a dataset holds, runner-independent: feature spec, stats, vocabularies, and each
    split's rows sorted (all columns, the true_* probabilities too, so a row is identified)."""
    spec = json.loads((dataset / "feature_spec.json").read_text())
    vocab = {t: pq.read_table(dataset / meta["vocab"]).to_pydict() for t, meta in spec["tables"].items()}
    rows = {}
    for name, split in spec["splits"].items():
        table = pq.read_table([dataset / f for f in split["files"]]) if split["files"] else None
        rows[name] = sorted(zip(*table.to_pydict().values())) if table is not None else []
    return spec, json.loads((dataset / "stats.json").read_text()), vocab, rows


def _assert_same(a, b):
    spec_a, stats_a, vocab_a, rows_a = _content(a)
    spec_b, stats_b, vocab_b, rows_b = _content(b)
    assert spec_a == spec_b  # tables and vocab sizes, split files and rows, positives, sampling, bad rows
    assert stats_a == stats_b
    assert vocab_a == vocab_b
    for name in rows_a:
        assert rows_a[name] == rows_b[name], name  # split membership: the same rows in the same split
    assert spec_a["bad_rows_skipped"] == 1 and spec_a["sampling"] is not None
    assert len(spec_a["splits"]["train"]["files"]) > 3  # several ranges, spread over the workers


def test_dask_local_cluster_writes_what_the_direct_runner_writes(raw_csv, direct, tmp_path):
    """`runner: dask` without a scheduler address starts a LocalCluster of num_workers processes."""
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    run_preprocess(str(raw_csv), str(tmp_path / "dask"), _spec(runner="dask", num_workers=2))
    _assert_same(direct, tmp_path / "dask")


def test_dask_scheduler_address_from_beam_options(raw_csv, direct, tmp_path):
    """The fully qualified runner name on a cluster named in beam_options (as a Kubernetes one would be)."""
    from distributed import LocalCluster

    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        run_preprocess(str(raw_csv), str(tmp_path / "dask"),
                       _spec(runner=DASK, beam_options={"dask_client_address": cluster.scheduler_address}))
        # the pipeline's tasks ran on this cluster (a DaskRunner that missed the address starts its own)
        assert any(p.startswith("apply_dofn_to_bundle") for p in cluster.scheduler.task_prefixes)
    _assert_same(direct, tmp_path / "dask")


@pytest.mark.parametrize("name,resolved", [
    ("DirectRunner", "DirectRunner"), ("direct", "DirectRunner"), ("flink", "FlinkRunner"),
    ("SparkRunner", "SparkRunner"), ("apache_beam.runners.direct.direct_runner.DirectRunner", "DirectRunner"),
    ("dask", DASK), ("DaskRunner", DASK), (DASK, DASK),
])
def test_runner_names_resolve_as_beam_does(name, resolved):
    from nmtrec.components.preprocess.runners import resolve_runner

    assert resolve_runner(name) == resolved


def test_unknown_runner_is_an_error_naming_the_key(tmp_path, capsys):
    from nmtrec.pipelines.cli import main

    src = tmp_path / "in.csv"
    src.write_text("user_id,item_id,click,follow,like,share,video_category,watching_times,gender,age\n"
                   "1,10,1,0,1,0,1,2,1,4\n")
    cfg = write_config(tmp_path / "cfg.yaml", "tenrec")
    for runner, needles in [("NoSuchRunner", ["data.runner 'NoSuchRunner'", "unknown Beam runner", "FlinkRunner"]),
                            ("no.such.Runner", ["data.runner 'no.such.Runner'", "cannot load"])]:
        rc = main(["preprocess", "--config", str(cfg), "--input", str(src), "--output", str(tmp_path / "out"),
                   "--runner", runner])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        for n in needles:
            assert n in err, (n, err)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_options_reach_the_runner():
    """DirectRunner runs as the FnApiRunner (Beam's DirectRunner would first try to fetch the Prism
    binary), and Dask's options arrive under DaskOptions' own names (--dask_client_address -> address)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from nmtrec.components.preprocess.runners import runner_options

    with runner_options("DirectRunner", 2, {}, 7) as opts:
        assert opts.view_as(StandardOptions).runner == "FnApiRunner"
        direct = opts.view_as(DirectOptions)
        assert (direct.direct_num_workers, direct.direct_running_mode) == (2, "multi_processing")
    given = {"dask_client_address": "tcp://10.0.0.1:8786", "dask_connection_timeout": 30}
    with runner_options("dask", 1, given, 7) as opts:
        dask = opts.view_as(DaskOptions).get_all_options(drop_default=True, current_only=True)
        assert dask == {"address": "tcp://10.0.0.1:8786", "timeout": 30, "npartitions": 7}
        assert opts.view_as(StandardOptions).runner == DASK
