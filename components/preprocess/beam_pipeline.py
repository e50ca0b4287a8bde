"""Preprocess Tenrec / TikTok / synthetic files into Parquet splits + a feature spec, with Apache Beam.

Beam's elements are byte ranges of the file and per-range id counts; each DoFn parses its range into
one Arrow table and works on whole columns (numpy/pyarrow), never one dict per row. One pipeline, two
reads of every range:
  1. count: ids per embedding table, rows, bad rows and label counts -> vocab/*.parquet + stats.json,
     and the number of lines of every range;
  2. encode (waits on 1 through side inputs): encoded with the vocabularies (loaded once per
     worker), MTL-sampled and split by seeded draws keyed on each row's line number (draws.py; a
     range's first line number = the lines of the ranges before it, from pass 1), one Parquet shard
     per range and split, written by the DoFn itself through Beam's FileSystems.
Re-reading a range is cheaper than shipping every parsed table between the passes, and writing
shards from the DoFn avoids three WriteToParquet sinks (each a stage chain of its own); it runs
unchanged on Flink/Spark/Dataflow (`runner` + `beam_options`).
Everything goes to `<out>.partial`, renamed to `<out>` only when complete.
"""
from __future__ import annotations

import json
import re
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
from nmtrec.components.preprocess.schemas import TRUTH_PREFIX, get_format
from nmtrec.components.preprocess.vocab import FIRST_ID, NULL_INDEX, OOV_INDEX, Encoder, build_vocab, count_values, merge_counts

SPLITS = ("train", "valid", "test")
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
    def __init__(self, reader: RangeReader, spec: PreprocessSpec):
        self.reader, self.spec = reader, spec

    def process(self, rng):
        index, start, end = rng
        table, bad, offsets, _, line_count = self.reader.read(start, end)
        yield beam.pvalue.TaggedOutput("lines", (index, line_count))
        _check_labels(self.reader.layout, table, self.spec.labels, offsets)
        for name, cols in self.spec.tables().items():
            yield name, count_values([table.column(c) for c, _ in cols], [is_bag for _, is_bag in cols])
        stats = {"rows": table.num_rows, "bad_rows": bad}
        for label in self.spec.labels:
            stats[f"positives.{label}"] = int(pc.sum(pc.equal(table.column(label), 1)).as_py() or 0)
        yield beam.pvalue.TaggedOutput("stats", stats)


def _check_labels(layout: Layout, table: pa.Table, labels: list[str], offsets: np.ndarray) -> None:
    """Labels train binary heads: anything but 0, 1 or null is an error naming its line."""
    for label in labels:
        values = table.column(label).fill_null(0).to_numpy()
        wrong = np.flatnonzero((values != 0) & (values != 1))
        if len(wrong):
            line = line_number(layout, int(offsets[wrong[0]]))
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


class _SumDicts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, d):
        for k, v in d.items():
            acc[k] = acc.get(k, 0) + v
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for a in accs:
            self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


def _write_vocab(kv, vocab_dir: str, min_count: int):
    name, (values, counts) = kv
    kept, kept_counts = build_vocab(values, counts, min_count)
    meta = {"distinct": int(len(values)), "kept": int(len(kept)), "oov_ids": int(len(values) - len(kept))}
    with FileSystems.create(FileSystems.join(vocab_dir, f"{name}.parquet")) as f:
        pq.write_table(pa.table({"raw_id": kept, "count": kept_counts}), f)
    with FileSystems.create(FileSystems.join(vocab_dir, f"{name}.json")) as f:
        f.write(json.dumps(meta).encode())
    return name, meta


def _write_json(obj, path: str):
    with FileSystems.create(path) as f:
        f.write(json.dumps(obj).encode())


class _EncodeRange(beam.DoFn):
    """Encode, sample and split one range; write its Parquet shard per split (part-<range>.parquet).

    Shard names are fixed by the range, so a retried bundle overwrites its own files; the output
    directory only becomes visible when the driver renames it after the whole pipeline succeeded.
    """

    def __init__(self, reader: RangeReader, spec: PreprocessSpec, root: str, truth: dict[str, str], schema: pa.Schema):
        self.reader, self.spec, self.root, self.truth, self.schema = reader, spec, root, truth, schema
        self.encoders = None

    def process(self, rng, stats, vocab_written, line_counts):
        index, start, end = rng
        s = self.spec
        if self.encoders is None:  # vocab_written (side input) guarantees the files exist
            self.encoders = {t: Encoder(pq.read_table(FileSystems.join(self.root, "vocab", f"{t}.parquet"))
                                        .column("raw_id").to_numpy()) for t in vocab_written}
        rows = self.reader.read(start, end)
        table = rows.table
        # draws keyed on line numbers, not byte offsets: see draws.py (a longer float would move every later row)
        first_line = self.reader.layout.first_line + sum(n for i, n in line_counts.items() if i < index)
        lines = first_line + rows.lines
        keep = np.ones(table.num_rows, dtype=bool)
        if s.negative_ratio is not None:
            u = draws.uniform(draws.line_hash(lines, s.seed, draws.SALT_SAMPLE))
            keep = (table.column(s.sample_label).fill_null(0).to_numpy() == 1) | (u < _keep_probability(s, stats))
        which = draws.assign_split(draws.uniform(draws.line_hash(lines, s.seed, draws.SALT_SPLIT)), s.split)
        out = {c: self.encoders[c].encode(table.column(c)) for c in s.sparse}
        for bag, cols in s.bags.items():
            enc = self.encoders[s.bag_tables.get(bag, bag)]
            ids = np.stack([enc.encode(table.column(c), zero_is_null=True) for c in cols], axis=1)
            present = ids != NULL_INDEX  # padding and nulls leave the bag; OOV stays
            bag_offsets = np.concatenate([[0], np.cumsum(present.sum(1))]).astype(np.int32)
            out[bag] = pa.ListArray.from_arrays(pa.array(bag_offsets), pa.array(ids[present], pa.int64()))
        for c in s.labels:
            out[c] = table.column(c).fill_null(0).to_numpy().astype(np.float32)
        for col in self.truth.values():
            out[col] = table.column(col)
        encoded = pa.table(out, schema=self.schema)
        for k, name in enumerate(SPLITS):
            mask = keep & (which == k)
            if mask.any():
                with FileSystems.create(FileSystems.join(self.root, name, f"part-{index:05d}.parquet")) as f:
                    pq.write_table(encoded.filter(pa.array(mask)), f)
                yield name, int(mask.sum())


