"""Beam preprocessing vs pyarrow's plain CSV->Parquet on the same synthetic Tenrec-schema file.

Each side runs in its own fresh process (timed inside it, imports excluded; peak RSS from the
kernel's accounting of that process and the workers it waited for), `--repeat` times interleaved;
the ratio is the median of the rounds' paired ratios (each pair runs back to back under the same
outside load on a shared machine), seconds and rows/s are medians, peak RSS the largest. Prints a table, then one JSON line:
{rows, beam_rows_per_s, pyarrow_rows_per_s, ratio, peak_rss_mib (Beam), pyarrow_peak_rss_mib, ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=2_000_000,
                   help="rows of the synthetic file (default 2M: Beam's fixed start-up cost dominates below ~1M)")
    p.add_argument("--workers", type=int, default=1, help="DirectRunner processes (direct_num_workers)")
    p.add_argument("--chunk-mib", type=int, default=32, help="byte-range size handed to each Beam bundle")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of (pyarrow, Beam) back to back; the median paired ratio counts")
    p.add_argument("--keep", help="directory to keep the generated file and outputs in (default: a temp dir)")


def beam_spec(chunk_mib: int, workers: int = 1, seed: int = 0):
    """The preprocessing spec of a synthetic Tenrec-schema file with the default features (also
    `nmtrec bench scale`'s)."""
    from nmtrec.components.common.config import FeatureConfig
    from nmtrec.components.preprocess.beam_pipeline import PreprocessSpec

    f = FeatureConfig()
    return PreprocessSpec(sparse=f.sparse, bags=f.bags, bag_tables=f.bag_tables,
                          labels=["click", "follow", "like", "share"], fmt="synthetic",
                          chunk_bytes=int(chunk_mib) << 20, num_workers=workers, seed=seed)


def _child(kind: str, csv: str, out: str, workers: int, chunk_mib: int) -> None:
    """Runs in a fresh interpreter; prints {"seconds": ..., "rows": ...}."""
    if kind == "pyarrow":
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        start = time.perf_counter()
        table = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(null_values=["\\N"], strings_can_be_null=True))
        pq.write_table(table, out)
        rows = table.num_rows
    else:
        from nmtrec.components.preprocess.beam_pipeline import run_preprocess

        spec = beam_spec(chunk_mib, workers)
        start = time.perf_counter()
        fs = run_preprocess(csv, out, spec)
        rows = fs.rows_read
    print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))


def _measure(kind: str, csv: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-c", "import sys; from benchmarks.preprocess import _child; "
           "_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))",
           kind, str(csv), str(out), str(args.workers), str(args.chunk_mib)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"bench {kind} run failed (status {status}): {stdout[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from tqdm import tqdm

    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        root.mkdir(parents=True, exist_ok=True)
        csv = root / f"synthetic_{args.rows}.csv"
        if not csv.exists():
            generate(SyntheticSpec(rows=args.rows, users=200_000, items=300_000, with_truth=False, seed=1), csv)
        runs = {"pyarrow": [], "beam": []}
        for _ in tqdm(range(args.repeat), desc="bench preprocess", unit="round"):
            runs["pyarrow"].append(_measure("pyarrow", csv, root / "pyarrow.parquet", args))
            runs["beam"].append(_measure("beam", csv, root / "beam_dataset", args))
        # each round's pair ran back to back under the same outside load: the median of the paired
        # ratios is steadier than a ratio of two separately chosen runs
        ratio = float(np.median([a["seconds"] / b["seconds"] for a, b in zip(runs["pyarrow"], runs["beam"])]))
        ref, beam = ({"rows": runs[k][0]["rows"], "seconds": float(np.median([r["seconds"] for r in runs[k]])),
                      "all_seconds": [round(r["seconds"], 2) for r in runs[k]],
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[k])} for k in ("pyarrow", "beam"))
        file_mib = round(csv.stat().st_size / 2**20, 1)
    rows = beam["rows"]
    if rows != ref["rows"]:
        raise RuntimeError(f"row counts differ: beam {rows}, pyarrow {ref['rows']}")
    result = {
        "rows": rows,
        "file_mib": file_mib,
        "workers": args.workers,
        "beam_seconds": beam["all_seconds"],
        "pyarrow_seconds": ref["all_seconds"],
        "beam_rows_per_s": round(rows / beam["seconds"]),
        "pyarrow_rows_per_s": round(rows / ref["seconds"]),
        "ratio": round(ratio, 3),
        "peak_rss_mib": round(beam["peak_rss_mib"]),  # of our Beam preprocessing
        "pyarrow_peak_rss_mib": round(ref["peak_rss_mib"]),
    }
    table = Table(title=f"preprocess: {rows:,} rows, ratio {result['ratio']} (Beam rows/s / pyarrow rows/s, "
                        f"median of {args.repeat} paired rounds)")
    for col in ("", "median seconds", "rows/s", "peak RSS MiB"):
        table.add_column(col, justify="right")
    table.add_row("Beam (ours)", f"{beam['seconds']:.2f}", f"{result['beam_rows_per_s']:,}", str(result["peak_rss_mib"]))
    table.add_row("pyarrow CSV->Parquet", f"{ref['seconds']:.2f}", f"{result['pyarrow_rows_per_s']:,}",
                  str(result["pyarrow_peak_rss_mib"]))
    Console().print(table)
    print(json.dumps(result))
    return 0
