"""`nmtrec runs DIR` and `nmtrec inspect RUN`: what a local run's output folder holds, read from its
files only (no torch, no kfp: it answers at once).

A run folder is what `nmtrec run --output` writes: `run.json` (run_record.py: status and every step,
trained or reused, with its artifacts' URIs), `report.json` (per stage: frozen optima, λ, audits; per
method: AUC), `kfp/<pipeline>-<timestamp>/` (the artifacts of the steps that ran) and, when the run
saved it, `config.yaml` (the effective config). A folder written before run.json existed is read from
report.json and the newest `kfp/` run: the stages that ran there are found by their `stage.json`; a
stage reused from the cache left nothing there, so its checkpoint is unknown.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nmtrec.components.common.config import ConfigError
from nmtrec.pipelines.run_record import RUN_RECORD

REPORT = "report.json"
CONFIG = "config.yaml"  # the effective config, when the run saved it
KFP_DIR = "kfp"
_KFP_RUN = re.compile(r"^(?P<name>.+)-(?P<ts>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})-\d+$")  # kfp.local's run folder
_SKIP = {KFP_DIR, "logs"}  # never run folders themselves


@dataclass
class StageView:
    stage: int  # 1-based
    task: str
    how: str  # trained | reused | imported | failed | not run | unknown
    checkpoint: str | None  # the stage's artifact: --from-checkpoint / --first-stage / export --checkpoint
    details: dict = field(default_factory=dict)  # report's stage entry (frozen_optima, lambda_final, audits)


@dataclass
class RunView:
    folder: Path
    name: str
    tasks: list[str]
    status: str  # complete | failed | running | stopped | incomplete
    started: str | None
    seconds: float | None = None
    stages: list[StageView] = field(default_factory=list)
    methods: dict[str, dict] = field(default_factory=dict)  # method -> {task: AUC}
    oracle: dict[str, float] = field(default_factory=dict)
    config_file: Path | None = None
    dataset: str | None = None  # the preprocessed dataset (nmtrec export --dataset)
    failed_step: str | None = None
    error: str | None = None
    recorded: bool = True  # False: no run.json (an older run)


# -- reading ---------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _expect(path: Path, data: dict, key: str, item: type, what: str) -> list:
    """data[key] as a list of `item`s, else an error naming the file and key."""
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(x, item) for x in value):
        shown = repr(value)
        raise ConfigError(f"{path}: key '{key}': expected {what}, got "
                          f"{shown if len(shown) <= 80 else shown[:77] + '...'}")
    return value


def is_run_folder(folder: Path) -> bool:
    return (folder / REPORT).is_file() or (folder / RUN_RECORD).is_file() or (folder / KFP_DIR).is_dir()


def _kfp_runs(folder: Path) -> list[Path]:
    """kfp.local's run folders under kfp/, oldest first (by the timestamp in their name)."""
    runs = [d for d in (folder / KFP_DIR).glob("*/") if _KFP_RUN.match(d.name)]
    return sorted(runs, key=lambda d: _KFP_RUN.match(d.name)["ts"])


def _kfp_started(run_dir: Path) -> str:
    return datetime.strptime(_KFP_RUN.match(run_dir.name)["ts"], "%Y-%m-%d-%H-%M-%S").strftime("%Y-%m-%d %H:%M:%S")


