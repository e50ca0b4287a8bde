"""`nmtrec predict`: score the raw rows of a data file with an exported model -> Parquet.

The file is read as preprocessing reads it (components/preprocess/read.py: the same format, header
check, byte ranges and bad-row messages naming file, line and column), one byte range at a time, so
memory stays bounded by the range, not the file. Each range's rows are scored in batches and appended
to the Parquet file; the output appears only complete (`<output>.tmp`, then renamed).

Output columns: `row` (0-based position of the scored row), `line` (its line in the input file, 1-based,
header and blank lines counted) and one probability column per task, in priority order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from nmtrec.components.common.files import atomic_file
from nmtrec.components.preprocess.read import RangeReader, byte_ranges, check_columns, inspect_file
from nmtrec.components.preprocess.schemas import get_format
from nmtrec.components.serve.bundle import MANIFEST, load_program, read_manifest
from nmtrec.components.serve.errors import ServeError


@dataclass(frozen=True)
class PredictResult:
    rows: int
    bad_rows_skipped: int
    tasks: list[str]
    output: Path


def raw_inputs(table: pa.Table, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [N, C], present bool [N, C]) of the model's input columns; a null is absent."""
    ids = np.zeros((table.num_rows, len(columns)), dtype=np.int64)
    present = np.zeros((table.num_rows, len(columns)), dtype=bool)
    for j, name in enumerate(columns):
        col = table.column(name)
        present[:, j] = col.is_valid().to_numpy(zero_copy_only=False)
        ids[:, j] = col.fill_null(0).to_numpy()
    return ids, present


@torch.no_grad()
def score(program, ids: np.ndarray, present: np.ndarray, tasks: list[str], batch_rows: int) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {t: [] for t in tasks}
    for start in range(0, len(ids), batch_rows):
        end = start + batch_rows
        out = program(torch.from_numpy(ids[start:end]), torch.from_numpy(present[start:end]))
        for t in tasks:
            parts[t].append(out[t].numpy())
    return {t: np.concatenate(p) if p else np.zeros(0, np.float32) for t, p in parts.items()}


def _reader(manifest: dict, model_dir: Path, input_path: str, on_bad_rows: str) -> tuple[RangeReader, list[str]]:
    try:
        fmt = get_format(manifest["data_format"])
    except ValueError as e:
        raise ServeError(f"{model_dir / MANIFEST}: {e}") from None
    layout = inspect_file(input_path, fmt)
    columns = list(manifest["inputs"]["columns"])
    features = manifest["features"]
    sparse = [c for f in features.values() if f["pooling"] == "single" for c in f["columns"]]
    check_columns(layout, sparse, [c for c in columns if c not in sparse], [])
    reader = RangeReader(layout, [c for c in layout.columns if c in columns], on_bad_rows)
    reader.skip_hint = "give --on-bad-rows skip"
    return reader, columns


def predict_file(model_dir: str | Path, input_path: str | Path, output: str | Path, *, on_bad_rows: str = "error",
                 chunk_bytes: int = 16 << 20, batch_rows: int = 65536) -> PredictResult:
    if batch_rows < 1:
        raise ServeError(f"--batch-rows must be at least 1, got {batch_rows}")
    manifest = read_manifest(model_dir)
    program = load_program(model_dir)
    tasks = list(manifest["tasks"])
    if {"row", "line"} & set(tasks):
        raise ServeError(f"{Path(model_dir) / MANIFEST}: a task named 'row' or 'line' would clash with the output's "
                         f"own columns")
    reader, columns = _reader(manifest, Path(model_dir), str(input_path), on_bad_rows)
    layout = reader.layout
    output = Path(output)
    if output.is_dir():
        raise ServeError(f"--output {output}: is a directory, expected a Parquet file path")
    output.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("row", pa.int64()), ("line", pa.int64())] + [(t, pa.float32()) for t in tasks])
    ranges = byte_ranges(layout, chunk_bytes)
    rows = bad = 0
    next_line = layout.first_line
    with atomic_file(output) as tmp, pq.ParquetWriter(tmp, schema) as writer, \
            tqdm(total=ranges[-1][2] - layout.data_start, unit="B", unit_scale=True, desc="predict") as bar:
        for _, start, end in ranges:
            parsed = reader.read(start, end)
            ids, present = raw_inputs(parsed.table, columns)
            scores = score(program, ids, present, tasks, batch_rows)
            n = parsed.table.num_rows
            writer.write_table(pa.table({"row": np.arange(rows, rows + n), "line": next_line + parsed.lines,
                                         **scores}, schema=schema))
            rows, bad, next_line = rows + n, bad + parsed.bad, next_line + parsed.line_count
            bar.update(end - start)
            bar.set_postfix(rows=rows)
    return PredictResult(rows, bad, tasks, output)
