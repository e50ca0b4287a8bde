"""Preprocess Tenrec / TikTok / synthetic files into Parquet splits + a feature spec, with Apache Beam.

Beam's elements are byte ranges of the file and per-range id counts; each DoFn parses its range into
one Arrow table and works on whole columns (numpy/pyarrow), never one dict per row. Two pipelines,
run one after the other on the same runner, each reading every range once:
  1. count: ids per embedding table, rows, bad rows, label counts and the lines of every range, as
     (key, (values, counts)) pairs merged by one CombinePerKey -> vocab/*.parquet + stats.json;
  2. encode: encoded with the vocabularies (loaded once per worker), MTL-sampled and split by seeded
     draws keyed on each row's line number (draws.py; a range's first line number = the lines of the
     ranges before it, from pass 1), one Parquet shard per range and split, written by the DoFn
     itself through Beam's FileSystems.
Only single-output ParDo, CombinePerKey and Map, no side inputs: what every runner executes alike
(Beam's DaskRunner puts all tagged outputs of a ParDo into one collection, recomputes side inputs in
every task and computes only the branch of the last transform). What pass 2 needs from pass 1 (the
keep probability, each range's first line) is small and handed to its DoFn by this driver.
Re-reading a range is cheaper than shipping every parsed table between the passes, and writing
shards from the DoFn avoids three WriteToParquet sinks (each a stage chain of its own).
Runners: runners.py. Everything goes to `<out>.partial`, renamed to `<out>` only when complete.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from nmtrec.components.common.feature_spec import BagColumn, FeatureSpec, Sampling, SparseColumn, Split, Table
from nmtrec.components.common.files import atomic_dir
from nmtrec.components.preprocess import draws
from nmtrec.components.preprocess.read import (Layout, PreprocessError, RangeReader, byte_ranges, check_columns,
                                                inspect_file, line_number)
from nmtrec.components.preprocess.runners import is_local, resolve_runner, runner_options
from nmtrec.components.preprocess.schemas import TRUTH_PREFIX, get_format
from nmtrec.components.preprocess.vocab import FIRST_ID, NULL_INDEX, OOV_INDEX, Encoder, build_vocab, count_values, merge_counts

SPLITS = ("train", "valid", "test")
# rows per Parquet row group: the unit training streams and shuffles (components/train/data.py);
# small enough that a shuffle window mixes many of them, large enough to read efficiently
ROW_GROUP_ROWS = 1 << 15
__all__ = ["PreprocessError", "PreprocessSpec", "run_preprocess", "SPLITS"]


@dataclass(frozen=True)
class PreprocessSpec:
    sparse: list[str]
    bags: dict[str, list[str]]
    bag_tables: dict[str, str]
    labels: list[str]
    fmt: str = "tenrec"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_count: int = 1
    seed: int = 0
    chunk_bytes: int = 64 << 20
    runner: str = "DirectRunner"
    num_workers: int = 1
    beam_options: dict = field(default_factory=dict)
    on_bad_rows: str = "error"  # or "skip": drop and count rows that do not parse
    negative_ratio: Optional[float] = None  # Tenrec MTL protocol: keep negatives/positives ~ this
    sample_label: str = "click"
    labels_configured: bool = True  # False: `labels` are the format's defaults (data.labels not set)

    def tables(self) -> dict[str, list[tuple[str, bool]]]:
        """Embedding table -> (raw column, is a bag column) feeding it."""
        out = {c: [(c, False)] for c in self.sparse}
        for bag, cols in self.bags.items():
            out.setdefault(self.bag_tables.get(bag, bag), []).extend((c, True) for c in cols)
        return out

    def id_columns(self) -> list[str]:
        return list(self.sparse) + [c for cols in self.bags.values() for c in cols]


class _CountRange(beam.DoFn):
    """One range -> (key, (values, counts)) histograms, merged per key by _MergeCounts:
    ("table", name): raw ids of an embedding table; ("stats", "stats"): rows, bad rows and positives
    per label by name; ("stats", "lines"): the range's line count by range index."""

    def __init__(self, reader: RangeReader, spec: PreprocessSpec):
        self.reader, self.spec = reader, spec

    def process(self, rng):
        index, start, end = rng
        rows = self.reader.read(start, end)
        table = rows.table
        _check_labels(self.reader.layout, table, self.spec.labels, start, rows.lines)
        for name, cols in self.spec.tables().items():
            yield ("table", name), count_values([table.column(c) for c, _ in cols], [is_bag for _, is_bag in cols])
        stats = {"rows": table.num_rows, "bad_rows": rows.bad}
        for label in self.spec.labels:
            stats[f"positives.{label}"] = int(pc.sum(pc.equal(table.column(label), 1)).as_py() or 0)
        yield ("stats", "stats"), (np.array(list(stats)), np.array(list(stats.values()), np.int64))
        yield ("stats", "lines"), (np.array([index], np.int64), np.array([rows.line_count], np.int64))