def _alive(pid, host) -> bool:
    if host != socket.gethostname():
        return True  # another machine's run: cannot tell, take it as running
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_run(folder: str | Path) -> RunView:
    """The run in `folder` (an `nmtrec run --output` folder); ConfigError naming the file when it is
    missing or garbled."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    if not is_run_folder(folder):
        raise ConfigError(f"{folder}: not a run folder (expected {REPORT}, {RUN_RECORD} or {KFP_DIR}/, "
                          "as `nmtrec run --output` writes)")
    record = _read_json(folder / RUN_RECORD) if (folder / RUN_RECORD).is_file() else None
    report = _read_json(folder / REPORT) if (folder / REPORT).is_file() else None
    kfp_runs = _kfp_runs(folder)
    config_file = folder / CONFIG if (folder / CONFIG).is_file() else None
    if report is not None:
        _expect(folder / REPORT, report, "tasks", str, "the list of task names")
    if record is not None:
        view = _from_record(folder, record, report, kfp_runs)
    else:
        view = _from_files(folder, report, kfp_runs)
    view.config_file = config_file
    if report is not None:
        view.methods = {m: dict(v.get("auc") or {}) for m, v in (report.get("methods") or {}).items()
                        if isinstance(v, dict)}
        view.oracle = dict(report.get("oracle_auc") or {})
    return view


def _from_record(folder: Path, record: dict, report: dict | None, kfp_runs: list[Path]) -> RunView:
    path = folder / RUN_RECORD
    tasks = _expect(path, record, "tasks", str, "the list of task names")
    steps = _expect(path, record, "steps", dict, "a list of steps (objects)")
    status = record.get("status")
    if status == "running" and not _alive(record.get("pid"), record.get("host")):
        status = "stopped"  # killed or interrupted: it never wrote its end
    by_name = {s.get("name"): s for s in steps}
    # a run that has not written its end (running, or killed): its steps are not recorded yet, but the
    # stages it trained so far are in its kfp/ folder
    so_far = _trained_in(kfp_runs[-1], tasks) if status in ("running", "stopped") and kfp_runs else {}
    stages, imported_up_to = [], 0
    for name in by_name:  # --from-checkpoint: importers bring stage k's (and stage 1's) artifact in
        m = re.fullmatch(r"import-stage-(\d+)", name or "")
        if m:
            imported_up_to = max(imported_up_to, int(m[1]))
    for k, task in enumerate(tasks, 1):
        step = by_name.get(f"stage-{k}-{task}")
        imported = by_name.get(f"import-stage-{k}")
        if step is not None:
            how, ckpt = step.get("status", "unknown"), (step.get("artifacts") or {}).get("checkpoint")
        elif imported is not None:
            how, ckpt = "imported", (imported.get("artifacts") or {}).get("artifact")
        elif k <= imported_up_to:
            how, ckpt = "imported", None  # inside the imported stage's checkpoint only
        elif k in so_far:
            how, ckpt = "trained", so_far[k]
        else:
            how, ckpt = "pending" if status in ("running", "stopped") else "not run", None
        stages.append(StageView(k, task, how, ckpt, _stage_details(report, k, ckpt)))
    dataset = next((s["artifacts"]["dataset"] for s in steps if isinstance(s.get("artifacts"), dict)
                    and isinstance(s["artifacts"].get("dataset"), str)), None)
    return RunView(folder, str(record.get("name") or folder.name), tasks, str(status), _date(record.get("started")),
                   record.get("seconds"), stages, dataset=dataset, failed_step=record.get("failed_step"),
                   error=record.get("error"))


def _from_files(folder: Path, report: dict | None, kfp_runs: list[Path]) -> RunView:
    """An older run without run.json: report.json and the newest kfp/ run."""
    last = kfp_runs[-1] if kfp_runs else None
    found = _stage_checkpoints(last) if last is not None else {}
    # no report: the longest chain of stages that ran
    tasks = list(report["tasks"]) if report else list(max(found, key=len, default=()))
    trained = _trained_in(last, tasks) if last is not None else {}
    stages = [StageView(k, t, "trained" if k in trained else "unknown", trained.get(k),
                        _stage_details(report, k, trained.get(k))) for k, t in enumerate(tasks, 1)]
    name = _KFP_RUN.match(last.name)["name"] if last is not None else folder.name
    started = _kfp_started(last) if last is not None else (
        datetime.fromtimestamp((folder / REPORT).stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S") if report else None)
    dataset = next(iter(sorted(last.glob("preprocess-*/dataset"))), None) if last is not None else None
    return RunView(folder, name, tasks, "complete" if report else "incomplete", started, None, stages,
                   dataset=str(dataset) if dataset else None, recorded=False)


def _stage_checkpoints(run_dir: Path) -> dict[tuple[str, ...], str]:
    """The NMT stage checkpoints kfp.local wrote in one run folder, by the tasks they cover."""
    found = {}
    for meta_file in sorted(run_dir.glob("*/checkpoint/stage.json")):
        try:
            meta = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("method", "nmt") == "nmt" and isinstance(meta.get("tasks"), list):
            found[tuple(meta["tasks"])] = str(meta_file.parent)
    return found


def _trained_in(run_dir: Path, tasks: list[str]) -> dict[int, str]:
    """Stage k -> its checkpoint, for the stages of `tasks` that ran in `run_dir`."""
    found = _stage_checkpoints(run_dir)
    return {k: found[tuple(tasks[:k])] for k in range(1, len(tasks) + 1) if tuple(tasks[:k]) in found}


def _stage_details(report: dict | None, k: int, checkpoint: str | None) -> dict:
    """Stage k's entry: the report's, else the one its checkpoint's stage.json carries."""
    stages = (report or {}).get("stages")
    if isinstance(stages, list) and len(stages) >= k and isinstance(stages[k - 1], dict):
        return stages[k - 1]
    if checkpoint:
        try:
            meta = json.loads((Path(checkpoint) / "stage.json").read_text())
            entry = meta["stages"][k - 1]
            return entry if isinstance(entry, dict) else {}
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return {}
    return {}


