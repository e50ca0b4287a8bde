"""Cost against rows: Beam preprocessing, 2-process training and evaluation on synthetic Tenrec data.

`nmtrec bench scale [--rows 1000000,4000000,16000000]`: for each size a synthetic Tenrec-schema CSV
(users and items fixed, so the model is the same at every size), then, each in fresh processes:
preprocessing (rows/s, peak RSS), one training stage with `--nproc` processes under torchrun as the
pipeline's stage step runs it (gloo on the CPU; samples/s of its epoch, peak RSS of every process)
and the evaluate step's scoring of the test split (rows/s, peak RSS). Peak RSS is the kernel's high
water mark of each process (getrusage). Writes scale.json, scale.md and scale.png (cost against rows)
under --out; prints the table, then one JSON line: {rows, train_rss_ratio, eval_rss_ratio,
train_throughput_ratio, ...}, each ratio the largest size's figure over the smallest's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(__file__).resolve().parents[1]  # the checkout: children import benchmarks.scale from here
WORKER = Path(__file__).with_name("scale_worker.py")
TARGETS = {"rss_ratio_max": 1.5, "throughput_ratio_min": 0.8}  # issue 14: 16M rows against 1M


def add_arguments(p) -> None:
    p.add_argument("--rows", default="1000000,4000000,16000000",
                   help="comma-separated sizes of the synthetic file (rows), smallest first")
    p.add_argument("--out", default="runs/bench-scale", help="where scale.json/.md/.png and the data go")
    p.add_argument("--nproc", type=int, default=2, help="training processes (torchrun)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=300_000)
    p.add_argument("--chunk-mib", type=int, default=64, help="Beam byte-range size (data.chunk_bytes)")
    p.add_argument("--keep-data", action="store_true", help="keep each size's CSV and dataset")


def train_config(args) -> dict:
    """One stage (click), a small MMoE: the data path's cost shows next to the model's."""
    return {"name": "bench-scale", "seed": 1, "tasks": ["click"],
            "model": {"arch": "mmoe", "embedding_dim": 16, "num_experts": 4, "expert_dims": [64], "tower_dims": [32]},
            "train": {"batch_size": args.batch_size, "max_epochs": 1, "patience": 0, "nproc": args.nproc,
                      "threads": 1, "sharding": ["table_wise"]}}


# -- children (fresh interpreters; each prints one JSON line) --------------------------------------
def _child_preprocess(csv: str, out: str, chunk_mib: int) -> None:
    from benchmarks.preprocess import beam_spec
    from nmtrec.components.preprocess.beam_pipeline import run_preprocess

    spec = beam_spec(chunk_mib, seed=1)
    start = time.perf_counter()
    fs = run_preprocess(csv, out, spec)
    print(json.dumps({"seconds": time.perf_counter() - start, "rows": fs.rows_read}))


def _child_evaluate(ckpt: str, dataset: str) -> None:
    from nmtrec.components.evaluate.scoring import evaluate_checkpoint
    from nmtrec.components.common.feature_spec import FeatureSpec

    start = time.perf_counter()
    metrics, _ = evaluate_checkpoint(ckpt, dataset)
    print(json.dumps({"seconds": time.perf_counter() - start, "rows": FeatureSpec.read(dataset).splits["test"].rows,
                      "auc": metrics["auc"]}))


def _measure(log: Path, call: str, *argv) -> dict:
    """Run `benchmarks.scale.<call>(*argv)` in a fresh interpreter: its JSON line and its peak RSS (the
    kernel's accounting of that process and of the processes it waited for); its stderr goes to `log`."""
    code = f"import sys; from benchmarks.scale import {call}; {call}(*sys.argv[1:])"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], cwd=HOME, stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"bench scale: {call} failed (wait status {status}); see {log}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_rss_mib": usage.ru_maxrss / 1024}