def _check_labels(layout: Layout, table: pa.Table, labels: list[str], start: int, lines: np.ndarray) -> None:
    """Labels train binary heads: anything but 0, 1 or null is an error naming its line."""
    for label in labels:
        values = table.column(label).fill_null(0).to_numpy()
        wrong = np.flatnonzero((values != 0) & (values != 1))
        if len(wrong):
            line = line_number(layout, start) + int(lines[wrong[0]])
            raise PreprocessError(f"{layout.path}: line {line}, column {label!r}: expected a 0/1 label, "
                                  f"got {values[wrong[0]]} (set data.on_bad_rows: skip to drop and count such rows)")


class _MergeCounts(beam.CombineFn):
    """Accumulates (ids, counts) pairs, compacting them every few inputs to bound memory."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, pair):
        acc.append(pair)
        return [merge_counts(acc)] if len(acc) >= 8 else acc

    def merge_accumulators(self, accs):
        return [merge_counts([p for a in accs for p in a])]

    def extract_output(self, acc):
        return merge_counts(acc)


def _write_counts(kv, root: str, min_count: int):
    """Write one merged histogram: a table's vocabulary (vocab/<name>.parquet + .json), stats.json
    (rows, bad rows, positives per label) or range_lines.json (the line count of every range)."""
    (kind, name), (values, counts) = kv
    if kind == "stats":
        if name == "stats":
            _write_json({str(k): int(c) for k, c in zip(values, counts)}, FileSystems.join(root, "stats.json"))
        else:
            lines = {str(int(i)): int(c) for i, c in zip(values, counts)}
            _write_json(lines, FileSystems.join(root, "range_lines.json"))
        return name
    kept, kept_counts = build_vocab(values, counts, min_count)
    meta = {"distinct": int(len(values)), "kept": int(len(kept)), "oov_ids": int(len(values) - len(kept))}
    with FileSystems.create(FileSystems.join(root, "vocab", f"{name}.parquet")) as f:
        pq.write_table(pa.table({"raw_id": kept, "count": kept_counts}), f)
    _write_json(meta, FileSystems.join(root, "vocab", f"{name}.json"))
    return name


def _write_json(obj, path: str):
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj).encode())


class _EncodeRange(beam.DoFn):
    """Encode, sample and split one range; write its Parquet shard per split (part-<range>.parquet).

    A range's shards are written on a second thread while the next range is read and encoded (the
    Parquet writer releases the GIL); the bundle finishes only when its last write has, and a failed
    write fails it. Shard names are fixed by the range, so a retried bundle overwrites its own files;
    the output directory only becomes visible when the driver renames it after the whole run succeeded.
    """

    def __init__(self, reader: RangeReader, spec: PreprocessSpec, root: str, truth: dict[str, str], schema: pa.Schema,
                 first_lines: dict[int, int], keep_p: float):
        self.reader, self.spec, self.root, self.truth, self.schema = reader, spec, root, truth, schema
        self.first_lines, self.keep_p = first_lines, keep_p  # from pass 1: range index -> its first line number
        self.encoders = None

    def setup(self):
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="shards")

    def start_bundle(self):
        self._pending = None  # a failed bundle's write, if any, still runs first on the one writer thread

    def finish_bundle(self):
        self._wait()

    def teardown(self):
        self._writer.shutdown()

    def _wait(self):
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises the write's error

    def process(self, rng):
        index, start, end = rng
        s = self.spec
        if self.encoders is None:  # pass 1 wrote every vocabulary before this pipeline started
            self.encoders = {t: Encoder(pq.read_table(FileSystems.join(self.root, "vocab", f"{t}.parquet"))
                                        .column("raw_id").to_numpy()) for t in s.tables()}
        rows = self.reader.read(start, end)
        table = rows.table
        # draws keyed on line numbers, not byte offsets: see draws.py (a longer float would move every later row)
        lines = self.first_lines[index] + rows.lines
        which = draws.assign_split(draws.uniform(draws.line_hash(lines, s.seed, draws.SALT_SPLIT)), s.split)
        if s.negative_ratio is not None:
            u = draws.uniform(draws.line_hash(lines, s.seed, draws.SALT_SAMPLE))
            keep = (table.column(s.sample_label).fill_null(0).to_numpy() == 1) | (u < self.keep_p)
            which = np.where(keep, which, len(SPLITS))  # sampled out: after the last split
        # one gather puts the kept rows of each split together, in file order (a stable sort), so each
        # split's shard is a slice: no per-split filter, and dropped rows' bags are never encoded
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(SPLITS) + 1))
        encoded = pa.table(self._encode(table, order[:bounds[-1]]), schema=self.schema)
        self._wait()  # one range in flight at most: memory stays at two encoded ranges
        self._pending = self._writer.submit(self._write, index, encoded, bounds)
        return ()

    def _write(self, index: int, encoded: pa.Table, bounds: np.ndarray) -> None:
        for k, name in enumerate(SPLITS):
            if bounds[k + 1] > bounds[k]:
                with FileSystems.create(FileSystems.join(self.root, name, f"part-{index:05d}.parquet")) as f:
                    pq.write_table(encoded.slice(bounds[k], bounds[k + 1] - bounds[k]), f,
                                   row_group_size=ROW_GROUP_ROWS)

    def _encode(self, table: pa.Table, rows: np.ndarray) -> dict:
        """The output columns of the table's `rows` (indices, in output order)."""
        s = self.spec
        out = {c: self.encoders[c].encode(table.column(c))[rows] for c in s.sparse}
        for bag, cols in s.bags.items():
            # 0 is padding and null is missing: both leave the bag; OOV stays
            raw = np.stack([_zero_filled(table.column(c)) for c in cols], axis=1)[rows].astype(np.int64, copy=False)
            present = raw != 0
            ids = self.encoders[s.bag_tables.get(bag, bag)].lookup(raw[present])  # row by row, as the list
            bag_offsets = np.concatenate([[0], np.cumsum(present.sum(1))]).astype(np.int32)
            out[bag] = pa.ListArray.from_arrays(pa.array(bag_offsets), pa.array(ids, pa.int64()))
        for c in s.labels:
            out[c] = _zero_filled(table.column(c))[rows].astype(np.float32)
        for col in self.truth.values():
            out[col] = table.column(col).take(pa.array(rows))
        return out