def _keep_probability(spec: PreprocessSpec, stats: dict) -> float:
    if spec.negative_ratio is None:
        return 1.0
    pos = stats[f"positives.{spec.sample_label}"]
    return draws.keep_probability(pos, stats["rows"] - pos, spec.negative_ratio)


def _options(spec: PreprocessSpec) -> PipelineOptions:
    opts = {"runner": spec.runner, **spec.beam_options}
    if spec.runner in ("DirectRunner", "FnApiRunner"):
        opts.setdefault("direct_num_workers", spec.num_workers)
        opts.setdefault("direct_running_mode", "multi_processing" if spec.num_workers > 1 else "in_memory")
    return PipelineOptions(flags=[], **opts)  # never parse this process's own command line


def _run(build, spec: PreprocessSpec):
    """Run one pipeline; a PreprocessError raised inside a worker comes back as itself."""
    try:
        with beam.Pipeline(options=_options(spec)) as p:
            build(p)
    except Exception as e:  # Beam re-raises or wraps worker errors, adding the step name
        m = re.search(r"PreprocessError: (.+)", str(e))
        text = str(e) if isinstance(e, PreprocessError) else m.group(1) if m else None
        if text is None:
            raise
        raise PreprocessError(re.sub(r"\s*\[while running.*$", "", text, flags=re.S)) from None


def _check_columns(layout: Layout, spec: PreprocessSpec):
    check_columns(layout, spec.sparse, [c for v in spec.bags.values() for c in v], spec.labels, spec.labels_configured)
    if spec.negative_ratio is not None and spec.sample_label not in spec.labels:
        raise PreprocessError(f"data.sample_label {spec.sample_label!r} must be one of data.labels {spec.labels}")


def run_preprocess(source: str, out_dir: str, spec: PreprocessSpec) -> FeatureSpec:
    """Run both Beam passes; return the feature spec also written to out_dir/feature_spec.json."""
    source = str(source)
    layout = inspect_file(source, get_format(spec.fmt))
    _check_columns(layout, spec)
    truth = {c[len(TRUTH_PREFIX):]: c for c in layout.columns
             if c.startswith(TRUTH_PREFIX) and c[len(TRUTH_PREFIX):] in spec.labels}
    needed = set(spec.id_columns()) | set(spec.labels)
    counter = RangeReader(layout, [c for c in layout.columns if c in needed], spec.on_bad_rows, spec.labels)
    reader = RangeReader(layout, [c for c in layout.columns if c in needed | set(truth.values())], spec.on_bad_rows,
                         spec.labels)
    ranges = byte_ranges(layout, spec.chunk_bytes)

    with atomic_dir(out_dir) as tmp:
        def pipeline(p):
            # no reshuffle on one local worker: it only adds a shuffle stage
            local = spec.runner in ("DirectRunner", "FnApiRunner") and spec.num_workers == 1
            ranges_pc = p | "Ranges" >> beam.Create(ranges, reshuffle=not local)
            counted = ranges_pc | "Count" >> beam.ParDo(_CountRange(counter, spec)).with_outputs("stats", "lines", main="ids")
            vocab_written = (counted.ids | "MergeIds" >> beam.CombinePerKey(_MergeCounts())
                             | "WriteVocab" >> beam.Map(_write_vocab, str(tmp / "vocab"), spec.min_count))
            stats = counted.stats | "SumStats" >> beam.CombineGlobally(_SumDicts())
            _ = stats | "WriteStats" >> beam.Map(_write_json, str(tmp / "stats.json"))
            # second read of every range, after the vocabularies are written (side inputs)
            _ = ranges_pc | "Encode" >> beam.ParDo(_EncodeRange(reader, spec, str(tmp), truth, _output_schema(spec, truth)),
                                                   beam.pvalue.AsSingleton(stats), beam.pvalue.AsDict(vocab_written),
                                                   beam.pvalue.AsDict(counted.lines))
        _run(pipeline, spec)
        stats = json.loads((tmp / "stats.json").read_text())
        keep_p = _keep_probability(spec, stats)
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
