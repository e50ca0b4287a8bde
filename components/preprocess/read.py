"""Read a delimited file as pyarrow tables, one byte range at a time, with precise bad-row errors.

The file is cut into byte ranges that end at line ends, so each range parses on its own (on any
worker) into one Arrow table. pyarrow parses a range in C++; only when it rejects one is the range
re-scanned line by line in Python, to name the file, line, column and what was expected, or (policy
`skip`) to drop and count the bad lines.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from nmtrec.components.preprocess.schemas import NULLS, FileFormat

_INT = re.compile(rb"^-?\d+$")


class PreprocessError(ValueError):
    """Input that cannot be preprocessed; the message names file, line and column or config key."""


@dataclass(frozen=True)
class Layout:
    """Where the data of one file starts and how its columns are named and typed."""
    path: str
    fmt: FileFormat
    columns: tuple[str, ...]  # every column of the file, in order
    data_start: int  # byte offset of the first data line
    first_line: int  # 1-based line number of the first data line


def inspect_file(path: str, fmt: FileFormat) -> Layout:
    """Check the file exists, is not empty and has the expected header (or field count)."""
    if not os.path.isfile(path):
        raise PreprocessError(f"{path}: input file not found (expected {fmt.describe})")
    with open(path, "rb") as f:
        first = f.readline()
        data_start = f.tell()
    if not first.strip():
        raise PreprocessError(f"{path}: line 1: empty file, expected {fmt.describe}")
    fields = first.rstrip(b"\r\n").decode("utf-8", "replace").split(fmt.delimiter)
    if fmt.header:
        if all(_INT.match(x.strip().encode()) or x.strip() in NULLS for x in fields):
            raise PreprocessError(f"{path}: line 1: missing header: found data {fields[:4]}..., expected {fmt.describe}")
        if len(set(fields)) != len(fields) or any(not x.strip() for x in fields):
            raise PreprocessError(f"{path}: line 1: malformed header {fields}: names must be distinct and non-empty")
        return Layout(path, fmt, tuple(x.strip() for x in fields), data_start, 2)
    if len(fields) != len(fmt.columns):
        raise PreprocessError(f"{path}: line 1: expected {fmt.describe}, got {len(fields)} field(s): {fields[:4]}...")
    return Layout(path, fmt, fmt.columns, 0, 1)


def byte_ranges(layout: Layout, chunk_bytes: int) -> list[tuple[int, int, int]]:
    """(range index, start, end) covering the data lines, each ending at a line end."""
    size = os.path.getsize(layout.path)
    ranges, start = [], layout.data_start
    with open(layout.path, "rb") as f:
        while start < size:
            f.seek(min(start + chunk_bytes, size))
            if f.tell() < size:
                f.readline()  # run on to the next line start
            ranges.append((len(ranges), start, f.tell()))
            start = f.tell()
    if not ranges:
        raise PreprocessError(f"{layout.path}: line {layout.first_line}: no data rows after the header")
    return ranges


def _row_lines(data: bytes, rows: int, line_count: int) -> np.ndarray:
    """0-based line index within data of each of the `rows` rows pyarrow parsed: its non-empty lines.
    A line is what ends in '\n' (as `line_number` counts), so blank lines keep their numbers."""
    lines = line_count + (1 if data and not data.endswith(b"\n") else 0)
    if rows == lines and b"\r" not in data:  # no blank line and no other line end: row k is line k
        return np.arange(rows, dtype=np.int64)
    raw = np.frombuffer(data, np.uint8)
    starts = np.concatenate([[0], np.flatnonzero(raw == 10) + 1])
    starts = starts[starts < len(raw)]
    return np.flatnonzero((raw[starts] != 10) & (raw[starts] != 13)).astype(np.int64)


def line_number(layout: Layout, offset: int) -> int:
    """1-based line number of the line starting at `offset` (only computed when reporting errors)."""
    with open(layout.path, "rb") as f:
        lines, done = 1, 0
        while done < offset:
            block = f.read(min(1 << 24, offset - done))
            lines += block.count(b"\n")
            done += len(block)
    return lines


class Rows(NamedTuple):
    """One parsed byte range: its table and where each row's line is."""
    table: pa.Table
    bad: int  # bad lines skipped (policy `skip`)
    lines: np.ndarray  # 0-based index of each row's line among the range's lines (an error names
    #                    line_number(layout, start) + lines[k])
    line_count: int  # line ends ('\n') in the range: the next range's first line is this many further on


