"""Prioritization on a family of planted worlds (+ the real Tenrec sbr extract): NMT vs single-task and the weight grid.

Every world (benchmarks/worlds.py: settings x world seeds) is trained with ONE config
(`configs/bench_priority.yaml`; a world replaces only its data section, the online setting also the
head and loss), several training seeds each: single_task (= NMT's stage 1, trained once per seed and
reused), nmt (stage 2 from it), equal_weights and the weight grid. Per world, over the seed means:
- gap = NMT primary AUC - single-task primary AUC; primary_ok: gap >= -0.005;
- not_dominated: no grid point has both AUCs >= NMT's;
- secondary_ok: NMT secondary >= (best secondary of the grid points whose primary >= single-task
  - 0.002) - 0.005 (ok when no grid point qualifies; the table says so);
- audit_ok: no breach in NMT's stage-2 audit in any seed (`audit_entries` picks the audit).
Results of every run accumulate in <output>/priority.json, keyed by a hash of what each training
depends on (its step inputs, the dataset) and the code it ran (components/, models/): a rerun with the
same config, `--set` overrides and code skips what is there; `--set nmt.*` retrains only NMT's stage 2;
`--reuse-baselines` keeps single-task and the joint baselines of older code (NMT always retrains). Writes a table,
<output>/priority.png, and as the last line one JSON object (worlds, mean_primary_gap, the four
fractions, seconds).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from nmtrec.components.common.files import write_text_atomic
from nmtrec.components.common.overrides import apply_overrides, parse_override

PRIMARY_OK = -0.005  # (a): NMT primary - single-task primary, per world
PRIMARY_MEAN_OK = -0.002  # (a): the same, mean over worlds
SECONDARY_SLACK = 0.002  # (c): grid points with primary >= single-task - this qualify
SECONDARY_OK = -0.005  # (c): NMT secondary - best qualifying grid secondary
GRID = ("0.9:0.1", "0.7:0.3", "0.5:0.5", "0.3:0.7", "0.1:0.9")
QUICK_GRID = ("0.9:0.1", "0.5:0.5", "0.1:0.9")
NOISE_T = 2.0  # a domination whose seed-paired margin is at least this many standard errors is beyond noise
TARGETS = {"primary_ok_fraction": 0.9, "not_dominated_fraction": 0.9, "secondary_ok_fraction": 0.8,
           "audit_ok_fraction": 0.9}
# 2: keys hash only what each step reads (step_reads), so a new or changed default elsewhere (an nmt.*
# key) keeps the baselines' results; 1 hashed the step's whole config, unread defaults included
VERSION = 2
# the sources whose every file keys the cached results: a code change retrains (--ignore-code: keep)
CODE_DIRS = ("components", "models")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/bench_priority.yaml", help="the one config of every world")
    p.add_argument("--output", default="runs/bench-priority", help="priority.json, priority.png, datasets, logs")
    p.add_argument("--worlds", default=None,
                   help="comma-separated world names or glob patterns (e.g. 'dense-*,sbr'); default: all")
    p.add_argument("--seeds", type=int, default=4, help="training seeds per world")
    p.add_argument("--first-seed", type=int, default=1, help="training seeds are first-seed .. first-seed + seeds - 1")
    p.add_argument("--world-seeds", default=None, metavar="N,N,...",
                   help="the planted worlds' seeds (default 1,2,3,4; others give worlds the defaults never saw)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (0: in this process)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override the config for every world (YAML value), e.g. nmt.z=3")
    p.add_argument("--quick", action="store_true", help="2 worlds x 1 seed, 3-point grid (smoke runs)")
    p.add_argument("--tiny", action="store_true", help="tiny worlds and 2 epochs (tests only: numbers mean nothing)")
    p.add_argument("--no-sbr", action="store_true", help="leave out the real Tenrec sbr extract")
    p.add_argument("--reuse-baselines", action="store_true",
                   help="reuse single_task (stage 1) and joint results trained by older code (components/, "
                        "models/ changed since); NMT's stage 2 retrains")
    p.add_argument("--ignore-code", action="store_true",
                   help="reuse every cached result (NMT too) although the code changed since")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target (a)-(d) is missed")
    p.add_argument("--list", action="store_true", help="list the worlds and exit")


# ---------------------------------------------------------------------------------------------- config

def world_config(base: dict, world, sets: list, grid: tuple[str, ...], tiny: bool = False):
    """The config of one world: the base, the world's data (and head/loss) overrides, then --set."""
    from nmtrec.components.common.config import Config

    raw = copy.deepcopy(base)
    for section, values in world.overrides().items():
        if section == "data":  # the world's data in place of the config's, split kept: one split for all worlds
            raw[section] = {**{k: v for k, v in raw.get(section, {}).items() if k == "split"}, **values}
        elif isinstance(values, dict):
            raw[section] = {**raw.get(section, {}), **values}
        else:
            raw[section] = values
    raw["methods"] = ["nmt", "single_task", "equal_weights"] + [f"weight_grid:{g}" for g in grid]
    if tiny:
        raw = apply_overrides(raw, [parse_override("train.max_epochs=2"), parse_override("train.patience=0")])
    raw = apply_overrides(raw, sets)
    raw["seed"] = world.seed
    return Config.model_validate(raw)