def _zero_filled(column: pa.ChunkedArray) -> np.ndarray:
    return (column.fill_null(0) if column.null_count else column).to_numpy()


def _keep_probability(spec: PreprocessSpec, stats: dict) -> float:
    if spec.negative_ratio is None:
        return 1.0
    pos = stats[f"positives.{spec.sample_label}"]
    return draws.keep_probability(pos, stats["rows"] - pos, spec.negative_ratio)


def _run(build, options: PipelineOptions) -> None:
    """Run one pipeline to its end; a PreprocessError raised inside a worker comes back as itself."""
    p = beam.Pipeline(options=options)
    try:
        with p:
            build(p)
    except Exception as e:  # Beam re-raises or wraps worker errors, adding the step name
        m = re.search(r"PreprocessError: (.+)", str(e))
        text = str(e) if isinstance(e, PreprocessError) else m.group(1) if m else None
        if text is None:
            raise
        raise PreprocessError(re.sub(r"\s*\[while running.*$", "", text, flags=re.S)) from None
    finally:
        client = getattr(getattr(p, "result", None), "client", None)  # DaskRunner's client of the cluster
        if client is not None:
            client.close()


def _check_columns(layout: Layout, spec: PreprocessSpec):
    check_columns(layout, spec.sparse, [c for v in spec.bags.values() for c in v], spec.labels, spec.labels_configured)
    if spec.negative_ratio is not None and spec.sample_label not in spec.labels:
        raise PreprocessError(f"data.sample_label {spec.sample_label!r} must be one of data.labels {spec.labels}")


