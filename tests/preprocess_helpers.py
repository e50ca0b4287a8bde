"""Plain-Python references for the preprocessing tests (no numpy, no Beam): the documented row hash,
decoding of encoded ids through the written vocabularies, and small config files."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import yaml

M = (1 << 64) - 1


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def ref_uniform(line: int, seed: int, salt: int) -> float:
    """The draw documented in components/preprocess/draws.py, with Python ints (key: line number)."""
    h = _mix(_mix((seed * (1 << 32) + salt) & M) ^ line)
    return (h >> 11) * 2.0**-53


def line_numbers(path: Path, header: bool = True) -> list[int]:
    """1-based line number (header and blank lines counted) of every non-empty data line."""
    with open(path, "rb") as f:
        return [i + 1 for i, line in enumerate(f) if line.strip() and not (header and i == 0)]


def read_rows(path: Path, delimiter: str = ",", header: bool = True) -> tuple[list[str], list[list]]:
    """(column names, rows) with ints, `\\N`/empty -> None and true_* as floats."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f, delimiter=delimiter))
    names = lines[0] if header else None
    body = lines[1:] if header else lines

    def value(name, x):
        if x in ("\\N", ""):
            return None
        return float(x) if name and name.startswith("true_") else int(x)
    rows = [[value(names[i] if names else None, x) for i, x in enumerate(r)] for r in body if r]
    return names, rows


def decode(dataset: Path, split: str, columns: list[str], tables: dict[str, str] | None = None) -> Counter:
    """Multiset of rows of one split with ids decoded to raw values (0 -> None, 1 -> 'OOV')."""
    spec = json.loads((dataset / "feature_spec.json").read_text())
    out = Counter()
    vocabs = {}
    for f in spec["splits"][split]["files"]:
        t = pq.read_table(dataset / f).to_pydict()
        for i in range(len(t[columns[0]])):
            row = []
            for c in columns:
                v = t[c][i]
                if c in spec["sparse"]:
                    table = spec["sparse"][c]["table"]
                    if table not in vocabs:
                        vocabs[table] = pq.read_table(dataset / spec["tables"][table]["vocab"]).column("raw_id").to_pylist()
                    v = None if v == 0 else "OOV" if v == 1 else vocabs[table][v - 2]
                row.append(v)
            out[tuple(row)] += 1
    return out


def write_config(path: Path, source: str, **data) -> Path:
    raw = {"tasks": ["like"], "seed": 5, "data": {"source": source, "path": "unused", **data}}
    if source == "tiktok":
        raw["features"] = {"sparse": ["uid", "item_id", "author_id", "music_id", "device"], "bags": {}, "bag_tables": {}}
    elif source == "tenrec":
        raw["features"] = {"sparse": ["user_id", "item_id", "video_category", "gender", "age"], "bags": {},
                           "bag_tables": {}}
    path.write_text(yaml.safe_dump(raw))
    return path
