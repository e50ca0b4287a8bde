"""Preprocess Tenrec-format CSV into Parquet splits + a feature spec, with Apache Beam.

The file is cut into byte ranges aligned to line starts; each range is parsed by pyarrow into a
record batch, so Beam moves Arrow batches, not one dict per row. Two passes:
  1. count ids per categorical feature -> vocabularies (index 0 = unknown / null / padding);
  2. encode every batch with the vocabularies (side input), split it train/valid/test by a seeded
     draw per (range, row) that does not depend on the runner's parallelism, and write Parquet.
Output goes to a temporary directory that is renamed into place only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions

SPLITS = ("train", "valid", "test")
NULLS = ["\\N", ""]


class PreprocessError(ValueError):
    """Input that cannot be preprocessed; the message names file, line and column."""


@dataclass(frozen=True)
class PreprocessSpec:
    sparse: list[str]
    bags: dict[str, list[str]]
    bag_tables: dict[str, str]
    labels: list[str]
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    min_count: int = 1
    seed: int = 0
    chunk_bytes: int = 64 << 20
    runner: str = "DirectRunner"
    num_workers: int = 1
    extra_options: dict = field(default_factory=dict)

    def id_columns(self) -> list[str]:
        return self.sparse + [c for cols in self.bags.values() for c in cols]


def byte_ranges(path: str, chunk_bytes: int) -> list[tuple[str, int, int, int]]:
    """(path, range index, start, end) covering the data lines, each range ending at a newline."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = f.readline()
        if not header.strip():
            raise PreprocessError(f"{path}: line 1: empty file, expected a CSV header")
        start = f.tell()
        ranges = []
        while start < size:
            f.seek(min(start + chunk_bytes, size))
            if f.tell() < size:
                f.readline()  # move to the next line start
            end = f.tell()
            ranges.append((path, len(ranges), start, end))
            start = end
    return ranges


def read_header(path: str) -> list[str]:
    with open(path, "rb") as f:
        return f.readline().decode().strip().split(",")


class ReadRange(beam.DoFn):
    """Parse one byte range of the CSV into a pyarrow RecordBatch (ids as int64, nulls allowed)."""

    def __init__(self, columns: list[str], id_columns: list[str]):
        self.columns = columns
        self.id_columns = id_columns

    def process(self, rng):
        path, index, start, end = rng
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        types = {c: pa.int64() for c in self.columns}
        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(column_names=self.columns),
                convert_options=pacsv.ConvertOptions(column_types=types, null_values=NULLS,
                                                     strings_can_be_null=True),
            )
        except pa.ArrowInvalid as e:
            line = 1 + _line_of(path, start)
            raise PreprocessError(f"{path}: in lines from {line + 1}: {e}") from None
        yield index, table.combine_chunks()


def _line_of(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n")


class CountIds(beam.DoFn):
    def __init__(self, feature_columns: dict[str, list[str]]):
        self.feature_columns = feature_columns  # table -> raw columns feeding it

    def process(self, item):
        _, table = item
        for tab, cols in self.feature_columns.items():
            values = pa.chunked_array([table.column(c) for c in cols]).combine_chunks()
            counts = pc.value_counts(values.drop_null())
            yield tab, (counts.field("values").to_numpy(), counts.field("counts").to_numpy())


class MergeCounts(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, pair):
        for v, c in zip(*pair):
            acc[int(v)] = acc.get(int(v), 0) + int(c)
        return acc

    def merge_accumulators(self, accs):
        out = {}
        for a in accs:
            for k, c in a.items():
                out[k] = out.get(k, 0) + c
        return out

    def extract_output(self, acc):
        return acc


def build_vocab(counts: dict[int, int], min_count: int, drop: set[int] = frozenset()) -> np.ndarray:
    """Raw ids kept, most frequent first (ties by id); position + 1 is the encoded index."""
    kept = [(-c, v) for v, c in counts.items() if c >= min_count and v not in drop]
    kept.sort()
    return np.array([v for _, v in kept], dtype=np.int64)


class EncodeAndSplit(beam.DoFn):
    def __init__(self, spec: PreprocessSpec):
        self.spec = spec

    def process(self, item, vocabs):
        index, table = item
        s = self.spec
        out = {}
        for col in s.sparse:
            out[col] = _encode(table.column(col), vocabs[col])
        for bag, cols in s.bags.items():
            vocab = vocabs[s.bag_tables.get(bag, bag)]
            enc = np.stack([_encode(table.column(c), vocab).to_numpy() for c in cols], axis=1)
            keep = enc > 0  # unknown ids and padding (0) are dropped from the bag
            offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32)
            out[bag] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(enc[keep], pa.int64()))
        for col in s.labels:
            out[col] = pc.fill_null(table.column(col), 0).cast(pa.float32())
        encoded = pa.table(out)
        draw = np.random.default_rng([s.seed, index]).random(encoded.num_rows)
        bounds = np.cumsum(s.split)
        which = np.searchsorted(bounds, draw, side="right").clip(0, 2)
        for k, name in enumerate(SPLITS):
            part = encoded.filter(pa.array(which == k))
            if part.num_rows:
                yield beam.pvalue.TaggedOutput(name, part)