def _date(text) -> str | None:
    return text[:19].replace("T", " ") if isinstance(text, str) else None


def find_runs(root: str | Path, depth: int = 3) -> list[Path]:
    """Run folders at or under `root` (up to `depth` levels down; not inside a run folder); a folder
    reached twice (a symlink such as pytest's `*current`) is listed once."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder")
    found, seen = [], set()
    for folder in _walk(root, depth):
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            found.append(folder)
    return found


def _walk(folder: Path, depth: int):
    if is_run_folder(folder):
        yield folder
        return
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and child.name not in _SKIP and depth > 0:
            yield from _walk(child, depth - 1)


# -- showing ---------------------------------------------------------------------------------------
def make_console(stream=None):
    """Tables as wide as a terminal; into a file or a pipe 160 columns, so that rows stay on one line."""
    from rich.console import Console

    console = Console(file=stream, highlight=False)
    if not console.is_terminal:
        console = Console(file=stream, highlight=False, width=160)
    return console


def show_path(path: str | None) -> str:
    """A path as the user can paste it: relative to the working directory when inside it."""
    if not path:
        return "–"
    p = Path(path.removeprefix("file://"))
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _num(x, digits: int = 4) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x:.{digits}f}"


def audit_text(audit) -> str:
    """'ok' / 'BREACH like', each higher task's loss change against its tolerance."""
    if not audit:
        return "–"
    parts = []
    for a in audit:
        change = a.get("mean_loss_change", a.get("excess"))  # paired audit / held-out batch audit
        breach = bool(a.get("breach"))
        if a.get("judged_by") == "auc":  # a ranking task: the AUC it lost decides
            parts.append(f"{a.get('task')} AUC {_signed(a.get('auc_change_paired'))} "
                         f"{'<' if breach else '≥'} -{_g(a.get('auc_tolerance'))} " + ("BREACH" if breach else "ok"))
            continue
        parts.append(f"{a.get('task')} {_signed(change)} {'>' if breach else '≤'} {_g(a.get('tolerance'))} "
                     + ("BREACH" if breach else "ok"))
    return "; ".join(parts)


def _signed(x) -> str:
    return "–" if not isinstance(x, (int, float)) else f"{x:+.3g}"


def _g(x) -> str:  # 3 significant digits: a paired tolerance can be far below 1e-4
    return "–" if not isinstance(x, (int, float)) else f"{x:.3g}"