def run_preprocess(source: str, out_dir: str, spec: PreprocessSpec) -> FeatureSpec:
    """Run both Beam passes; return the feature spec also written to out_dir/feature_spec.json."""
    source = str(source)
    runner = resolve_runner(spec.runner)
    layout = inspect_file(source, get_format(spec.fmt))
    _check_columns(layout, spec)
    truth = {c[len(TRUTH_PREFIX):]: c for c in layout.columns
             if c.startswith(TRUTH_PREFIX) and c[len(TRUTH_PREFIX):] in spec.labels}
    needed = set(spec.id_columns()) | set(spec.labels)
    counter = RangeReader(layout, [c for c in layout.columns if c in needed], spec.on_bad_rows, spec.labels)
    reader = RangeReader(layout, [c for c in layout.columns if c in needed | set(truth.values())], spec.on_bad_rows,
                         spec.labels)
    ranges = byte_ranges(layout, spec.chunk_bytes)

    with atomic_dir(out_dir) as tmp, runner_options(runner, spec.num_workers, spec.beam_options, len(ranges)) as opts:
        # no reshuffle on one local worker: it only adds a shuffle stage
        reshuffle = not is_local(runner, spec.num_workers)

        def count(p):
            _ = (p | "Ranges" >> beam.Create(ranges, reshuffle=reshuffle)
                 | "Count" >> beam.ParDo(_CountRange(counter, spec))
                 | "Merge" >> beam.CombinePerKey(_MergeCounts())
                 | "Write" >> beam.Map(_write_counts, str(tmp), spec.min_count))
        _run(count, opts)
        stats = json.loads((tmp / "stats.json").read_text())
        keep_p = _keep_probability(spec, stats)
        # a range's first line number: the lines of the ranges before it
        range_lines = json.loads((tmp / "range_lines.json").read_text())
        line_counts = np.array([range_lines[str(i)] for i in range(len(ranges))], np.int64)
        starts = layout.first_line + np.concatenate([[0], np.cumsum(line_counts)[:-1]])
        first_lines = {int(i): int(n) for i, n in enumerate(starts)}

        def encode(p):
            _ = (p | "Ranges" >> beam.Create(ranges, reshuffle=reshuffle)
                 | "Encode" >> beam.ParDo(_EncodeRange(reader, spec, str(tmp), truth, _output_schema(spec, truth),
                                                       first_lines, keep_p)))
        _run(encode, opts)
        feature_spec = _feature_spec(tmp, spec, source, stats, keep_p, truth)
        feature_spec.write(tmp)
    return feature_spec


def _output_schema(spec: PreprocessSpec, truth: dict[str, str]) -> pa.Schema:
    fields = [pa.field(c, pa.int64()) for c in spec.sparse]
    fields += [pa.field(b, pa.list_(pa.int64())) for b in spec.bags]
    fields += [pa.field(c, pa.float32()) for c in spec.labels]
    fields += [pa.field(c, pa.float64()) for c in truth.values()]
    return pa.schema(fields)


def _feature_spec(root: Path, spec: PreprocessSpec, source: str, stats: dict, keep_p: float,
                  truth: dict) -> FeatureSpec:
    tables = {}
    for t in spec.tables():
        meta = json.loads((root / "vocab" / f"{t}.json").read_text())
        tables[t] = Table(vocab_size=meta["kept"] + FIRST_ID, null_index=NULL_INDEX, oov_index=OOV_INDEX,
                          distinct_ids=meta["distinct"], oov_ids=meta["oov_ids"], vocab=f"vocab/{t}.parquet")
    splits, split_positives = {}, {}
    for name in SPLITS:
        files = sorted(str(p.relative_to(root)) for p in (root / name).glob("*.parquet")) if (root / name).exists() else []
        splits[name] = Split(files=files, rows=sum(pq.read_metadata(root / f).num_rows for f in files))
        # positives per label (label columns only: cheap), so a one-class task is refused before training
        counts = dict.fromkeys(spec.labels, 0)
        for f in files:
            labels = pq.read_table(root / f, columns=list(spec.labels))
            for lab in spec.labels:
                counts[lab] += int(pc.sum(pc.equal(labels.column(lab), 1)).as_py() or 0)
        split_positives[name] = counts
    return FeatureSpec(
        source=source,
        format=spec.fmt,
        sparse={c: SparseColumn(table=c) for c in spec.sparse},
        bags={b: BagColumn(table=spec.bag_tables.get(b, b), columns=cols) for b, cols in spec.bags.items()},
        tables=tables,
        labels=list(spec.labels),
        truth=truth,
        splits=splits,
        rows_read=stats["rows"],
        bad_rows_skipped=stats["bad_rows"],
        positives={lab: stats[f"positives.{lab}"] for lab in spec.labels},
        split_positives=split_positives,
        sampling=None if spec.negative_ratio is None else Sampling(
            label=spec.sample_label, negative_ratio=spec.negative_ratio, negative_keep_probability=keep_p),
        split_fractions=list(spec.split),
        seed=spec.seed,
        min_count=spec.min_count,
    )
