"""Which Beam runner runs the preprocessing and with which options (`data.runner`, `data.num_workers`,
`data.beam_options`).

- DirectRunner (default): this process, or `num_workers` local processes; run as Beam's FnApiRunner,
  the engine Beam's DirectRunner picks for batch pipelines after trying to fetch the Prism runner.
- DaskRunner (`dask`, `DaskRunner` or its full name): on a dask.distributed cluster. With
  `beam_options: {dask_client_address: "tcp://scheduler:8786"}` (or `dask_scheduler_file`) on that
  cluster, e.g. one started by dask-kubernetes; without either, on a LocalCluster of `num_workers`
  worker processes started for the run and closed after it. Each byte range is one Dask partition.
- any other runner Beam knows by name (FlinkRunner, SparkRunner, DataflowRunner, PortableRunner,
  PrismRunner) or by the fully qualified name of its class, with its options in `beam_options`.
A runner session spans both pipelines of one run (see beam_pipeline.py), so a LocalCluster starts once.
"""
from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from typing import Iterator

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from nmtrec.components.preprocess.read import PreprocessError

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
_LOCAL = ("DirectRunner", "FnApiRunner")
# lower-case short names -> full names, as Beam resolves them (also without the "Runner" suffix)
_KNOWN = {path.rsplit(".", 1)[-1].lower(): path for path in (*StandardOptions.ALL_KNOWN_RUNNERS, DASK_RUNNER)}


def resolve_runner(name: str) -> str:
    """The runner's name as Beam takes it: a known short name (DirectRunner, FlinkRunner, ...) or the
    full class name of any other runner; a name that is neither is an error naming `data.runner`."""
    key = name.strip().lower()
    if name in _KNOWN.values():  # a known runner by its full name
        key = name.rsplit(".", 1)[-1].lower()
    full = _KNOWN.get(key) or _KNOWN.get(key + "runner")
    if full:
        return full if full == DASK_RUNNER else full.rsplit(".", 1)[-1]
    if "." in name:
        module, cls = name.rsplit(".", 1)
        try:
            getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as e:
            raise PreprocessError(f"data.runner {name!r}: cannot load the runner class ({e})") from None
        return DASK_RUNNER if name == DASK_RUNNER else name
    known = sorted({p.rsplit(".", 1)[-1] for p in _KNOWN.values()})
    raise PreprocessError(f"data.runner {name!r}: unknown Beam runner; expected one of {', '.join(known)}, "
                          f"'dask', or the fully qualified name of a PipelineRunner class")


def is_local(runner: str, num_workers: int) -> bool:
    """One local worker: nothing to spread the ranges over (no reshuffle)."""
    return runner in _LOCAL and num_workers == 1


@contextmanager
def runner_options(runner: str, num_workers: int, beam_options: dict, partitions: int) -> Iterator[PipelineOptions]:
    """PipelineOptions for every pipeline of one run; for Dask without a scheduler named in
    `beam_options`, a LocalCluster of `num_workers` processes lives as long as the block."""
    runner = resolve_runner(runner)
    # Beam's DirectRunner first tries the Prism runner, downloading its binary from GitHub for every
    # pipeline (offline: a failed download each time; online: a separate Go process), and for batch
    # pipelines falls back to the FnApiRunner: run that one directly, the same engine every time
    opts = {"runner": "FnApiRunner" if runner == "DirectRunner" else runner, **beam_options}
    if runner in _LOCAL:
        opts.setdefault("direct_num_workers", num_workers)
        opts.setdefault("direct_running_mode", "multi_processing" if num_workers > 1 else "in_memory")
    if runner != DASK_RUNNER:
        yield _pipeline_options(opts)
        return
    if "dask_npartitions" not in opts and "dask_partition_size" not in opts:
        opts["dask_npartitions"] = partitions  # one range each; Beam's default packs 128 ranges in one
    if opts.get("dask_client_address") or opts.get("dask_scheduler_file"):
        yield _pipeline_options(opts)
        return
    from distributed import LocalCluster

    # processes, not threads: the DoFns hold the GIL in parts; no dashboard (its port may be taken).
    # Quiet: a failed task's error reaches this process as the exception it raised (a PreprocessError
    # names file, line and column), so the workers' and the scheduler's own log lines (a failure logged
    # again with its traceback, workers killed at shutdown) would only bury it
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    try:
        with LocalCluster(n_workers=num_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.CRITICAL) as cluster:
            yield _pipeline_options({**opts, "dask_client_address": cluster.scheduler_address})
    finally:
        quiet.setLevel(level)


def _pipeline_options(opts: dict) -> PipelineOptions:
    """Options as Beam's command-line flags take them: DaskOptions' destinations differ from their
    flag names (--dask_client_address -> address), so the dask_* ones go in as flags; the rest as keywords."""
    flags = [f"--{k}={v}" for k, v in opts.items() if k.startswith("dask_")]
    return PipelineOptions(flags=flags, **{k: v for k, v in opts.items() if not k.startswith("dask_")})