def _stage_row(s: StageView) -> list[str]:
    d = s.details
    frozen = (d.get("frozen_optima") or {}).get(s.task)
    lam = d.get("lambda_final") or {}
    return [str(s.stage), s.task, s.how, _num(frozen), _num((d.get("valid_auc") or {}).get(s.task)),
            ", ".join(f"{t} {_num(v, 2)}" for t, v in lam.items()) or "–",
            audit_text(d.get("constraint_audit")), audit_text(d.get("test_audit"))]


def render_run(view: RunView, console) -> None:
    from rich.table import Table

    took = f", {view.seconds:.0f}s" if isinstance(view.seconds, (int, float)) else ""
    console.print(f"run '{view.name}' in {show_path(str(view.folder))}: {' > '.join(view.tasks) or '?'}; "
                  f"{view.status}, started {view.started or '?'}{took}", markup=False, soft_wrap=True)
    if view.failed_step or view.error:
        console.print(f"failed step {view.failed_step!r}: {view.error}", markup=False, soft_wrap=True)
    if view.config_file:
        console.print(f"config: {show_path(str(view.config_file))}", markup=False, soft_wrap=True)
    if not view.recorded:
        console.print(f"(no {RUN_RECORD}: an older run; stages reused from the cache are not traceable)",
                      markup=False, soft_wrap=True)
    table = Table(title="NMT stages", title_justify="left")
    for col in ("stage", "task", "trained/reused", "frozen f* (train loss)", "valid AUC", "final λ", "validation audit",
                "test audit"):
        table.add_column(col, overflow="fold")
    for s in view.stages:
        table.add_row(*_stage_row(s))
    console.print(table)
    console.print("checkpoints (nmtrec run --from-checkpoint PATH [--first-stage STAGE-1 PATH]; "
                  "nmtrec export --checkpoint PATH):", markup=False, soft_wrap=True)
    for s in view.stages:
        missing = s.checkpoint and not Path(s.checkpoint.removeprefix("file://")).exists()
        console.print(f"  stage {s.stage} ({s.task}): {show_path(s.checkpoint)}"
                      + (" (no longer on disk)" if missing else ""), markup=False, soft_wrap=True)
    if view.dataset:
        console.print(f"dataset (nmtrec export --dataset): {show_path(view.dataset)}", markup=False, soft_wrap=True)
    if view.methods:
        methods = Table(title="methods: test AUC per task (report.json)", title_justify="left")
        methods.add_column("method")
        for t in view.tasks:
            methods.add_column(t, justify="right")
        for m, auc in view.methods.items():
            methods.add_row(m, *[_num(auc.get(t)) for t in view.tasks])
        if view.oracle:
            methods.add_row("oracle", *[_num(view.oracle.get(t)) for t in view.tasks])
        console.print(methods)


def _stage_summary(view: RunView) -> str:
    counts: dict[str, int] = {}
    for s in view.stages:
        counts[s.how] = counts.get(s.how, 0) + 1
    return ", ".join(f"{n} {how}" for how, n in counts.items()) or "–"


def render_runs(folders: list[Path], console) -> None:
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("started", "name", "tasks", "status", "stages", "folder"):
        table.add_column(col, overflow="fold")
    rows = []
    for folder in folders:
        try:
            v = read_run(folder)
            status = f"{v.status} ({v.failed_step})" if v.failed_step else v.status
            rows.append((v.started or "", [v.started or "?", v.name, " > ".join(v.tasks), status,
                                           _stage_summary(v), show_path(str(folder))]))
        except ConfigError as e:  # one garbled folder does not hide the others
            why = str(e).removeprefix(f"{folder}/")
            rows.append(("", ["?", "?", "?", f"unreadable: {why}", "–", show_path(str(folder))]))
    for _, row in sorted(rows, key=lambda r: r[0], reverse=True):
        table.add_row(*row)
    console.print(table)