def _train(args, dataset: Path, out: Path, work: Path) -> dict:
    """One stage under torchrun (`--nproc` processes): samples/s of its epoch, each process's peak RSS."""
    from nmtrec.components.common.config import Config
    from nmtrec.components.common.feature_spec import FeatureSpec
    from nmtrec.components.common.manifest import read_history
    from nmtrec.components.train import checkpoint

    cfg = work / "train_config.json"
    cfg.write_text(Config.model_validate(train_config(args)).to_json())
    rss = work / "rss"
    shutil.rmtree(rss, ignore_errors=True)
    rss.mkdir()
    with open(work / "train.log", "w") as log:
        rc = subprocess.call([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={args.nproc}", str(WORKER), str(cfg), str(dataset), str(out), str(rss)],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    if rc != 0:
        raise RuntimeError(f"bench scale: training failed (exit {rc}); see {work / 'train.log'}")
    meta = checkpoint.read_meta(out)
    epoch = read_history(out, meta.stages[0])["valid"][0]
    per_rank = sorted((json.loads(f.read_text()) for f in rss.glob("rank*.json")), key=lambda r: r["rank"])
    return {"samples_per_s": epoch["steps_timed"] * args.batch_size / epoch["seconds"], "seconds": epoch["seconds"],
            "steps": epoch["steps_timed"], "train_rows": FeatureSpec.read(dataset).splits["train"].rows,
            "peak_rss_mib_per_process": [r["peak_rss_mib"] for r in per_rank]}


def measure_size(args, rows: int, root: Path) -> dict:
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate

    work = root / "data" / str(rows)
    work.mkdir(parents=True, exist_ok=True)
    csv, dataset, model = work / "data.csv", work / "dataset", work / "stage1"
    if not csv.exists():
        generate(SyntheticSpec(rows=rows, users=args.users, items=args.items, with_truth=False, seed=1), csv)
    for old in (dataset, model):
        shutil.rmtree(old, ignore_errors=True)
    pre = _measure(work / "preprocess.log", "_child_preprocess", csv, dataset, args.chunk_mib)
    train = _train(args, dataset, model, work)
    ev = _measure(work / "evaluate.log", "_child_evaluate", model, dataset)
    if not args.keep_data:
        for done in (csv, dataset, model):
            shutil.rmtree(done, ignore_errors=True) if done.is_dir() else done.unlink(missing_ok=True)
    return {"rows": rows,
            "preprocess": {"rows_per_s": pre["rows"] / pre["seconds"], "seconds": pre["seconds"],
                           "peak_rss_mib": pre["peak_rss_mib"]},
            "train": {**train, "peak_rss_mib": max(train["peak_rss_mib_per_process"])},
            "evaluate": {"rows": ev["rows"], "rows_per_s": ev["rows"] / ev["seconds"], "seconds": ev["seconds"],
                         "peak_rss_mib": ev["peak_rss_mib"], "auc": ev["auc"]}}


def ratios(sizes: list[dict]) -> dict:
    """The largest size's figure over the smallest's (peak RSS: per process, the largest process)."""
    lo, hi = sizes[0], sizes[-1]

    def r(step, key):
        return round(hi[step][key] / lo[step][key], 3)

    return {"train_rss_ratio": r("train", "peak_rss_mib"), "eval_rss_ratio": r("evaluate", "peak_rss_mib"),
            "train_throughput_ratio": r("train", "samples_per_s"),
            "eval_throughput_ratio": r("evaluate", "rows_per_s"),
            "preprocess_rss_ratio": r("preprocess", "peak_rss_mib"),
            "preprocess_throughput_ratio": r("preprocess", "rows_per_s")}


def table(result: dict) -> str:
    lines = ["| rows | preprocess rows/s | preprocess peak RSS MiB | train samples/s "
             f"({result['nproc']} processes) | train peak RSS MiB per process | evaluate rows/s | "
             "evaluate peak RSS MiB |", "|---|---|---|---|---|---|---|"]
    for s in result["sizes"]:
        per = " / ".join(f"{x:.0f}" for x in s["train"]["peak_rss_mib_per_process"])
        lines.append(f"| {s['rows']:,} | {s['preprocess']['rows_per_s']:,.0f} | {s['preprocess']['peak_rss_mib']:.0f} | "
                     f"{s['train']['samples_per_s']:,.0f} | {per} | {s['evaluate']['rows_per_s']:,.0f} | "
                     f"{s['evaluate']['peak_rss_mib']:.0f} |")
    r = result["ratios"]
    lines.append("")
    lines.append(f"Largest over smallest size: train peak RSS x{r['train_rss_ratio']}, evaluate peak RSS "
                 f"x{r['eval_rss_ratio']}, train samples/s x{r['train_throughput_ratio']} (targets: RSS <= "
                 f"x{TARGETS['rss_ratio_max']}, throughput >= x{TARGETS['throughput_ratio_min']}); load average "
                 f"{result['load_average']['start']} at the start, {result['load_average']['end']} at the end.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nmtrec.components.common.files import atomic_file

    rows = [s["rows"] for s in result["sizes"]]
    fig, (rss, speed) = plt.subplots(1, 2, figsize=(11, 4))
    for step, label in (("preprocess", "preprocess"), ("train", "train (largest process)"), ("evaluate", "evaluate")):
        rss.plot(rows, [s[step]["peak_rss_mib"] for s in result["sizes"]], "o-", label=label)
    for step, key, label in (("preprocess", "rows_per_s", "preprocess rows/s"),
                             ("train", "samples_per_s", "train samples/s"), ("evaluate", "rows_per_s", "evaluate rows/s")):
        speed.plot(rows, [s[step][key] for s in result["sizes"]], "o-", label=label)
    for ax, title in ((rss, "peak RSS per process (MiB)"), (speed, "throughput")):
        ax.set_xscale("log")
        ax.set_xlabel("rows of the synthetic file")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    speed.set_yscale("log")
    fig.tight_layout()
    with atomic_file(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    from nmtrec.components.common.config import ConfigError
    from nmtrec.components.common.files import write_json_atomic, write_text_atomic

    try:
        sizes = sorted(int(x) for x in args.rows.split(","))
    except ValueError:
        raise ConfigError(f"--rows: expected comma-separated row counts, got {args.rows!r}") from None
    if len(sizes) < 2 or sizes[0] <= 0:
        raise ConfigError(f"--rows: at least two positive sizes are needed for the ratios, got {args.rows!r}")
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    start_load = [round(x, 2) for x in os.getloadavg()]
    measured = []
    for rows in sizes:
        print(f"bench scale: {rows:,} rows ...", file=sys.stderr, flush=True)
        measured.append(measure_size(args, rows, root))
    result = {"rows": sizes, "nproc": args.nproc, "batch_size": args.batch_size, "users": args.users,
              "items": args.items, "cpus": os.cpu_count(),
              "load_average": {"start": start_load, "end": [round(x, 2) for x in os.getloadavg()]},
              "sizes": measured, "targets": TARGETS}
    result["ratios"] = ratios(measured)
    r = result["ratios"]
    result["meets_targets"] = (r["train_rss_ratio"] <= TARGETS["rss_ratio_max"]
                               and r["eval_rss_ratio"] <= TARGETS["rss_ratio_max"]
                               and r["train_throughput_ratio"] >= TARGETS["throughput_ratio_min"])
    write_json_atomic(root / "scale.json", result)
    md = table(result)
    write_text_atomic(root / "scale.md", md)
    plot(result, root / "scale.png")
    Console().print(Markdown(md))
    print(json.dumps({"rows": sizes, **r, "meets_targets": result["meets_targets"],
                      "json": str(root / "scale.json")}))
    return 0