class RangeReader:
    """Parse byte ranges of one file into tables of `include` columns (ints; `true_*` as floats)."""

    skip_hint = "set data.on_bad_rows: skip"  # how the caller's user drops bad rows (predict: an option)

    def __init__(self, layout: Layout, include: list[str], on_bad_rows: str = "error", labels=()):
        self.layout = layout
        self.include = include
        self.on_bad_rows = on_bad_rows
        self.labels = set(labels)  # 0/1 label columns (an error says "label", not "id")
        self.types = {c: (pa.float64() if layout.fmt.is_truth(c) else pa.int64()) for c in include}

    def _parse(self, data: bytes) -> pa.Table:
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=list(self.layout.columns), block_size=8 << 20),
            parse_options=pacsv.ParseOptions(delimiter=self.layout.fmt.delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(column_types=self.types, include_columns=self.include,
                                                 null_values=NULLS, strings_can_be_null=True),
        )

    def read(self, start: int, end: int) -> Rows:
        """Parse the range [start, end): its table, bad lines skipped and where each row's line is."""
        with open(self.layout.path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        line_count = data.count(b"\n")
        try:
            table = self._parse(data)
            lines = _row_lines(data, table.num_rows, line_count)
            if len(lines) != table.num_rows:
                raise PreprocessError(f"{self.layout.path}: lines from {line_number(self.layout, start)}: "
                                      f"{len(lines)} lines but {table.num_rows} parsed rows")
            return Rows(table, 0, lines, line_count)
        except pa.ArrowInvalid as e:
            good, bad = self._scan(data, start)
            if not bad:  # pyarrow saw a problem that the line scan cannot place
                line = line_number(self.layout, start)
                raise PreprocessError(f"{self.layout.path}: lines from {line}: {e}") from None
            if self.on_bad_rows == "error":
                offset, column, reason = bad[0]
                line = line_number(self.layout, start) + data[:offset - start].count(b"\n")
                where = f", column {column!r}" if column else ""
                raise PreprocessError(f"{self.layout.path}: line {line}{where}: {reason} "
                                      f"({self.skip_hint} to drop and count such rows)") from None
            return Rows(self._parse(b"".join(line for _, _, line in good)), len(bad),
                        np.array([n for _, n, _ in good], np.int64), line_count)

    def _scan(self, data: bytes, start: int):
        """Split a range into good lines (offset, line index in the range, line) and (offset, column,
        reason) of bad ones."""
        delim = self.layout.fmt.delimiter.encode()
        n = len(self.layout.columns)
        checks = [(i, c, self.layout.fmt.is_truth(c)) for i, c in enumerate(self.layout.columns) if c in self.types]
        good, bad, offset, index = [], [], start, 0
        for line in data.splitlines(keepends=True):
            here, offset = offset, offset + len(line)
            here_index, index = index, index + line.count(b"\n")  # lines end in '\n' only, as in _line_starts
            body = line.rstrip(b"\r\n")
            if not body:
                continue
            fields = body.split(delim)
            problem = None
            if len(fields) != n:
                problem = (None, f"expected {n} fields ({self.layout.fmt.describe}), got {len(fields)}")
            else:
                for i, col, is_float in checks:
                    v = fields[i].strip()
                    text = v.decode("utf-8", "replace")
                    if text in NULLS:
                        continue
                    if is_float:
                        try:
                            float(v)
                        except ValueError:
                            problem = (col, f"expected a number, got {text[:40]!r}")
                    elif not _INT.match(v):
                        kind = "a 0/1 label" if col in self.labels else "an integer id"
                        problem = (col, f"expected {kind}, got {text[:40]!r}")
                    if problem:
                        break
            if problem:
                bad.append((here, *problem))
            else:
                good.append((here, here_index, line if line.endswith(b"\n") else line + b"\n"))
        return good, bad


def check_columns(layout: Layout, sparse, bag_columns, labels, labels_configured: bool = True) -> None:
    """Every configured feature and label column is in the file (the header, or the format's columns)."""
    labels_from = ("configured in data.labels" if labels_configured else
                   f"labels of the {layout.fmt.name} format, all read while data.labels is not set: list the ones "
                   f"this file has in data.labels")
    for key, cols in (("features.sparse", sparse), ("features.bags", bag_columns), ("data.labels", labels)):
        missing = [c for c in cols if c not in layout.columns]
        if missing:
            source = labels_from if key == "data.labels" else f"configured in {key}"
            raise PreprocessError(f"{layout.path}: line 1: no column(s) {missing} ({source}); "
                                  f"the file has {list(layout.columns)}")