def _encode(column, vocab: np.ndarray) -> pa.Array:
    idx = pc.index_in(column, value_set=pa.array(vocab, pa.int64()))
    return pc.fill_null(pc.add(idx, 1), 0).cast(pa.int64()).combine_chunks() \
        if isinstance(idx, pa.ChunkedArray) else pc.fill_null(pc.add(idx, 1), 0).cast(pa.int64())


def run_preprocess(csv_path: str, out_dir: str, spec: PreprocessSpec) -> dict:
    """Run the Beam job; return the feature spec also written to out_dir/feature_spec.json."""
    csv_path = str(csv_path)
    if not os.path.isfile(csv_path):
        raise PreprocessError(f"{csv_path}: input file not found")
    columns = read_header(csv_path) if os.path.getsize(csv_path) else []
    ranges = byte_ranges(csv_path, spec.chunk_bytes)
    needed = spec.id_columns() + spec.labels
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PreprocessError(f"{csv_path}: line 1: header lacks column(s) {missing}; found {columns}")

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tables = {c: [c] for c in spec.sparse}
    for bag, cols in spec.bags.items():
        tables.setdefault(spec.bag_tables.get(bag, bag), []).extend(cols)
    schema = _output_schema(spec)

    options = PipelineOptions(runner=spec.runner, direct_num_workers=spec.num_workers,
                              direct_running_mode="multi_processing" if spec.num_workers > 1 else "in_memory",
                              **spec.extra_options)
    with beam.Pipeline(options=options) as p:
        batches = p | "Ranges" >> beam.Create(ranges) | "Read" >> beam.ParDo(ReadRange(columns, needed))
        counts = batches | "Count" >> beam.ParDo(CountIds(tables)) | beam.CombinePerKey(MergeCounts())
        vocabs = counts | "Vocab" >> beam.Map(
            lambda kv: (kv[0], build_vocab(kv[1], spec.min_count, drop={0} if kv[0] in spec.bag_tables.values() else set())))
        split = batches | "Encode" >> beam.ParDo(EncodeAndSplit(spec), beam.pvalue.AsDict(vocabs)).with_outputs(*SPLITS)
        for name in SPLITS:
            _ = split[name] | f"Write{name}" >> beam.io.parquetio.WriteToParquetBatched(
                str(tmp / name / "part"), schema, file_name_suffix=".parquet")
        _ = vocabs | "WriteVocab" >> beam.Map(_write_vocab, str(tmp / "vocab"))

    feature_spec = _feature_spec(tmp, spec, tables, csv_path)
    (tmp / "feature_spec.json").write_text(json.dumps(feature_spec, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return feature_spec


def _output_schema(spec: PreprocessSpec) -> pa.Schema:
    fields = [pa.field(c, pa.int64()) for c in spec.sparse]
    fields += [pa.field(b, pa.list_(pa.int64())) for b in spec.bags]
    fields += [pa.field(c, pa.float32()) for c in spec.labels]
    return pa.schema(fields)


def _write_vocab(kv, vocab_dir):
    name, vocab = kv
    os.makedirs(vocab_dir, exist_ok=True)
    pq.write_table(pa.table({"raw_id": vocab}), os.path.join(vocab_dir, f"{name}.parquet"))


def _feature_spec(root: Path, spec: PreprocessSpec, tables: dict, source: str) -> dict:
    vocab_sizes = {}
    for t in tables:
        f = root / "vocab" / f"{t}.parquet"
        vocab_sizes[t] = (pq.read_metadata(f).num_rows if f.exists() else 0) + 1
    splits = {}
    for name in SPLITS:
        files = sorted(str(p.relative_to(root)) for p in (root / name).glob("*.parquet")) if (root / name).exists() else []
        splits[name] = {"files": files, "rows": sum(pq.read_metadata(root / f).num_rows for f in files)}
    return {
        "source": source,
        "sparse": {c: {"table": c} for c in spec.sparse},
        "bags": {b: {"table": spec.bag_tables.get(b, b), "columns": cols} for b, cols in spec.bags.items()},
        "tables": {t: {"vocab_size": vocab_sizes[t]} for t in tables},
        "labels": list(spec.labels),
        "splits": splits,
        "seed": spec.seed,
        "min_count": spec.min_count,
    }