def _digest(obj) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_digest(root: Path, dirs=CODE_DIRS) -> str:
    h = hashlib.sha256()
    for d in dirs:
        for f in sorted((root / d).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def data_key(cfg, world) -> str:
    from nmtrec.components.common.step_inputs import Step, step_reads

    return _digest([world.name, step_reads(cfg, Step("generate")), step_reads(cfg, Step("preprocess")),
                    world.source_file()])


def method_keys(cfg, dkey: str, seed: int) -> dict[str, str]:
    """{method: key}: what each training depends on (its step inputs at this seed, the data); the code
    that ran it is stored beside (see `pick`)."""
    from nmtrec.components.common.step_inputs import Step, step_reads

    c = cfg.updated(seed=seed)
    s1 = step_reads(c, Step("stage", 0))
    keys = {"single_task": _digest([VERSION, "single_task", s1, dkey]),
            "nmt": _digest([VERSION, "nmt", s1, step_reads(c, Step("stage", 1)), dkey])}
    joint = step_reads(c, Step("joint"))
    for m in cfg.methods:
        if m not in keys:
            keys[m] = _digest([VERSION, m, joint, dkey])
    return keys


def pick(results: dict, key: str, code: str, any_code: bool = False) -> dict | None:
    """The cached result of `key`: the one trained by `code`, else (any_code) the newest one."""
    same = results.get(f"{key}.{code}")
    if same is not None or not any_code:
        return same
    older = [r for r in results.values() if r.get("key") == key]
    return max(older, key=lambda r: r.get("finished", "")) if older else None


# ---------------------------------------------------------------------------------------------- audit

def audit_entries(meta) -> tuple[str, list[dict]]:
    """(source, entries with a "breach" flag) of the last stage of an NMT manifest: the out-of-sample
    (test, paired) audit when the manifest has one, else the validation constraint audit.
    The one place that decides which audit `audit_ok` reads."""
    s = meta.stages[-1]
    for name in ("test_audit",):
        entries = getattr(s, name, None) or getattr(meta, name, None)
        if entries:
            return name, list(entries)
    return "constraint_audit", list(s.constraint_audit)


# ---------------------------------------------------------------------------------------------- worker

def _init_worker(log_dir: str) -> None:
    """Worker process: one intra-op thread, no progress bars, its output into a log file."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(log_dir) / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)


def _json_safe(x):
    """Plain JSON (numpy scalars and NaN -> float / None)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x


def build_world_data(job: dict) -> dict:
    """Generate (synthetic) and preprocess one world's dataset into job["dir"]; its oracle AUC."""
    import shutil

    from nmtrec.components.common.config import Config
    from nmtrec.components.common.step_inputs import Step, step_inputs_json
    from nmtrec.components.evaluate.oracle import oracle_report
    from nmtrec.components.generate.synthetic import SyntheticSpec, generate
    from nmtrec.components.preprocess.from_config import preprocess_from_config

    start = time.time()
    cfg = Config.from_json(job["config"])
    root = Path(job["dir"])
    dataset = root / "dataset"
    if not (dataset / "feature_spec.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        if cfg.data.source == "synthetic":
            csv = root / "data.csv"
            generate(SyntheticSpec(seed=cfg.seed, **cfg.data.synthetic.model_dump()), csv)
        else:
            csv = Path(cfg.data.path)
        preprocess_from_config(step_inputs_json(cfg, Step("preprocess")), str(csv), str(dataset))
        if cfg.data.source == "synthetic":
            csv.unlink()
    from nmtrec.components.common.feature_spec import FeatureSpec

    spec = FeatureSpec.read(dataset)
    info = {"world": job["world"], "oracle_auc": oracle_report(dataset, cfg.tasks).get("oracle_auc", {}),
            "rows": spec.rows_per_split(), "positives": {t: spec.positives.get(t) for t in cfg.tasks},
            "seconds": time.time() - start}
    (root / "info.json").write_text(json.dumps(_json_safe(info)))
    return _json_safe(info)


def _result(meta, metrics: dict, seconds: float, **extra) -> dict:
    """Test metrics, and the kept model's validation losses (what a selection rule may read: a variant's
    choice among cached results can then be replayed without retraining)."""
    return {"auc": metrics["auc"], "logloss": metrics.get("logloss"), "epochs": getattr(meta, "epochs", None),
            "valid_loss": getattr(meta, "valid_loss", None), "seconds": seconds, **extra}


def _save(results_dir: Path, key: str, record: dict) -> None:
    name = f"{key}.{record['code']}"
    record = {**record, "key": key, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = results_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(_json_safe(record)))
    tmp.replace(results_dir / f"{name}.json")


def train_unit(job: dict) -> dict:
    """One world x training seed: the methods in job["todo"] ({method: key}); each result saved as
    soon as it exists (results/<key>.json), stage 1's checkpoint kept for later NMT variants."""
    import shutil

    from nmtrec.components.common.config import Config
    from nmtrec.components.evaluate.scoring import evaluate_checkpoint
    from nmtrec.components.train.joint import run_joint
    from nmtrec.components.train.stage import run_stage

    cfg = Config.from_json(job["config"]).updated(seed=job["seed"])
    # threads: run-only, methods: not read by a training step (a stage cuts tasks to its own): no key changes
    cfg = cfg.updated(train={"threads": 1}, methods=["nmt"])
    dataset, results = job["dataset"], Path(job["results"])
    keys, todo = job["keys"], job["todo"]
    base = {"world": job["world"], "seed": job["seed"], "tasks": cfg.tasks, "sets": job["sets"], "code": job["code"]}
    s1 = Path(job["s1"])
    out = {}
    work = Path(job["ckpt"]) / f"work-{job['seed']}-{os.getpid()}"

    def stage1():
        if not (s1 / "stage.json").is_file():
            start = time.time()
            tmp = s1.with_name(s1.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            meta = run_stage(cfg, 0, dataset, str(tmp))
            tmp.rename(s1)
            return meta, time.time() - start
        from nmtrec.components.train.checkpoint import read_meta

        return read_meta(str(s1)), 0.0

    try:
        if "single_task" in todo or "nmt" in todo:
            meta, seconds = stage1()
            if "single_task" in todo:
                start = time.time()
                metrics, _ = evaluate_checkpoint(str(s1), dataset)
                rec = {**base, "method": "single_task",
                       **_result(meta.stages[-1], metrics, seconds + time.time() - start)}
                _save(results, keys["single_task"], rec)
                out["single_task"] = rec
        if "nmt" in todo:
            start = time.time()
            target = work / "nmt"
            meta = run_stage(cfg, 1, dataset, str(target), str(s1))
            metrics, _ = evaluate_checkpoint(str(target), dataset)
            source, entries = audit_entries(meta)
            s = meta.stages[-1]
            rec = {**base, "method": "nmt", **_result(s, metrics, time.time() - start),
                   "audit_source": source, "audit": entries, "breach": any(bool(a.get("breach")) for a in entries),
                   "lambda_final": s.lambda_final, "valid_audit": _json_safe(s.constraint_audit)}
            _save(results, keys["nmt"], rec)
            out["nmt"] = rec
            shutil.rmtree(target, ignore_errors=True)
        for m in todo:
            if m in ("single_task", "nmt"):
                continue
            start = time.time()
            target = work / m.replace(":", "_")
            meta = run_joint(cfg, m, dataset, str(target))
            metrics, _ = evaluate_checkpoint(str(target), dataset)
            rec = {**base, "method": m, **_result(meta, metrics, time.time() - start)}
            _save(results, keys[m], rec)
            out[m] = rec
            shutil.rmtree(target, ignore_errors=True)
    except Exception as e:  # one broken unit does not stop the bench; the traceback is in the worker's log
        import traceback

        traceback.print_exc()
        return {"world": job["world"], "seed": job["seed"], "done": sorted(out), "error": f"{type(e).__name__}: {e}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"world": job["world"], "seed": job["seed"], "done": sorted(out)}


# ---------------------------------------------------------------------------------------------- aggregation

def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def seed_means(runs: list[dict], tasks: list[str]) -> dict:
    """[{method: {"auc": {task: x}}} per seed] -> {method: {task: mean AUC over the seeds that have it}}."""
    methods = sorted({m for r in runs for m in r})
    return {m: {t: _mean([r[m]["auc"].get(t) for r in runs if m in r]) for t in tasks} for m in methods}


def domination_margin(runs: list[dict], tasks: list[str], method: str, point: str) -> dict:
    """How far a dominating grid point is ahead of `method`: on each task its seed-paired AUC difference
    (the same training seed, the same data) averaged over the seeds; the margin is the smaller of the two,
    with the standard error of that task's per-seed differences (None from one seed). A margin within
    noise (t < NOISE_T) is a domination that other training seeds may well undo."""
    import statistics

    pairs = {t: [(r[point]["auc"].get(t), r[method]["auc"].get(t)) for r in runs if point in r and method in r]
             for t in tasks[:2]}
    # a null AUC (one class in the split) has no difference, as seed_means leaves it out of its mean
    diffs = {t: [a - b for a, b in ps if a is not None and b is not None] for t, ps in pairs.items()}
    if not all(diffs.values()):
        return {"task": None, "margin": None, "se": None, "t": None}
    means = {t: statistics.fmean(d) for t, d in diffs.items()}
    axis = min(means, key=means.get)
    d = diffs[axis]
    se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else None
    return {"task": axis, "margin": means[axis], "se": se, "t": means[axis] / se if se else None}


def judge_world(runs: list[dict], tasks: list[str], grid: list[str], method: str = "nmt") -> dict:
    """The four per-world criteria on the seed means. `runs`: one {method: {"auc": {...}, "breach"?}} per
    seed; `grid`: the weight-grid method names in weight order (most weight on the primary first);
    `method`: the one judged (another than nmt gives the criteria's reference, see `reference_fractions`)."""
    p, s = tasks[0], tasks[1]
    mean = seed_means(runs, tasks)
    nmt_p, nmt_s, single = mean[method][p], mean[method][s], mean["single_task"][p]
    points = [(g, mean[g][p], mean[g][s]) for g in grid if g in mean]
    gap = nmt_p - single
    dominated_by = [g for g, gp, gs in points if gp >= nmt_p and gs >= nmt_s]
    margins = {g: domination_margin(runs, tasks, method, g) for g in dominated_by}
    strongest = max(margins, key=lambda g: -1.0 if margins[g]["margin"] is None else margins[g]["margin"]) \
        if margins else None
    qualifying = [(g, gp, gs) for g, gp, gs in points if gp >= single - SECONDARY_SLACK]
    if qualifying:
        best = max(qualifying, key=lambda x: x[2])
        secondary_ok = nmt_s >= best[2] + SECONDARY_OK
        best_name, best_s = best[0], best[2]
    else:
        secondary_ok, best_name, best_s = True, None, None
    breaches = [bool(r[method].get("breach")) for r in runs if method in r]
    return {
        "seeds": len(runs), "mean_auc": mean, "single_primary": single, "nmt_primary": nmt_p,
        "nmt_secondary": nmt_s, "gap": gap, "primary_ok": gap >= PRIMARY_OK,
        "dominated_by": dominated_by, "not_dominated": not dominated_by,
        "domination": None if strongest is None else {"by": strongest, **margins[strongest]},
        "dominated_beyond_noise": any((m["t"] or 0.0) >= NOISE_T for m in margins.values()),
        "best_qualifying": best_name, "best_qualifying_secondary": best_s,
        "secondary_margin": None if best_s is None else nmt_s - best_s,
        "secondary_ok": secondary_ok, "no_grid_point_qualifies": not qualifying,
        "audit_breaches": sum(breaches), "audit_ok": not any(breaches),
        "best_grid_primary": max((gp for _, gp, _ in points), default=None),
    }


def summarize(judged: dict[str, dict], seconds: float) -> dict:
    """The bench's last line: fractions of worlds meeting each criterion, the mean gap, the targets."""
    n = len(judged)

    def frac(key):
        return sum(1 for j in judged.values() if j[key]) / n if n else None

    gaps = [j["gap"] for j in judged.values()]
    out = {
        "worlds": n,
        "mean_primary_gap": round(sum(gaps) / n, 5) if n else None,
        "primary_ok_fraction": frac("primary_ok"),
        "not_dominated_fraction": frac("not_dominated"),
        "secondary_ok_fraction": frac("secondary_ok"),
        "audit_ok_fraction": frac("audit_ok"),
        # not a target: the share of worlds where a grid point is ahead of NMT by more than seed noise
        "dominated_beyond_noise_fraction": frac("dominated_beyond_noise"),
    }
    out["targets_met"] = bool(n) and out["mean_primary_gap"] >= PRIMARY_MEAN_OK and all(
        out[k] >= v for k, v in TARGETS.items())
    out["failing"] = {k: sorted(w for w, j in judged.items() if not j[k])
                      for k in ("primary_ok", "not_dominated", "secondary_ok", "audit_ok")}
    out["seconds"] = round(seconds, 1)
    return out


REFERENCE = "equal_weights"


def reference_fractions(worlds_runs: dict[str, list[dict]], tasks_of: dict, grid: list[str]) -> dict | None:
    """The same criteria with equal weights in NMT's place: a static weighting that sits on the grid's own
    curve (it is the 0.5:0.5 point up to scale), so what it scores on D and S is what seed noise alone
    gives a method that is no better than the grid: the floor to read NMT's fractions against."""
    judged = {w: judge_world(runs, tasks_of[w], grid, REFERENCE) for w, runs in worlds_runs.items()
              if runs and all(REFERENCE in r for r in runs)}
    if not judged:
        return None
    n = len(judged)
    return {"method": REFERENCE, "worlds": n,
            "mean_primary_gap": round(sum(j["gap"] for j in judged.values()) / n, 5),
            **{f"{k}_fraction": sum(1 for j in judged.values() if j[k]) / n
               for k in ("primary_ok", "not_dominated", "secondary_ok")}}


# ---------------------------------------------------------------------------------------------- output

def _fmt(x, spec=".4f"):
    return "-" if x is None else format(x, spec)


def print_table(judged: dict, tasks_of: dict, oracle: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="bench priority: seed means, test split (primary > secondary)")
    for col in ("world", "tasks", "oracle p", "single p", "nmt p", "gap", "nmt s", "best grid s*", "eq p / s",
                "P", "D", "S", "A"):
        t.add_column(col, justify="right" if col not in ("world", "tasks") else "left")
    ok = {True: "ok", False: "[red]NO[/red]"}
    for w, j in judged.items():
        p, s = tasks_of[w]
        eq = j["mean_auc"].get("equal_weights", {})
        best = j["best_qualifying"]
        best_txt = "none" if best is None else f"{_fmt(j['best_qualifying_secondary'])} ({best.split(':', 1)[1]})"
        dom = ok[j["not_dominated"]] if j["not_dominated"] else "[red]" + ",".join(
            d.split(":", 1)[1] for d in j["dominated_by"]) + "[/red]"
        if j.get("domination") and j["domination"]["t"] is not None:
            dom += f" t {j['domination']['t']:.1f}"
        t.add_row(w, f"{p}>{s}", _fmt(oracle.get(w, {}).get(p)), _fmt(j["single_primary"]), _fmt(j["nmt_primary"]),
                  _fmt(j["gap"], "+.4f"), _fmt(j["nmt_secondary"]), best_txt,
                  f"{_fmt(eq.get(p))} / {_fmt(eq.get(s))}", ok[j["primary_ok"]], dom,
                  ok[j["secondary_ok"]] + ("*" if j["no_grid_point_qualifies"] else ""),
                  ok[j["audit_ok"]] if j["audit_ok"] else f"[red]{j['audit_breaches']}/{j['seeds']}[/red]")
    Console(width=200).print(t)
    print("P: gap >= -0.005   D: no grid point dominates (else: the ones that do)   "
          "S: nmt s >= best grid s* - 0.005 (*: grid points with primary >= single - 0.002; 'ok*': none qualifies)   "
          "A: no audit breach (else breaches/seeds)")


def markdown(judged: dict, tasks_of: dict, summary: dict, seeds: list[int], sets: str,
             train_seconds: float = 0.0) -> str:
    """The README block (`make readme-figures` copies it): one row per world, then the fractions."""
    yes = {True: "ok", False: "**no**"}
    lines = [f"Seed means over {len(seeds)} training seeds ({', '.join(map(str, seeds))}), test split; "
             f"{summary['worlds']} worlds; "
             f"settings: {sets or 'configs/bench_priority.yaml as is'}; training time of these results "
             f"{train_seconds:.0f} s summed over units (2 workers on 2 cores; this run's wall time "
             f"{summary['seconds']:.0f} s, less where results came from the cache).", "",
             "| world | tasks | single p | nmt p | gap | nmt s | best grid s* | dominated by | P | S | A |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w, j in judged.items():
        p, s = tasks_of[w]
        best = "none" if j["best_qualifying"] is None else \
            f"{_fmt(j['best_qualifying_secondary'])} ({j['best_qualifying'].split(':', 1)[1]})"
        dom = ", ".join(d.split(":", 1)[1] for d in j["dominated_by"]) or "–"
        if j.get("domination"):
            m = j["domination"]
            dom += f" ({_fmt(m['margin'], '+.4f')}" + ("" if m["t"] is None else f", t {m['t']:.1f}") + ")"
        audit = "ok" if j["audit_ok"] else f"**{j['audit_breaches']}/{j['seeds']}**"
        lines.append(f"| {w} | {p} > {s} | {_fmt(j['single_primary'])} | {_fmt(j['nmt_primary'])} | "
                     f"{_fmt(j['gap'], '+.4f')} | {_fmt(j['nmt_secondary'])} | {best} | {dom} | "
                     f"{yes[j['primary_ok']]} | {yes[j['secondary_ok']]} | {audit} |")
    lines += ["", f"mean primary gap {summary['mean_primary_gap']:+.4f}; fractions of worlds: primary ok "
              f"{summary['primary_ok_fraction']:.2f}, not dominated {summary['not_dominated_fraction']:.2f}, "
              f"secondary ok {summary['secondary_ok_fraction']:.2f}, out-of-sample audit ok "
              f"{summary['audit_ok_fraction']:.2f}; targets met: {'yes' if summary['targets_met'] else '**no**'}; "
              f"dominated beyond seed noise (t ≥ {NOISE_T:g}) in {summary['dominated_beyond_noise_fraction']:.2f}.",
              "P: gap ≥ −0.005; S: nmt s ≥ best grid s* − 0.005 (s*: grid points with primary ≥ single − 0.002); "
              "A: no breach of the out-of-sample audit (breaches/seeds); dominated by: the grid points with both AUCs "
              "≥ NMT's, then the strongest one's margin (the smaller of its two seed-paired AUC differences) and its "
              "t (margin / standard error over the seeds)."]
    ref = summary.get("reference")
    if ref:
        lines.append(f"Reference, the same criteria with equal weights in NMT's place (a point on the grid's own "
                     f"curve: what seed noise gives a method no better than the grid): gap "
                     f"{ref['mean_primary_gap']:+.4f}, primary ok {ref['primary_ok_fraction']:.2f}, not dominated "
                     f"{ref['not_dominated_fraction']:.2f}, secondary ok {ref['secondary_ok_fraction']:.2f}.")
    return "\n".join(lines) + "\n"


def plot(judged: dict, tasks_of: dict, grid: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(judged)
    cols = 4
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, w in zip(axes.flat, names):
        j, (p, s) = judged[w], tasks_of[w]
        mean = j["mean_auc"]
        pts = [(mean[g][p], mean[g][s], g.split(":", 1)[1]) for g in grid if g in mean]
        if pts:
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], "o-", color="tab:gray", ms=3, lw=1, label="grid")
            for x, y, lab in (pts[0], pts[-1]):
                ax.annotate(lab, (x, y), fontsize=6, color="tab:gray")
        ax.axvline(j["single_primary"], color="tab:blue", lw=1, ls="--", label="single-task")
        if "equal_weights" in mean:
            ax.plot(mean["equal_weights"][p], mean["equal_weights"][s], "s", color="tab:orange", ms=5, label="equal")
        ax.plot(j["nmt_primary"], j["nmt_secondary"], "*", color="tab:red", ms=10, label="nmt")
        flags = "".join(c if j[k] else c.lower() for c, k in
                        (("P", "primary_ok"), ("D", "not_dominated"), ("S", "secondary_ok"), ("A", "audit_ok")))
        ax.set_title(f"{w}  {flags}", fontsize=8)
        ax.set_xlabel(f"{p} AUC", fontsize=7)
        ax.set_ylabel(f"{s} AUC", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, loc="best")
    fig.suptitle("primary vs secondary test AUC (seed means); lower-case flag = criterion missed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- driver

def _load_results(output: Path) -> dict:
    path = output / "priority.json"
    results = {}
    if path.is_file():
        try:
            results = json.loads(path.read_text()).get("results", {})
        except (json.JSONDecodeError, AttributeError):
            results = {}
    for f in sorted((output / "results").glob("*.json")):
        try:
            results.setdefault(f.stem, json.loads(f.read_text()))
        except json.JSONDecodeError:
            continue
    return results


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=1))
    tmp.replace(path)


def _pool_map(fn, jobs: list, workers: int, log_dir: Path, on_result):
    if workers <= 0:
        for job in jobs:
            on_result(fn(job))
        return
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(min(workers, len(jobs)) or 1, initializer=_init_worker,
                                        initargs=(str(log_dir),))
    try:
        for res in pool.imap_unordered(fn, jobs):
            on_result(res)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _world_seeds(text: str | None) -> tuple[int, ...]:
    from benchmarks.worlds import WORLD_SEEDS

    if not text:
        return WORLD_SEEDS
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        print(f"--world-seeds: expected comma-separated integers, got {text!r}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args) -> int:
    import yaml

    from benchmarks.worlds import family, sbr_world

    start = time.time()
    root = Path(__file__).resolve().parents[1]
    output = Path(args.output)
    (output / "results").mkdir(parents=True, exist_ok=True)
    log_dir = output / "logs"
    sets = [parse_override(s) for s in args.sets]
    base = yaml.safe_load(Path(args.config).read_text())
    grid = QUICK_GRID if args.quick else GRID
    grid_methods = [f"weight_grid:{g}" for g in grid]

    worlds = family(tiny=args.tiny, world_seeds=_world_seeds(args.world_seeds))
    if not args.no_sbr:
        sbr = sbr_world(root, tiny=args.tiny)
        if sbr is not None:
            worlds.append(sbr)
    if args.worlds:
        import fnmatch

        pats = [p.strip() for p in args.worlds.split(",") if p.strip()]
        worlds = [w for w in worlds if any(fnmatch.fnmatchcase(w.name, p) for p in pats)]
    elif args.quick:
        worlds = [w for w in worlds if w.name in ("dense-1", "online-1")]
    if not worlds:
        print("no world matches", file=sys.stderr)
        return 2
    if args.list:
        for w in worlds:
            print(w.name, json.dumps(w.overrides()))
        return 0
    seeds = list(range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)))
    code = code_digest(root)
    data_code = code_digest(root, ("components/generate", "components/preprocess"))
    set_text = [f"{o.key}={json.dumps(o.value)}" for o in sets]

    cfgs = {w.name: world_config(base, w, sets, grid, tiny=args.tiny) for w in worlds}
    dkeys = {w.name: _digest([data_key(cfgs[w.name], w), data_code]) for w in worlds}
    ddirs = {w.name: output / "data" / f"{w.name}-{dkeys[w.name]}" for w in worlds}

    # 1. datasets (cached per world)
    infos = {}
    todo_data = []
    for w in worlds:
        f = ddirs[w.name] / "info.json"
        if f.is_file() and (ddirs[w.name] / "dataset" / "feature_spec.json").is_file():
            infos[w.name] = json.loads(f.read_text())
        else:
            todo_data.append({"world": w.name, "config": cfgs[w.name].to_json(), "dir": str(ddirs[w.name])})
    if todo_data:
        print(f"building {len(todo_data)} dataset(s) with {args.workers} worker(s) ...", flush=True)
        _pool_map(build_world_data, todo_data, args.workers, log_dir, lambda r: infos.__setitem__(r["world"], r))

    # 2. trainings: one job per world x seed, only the methods not already in the results
    results = _load_results(output)
    keys, jobs = {}, []

    def cached(k, m):
        return pick(results, k[m], code, args.ignore_code or (args.reuse_baselines and m != "nmt"))

    for w in worlds:
        cfg = cfgs[w.name]
        for seed in seeds:
            k = method_keys(cfg, dkeys[w.name], seed)
            keys[(w.name, seed)] = k
            todo = [m for m in ["single_task", "nmt", "equal_weights"] + grid_methods if cached(k, m) is None]
            st = cached(k, "single_task")
            s1 = ddirs[w.name] / "ckpt" / f"s1-{k['single_task']}.{st['code'] if st else code}"
            if "nmt" in todo and st is not None and not (s1 / "stage.json").is_file():
                todo.insert(0, "single_task")  # its checkpoint is gone: retrain stage 1 (and record it)
                s1 = s1.with_name(f"s1-{k['single_task']}.{code}")
            if todo:
                jobs.append({"world": w.name, "seed": seed, "config": cfg.to_json(), "keys": k, "todo": todo,
                             "dataset": str(ddirs[w.name] / "dataset"), "results": str(output / "results"),
                             "ckpt": str(ddirs[w.name] / "ckpt"), "s1": str(s1), "sets": set_text, "code": code,
                             "cost": w.cost() * len(todo)})
    jobs.sort(key=lambda j: -j["cost"])  # big ones first: the two workers finish together
    total = len(jobs)
    print(f"{len(worlds)} world(s) x {len(seeds)} seed(s): {total} unit(s) to train "
          f"({sum(len(j['todo']) for j in jobs)} trainings), {len(keys) - total} unit(s) fully cached; "
          f"{args.workers} worker(s); logs in {log_dir}", flush=True)
    done = [0]

    def on_unit(res):
        done[0] += 1
        err = f"  FAILED: {res['error'][:300]} (see {log_dir})" if res.get("error") else ""
        print(f"[{done[0]}/{total}] {res['world']} seed {res['seed']}: {', '.join(res['done']) or '-'} "
              f"({time.time() - start:.0f} s){err}", flush=True)
        _write_json(output / "priority.json", {"version": VERSION, "results": _load_results(output),
                                                "runs": _previous_runs(output)})

    if jobs:
        for d in ddirs.values():
            (d / "ckpt").mkdir(parents=True, exist_ok=True)
        _pool_map(train_unit, jobs, args.workers, log_dir, on_unit)

    # 3. aggregate this configuration's results
    results = _load_results(output)
    judged, tasks_of, per_world, incomplete, worlds_runs = {}, {}, {}, [], {}
    for w in worlds:
        cfg = cfgs[w.name]
        runs = []
        for seed in seeds:
            k = keys[(w.name, seed)]
            run_ = {m: cached(k, m) for m in k if cached(k, m) is not None}
            if "nmt" in run_ and "single_task" in run_:
                runs.append(run_)
        if not runs:
            incomplete.append(w.name)
            continue
        tasks_of[w.name] = cfg.tasks[:2]
        judged[w.name] = judge_world(runs, cfg.tasks[:2], grid_methods)
        worlds_runs[w.name] = runs
        per_world[w.name] = {"setting": w.setting, "world_seed": w.seed, "tasks": cfg.tasks[:2],
                             "data": infos.get(w.name), "seeds": {str(r["nmt"]["seed"]): r for r in runs},
                             "judged": judged[w.name]}
    seconds = time.time() - start
    if incomplete:
        print(f"incomplete (no seed with both single_task and nmt; left out): {', '.join(incomplete)}")
    print_table(judged, tasks_of, {w: (infos.get(w) or {}).get("oracle_auc", {}) for w in judged})
    png = output / "priority.png"
    plot(judged, tasks_of, grid_methods, png)
    summary = summarize(judged, seconds)
    summary["reference"] = reference_fractions(worlds_runs, tasks_of, grid_methods)
    train_seconds = sum(r["seconds"] for pw in per_world.values() for run_ in pw["seeds"].values()
                        for r in run_.values())
    audit_sources = sorted({r.get("audit_source") for pw in per_world.values() for run_ in pw["seeds"].values()
                            for r in run_.values() if r.get("audit_source")})
    run_record = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "sets": set_text,
                  "code": code, "seeds": seeds, "grid": grid_methods, "audit_source": audit_sources,
                  "training_seconds_summed": round(train_seconds, 1), "worlds": per_world, "summary": summary,
                  "load_average": os.getloadavg()}
    _write_json(output / "priority.json", {"version": VERSION, "results": results,
                                           "runs": _previous_runs(output) + [run_record]})
    print(f"audit read from: {', '.join(audit_sources) or '-'};  training time summed over units: "
          f"{train_seconds:.0f} s;  wall: {seconds:.0f} s;  load average now: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    write_text_atomic(output / "priority.md", markdown(judged, tasks_of, summary, seeds, set_text,
                                                                train_seconds))
    print(f"plot: {png}   results: {output / 'priority.json'}   table: {output / 'priority.md'}")
    last = {k: summary[k] for k in ("worlds", "mean_primary_gap", "primary_ok_fraction", "not_dominated_fraction",
                                    "secondary_ok_fraction", "audit_ok_fraction", "dominated_beyond_noise_fraction")}
    last.update({"targets_met": summary["targets_met"], "seeds": len(seeds), "grid": len(grid), "incomplete": incomplete,
                 "sets": set_text, "audit_source": audit_sources, "failing": summary["failing"],
                 "seconds": summary["seconds"], "reference": summary["reference"]})
    print(json.dumps(last))
    return 1 if args.strict and not summary["targets_met"] else 0


def _previous_runs(output: Path) -> list:
    path = output / "priority.json"
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text()).get("runs", [])
    except (json.JSONDecodeError, AttributeError):
        return []
