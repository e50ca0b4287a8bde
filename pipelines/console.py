"""What `nmtrec run` shows while kfp.local runs the steps: one line per step as it starts and as it
ends (trained / reused from cache / failed, elapsed time, the step's key figure), live progress of
the running steps on a terminal, and every step's full output in its own log file.

kfp.local streams each step's subprocess output, its executor input JSON and output artifacts through
`print` and the root logger. `capture_steps` hooks two of its functions for the duration of a run:
- `orchestrator.task_executor.execute_single_task` (one call per step, cache hits included; both
  orchestrators and the ParallelFor threads call it through the module), to know which step runs;
- `subprocess_task_handler.run_local_subprocess`, to send that step's output to `logs/<step>.log`
  (and to the console too with `verbose`), to give the step STEP_ERROR_ENV (its own error message
  comes back as JSON, components/common/logs.py) and to make the step die with the run (kill -9 of
  `nmtrec run` leaves no orphan still training and writing its resume state).
kfp.local's own chatter goes to `logs/kfp.log` unless `verbose`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from nmtrec.components.common.logs import STEP_ERROR_ENV

_RESUMED = re.compile(rb"resuming from \S+ at step (\d+)")


@dataclass
class StepRecord:
    name: str  # display name: stage-2-click, joint-famo, evaluate, ...
    task: str  # kfp task name (train-stage-2, ...)
    log: Path
    started: float = field(default_factory=time.perf_counter)
    ran: bool = False  # False: a cache hit (or an importer)
    status: str = "running"  # running | trained | done | reused | failed
    seconds: float = 0.0
    figure: str = ""
    returncode: int | None = None
    error: dict | None = None  # {"type", "message", "ours"} of a failed step
    artifacts: dict[str, str] = field(default_factory=dict)  # output name -> URI (a reused step's: the cached one)

    @property
    def error_file(self) -> Path:
        return self.log.with_suffix(".error.json")


class StepFailed(RuntimeError):
    """A step of a local run failed; `step` names it (display name), `log` is its full output and the
    message is the step's own error (the file/line/column/key one for bad input). `recorded`: False
    when the step died without raising (killed, out of memory)."""

    def __init__(self, step: str, message: str, log: Path | None, recorded: bool = True):
        super().__init__(message)
        self.step, self.log, self.recorded = step, log, recorded


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "step"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it (the run) dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 600 else f"{seconds / 60:.0f}min"


class StepConsole:
    """Prints the step lines; on a terminal also a live view of the running steps (rich)."""

    def __init__(self, stream=None, verbose: bool = False):
        from rich.console import Console

        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.running: dict[int, StepRecord] = {}
        self.lock = threading.Lock()
        self.live = None
        self.width = max(60, min(self.console.width, 140))

    # -- live view ---------------------------------------------------------------------------------
    def __enter__(self):
        if self.console.is_terminal and not self.verbose:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=True,
                             redirect_stdout=False, redirect_stderr=False, get_renderable=self._render)
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _render(self):
        from rich.text import Text

        lines = []
        with self.lock:
            steps = list(self.running.values())
        for s in steps:
            progress = _last_line(s.log)
            head = f"  … {s.name:<30} {_fmt_s(time.perf_counter() - s.started):>5}  "
            lines.append(head + progress[: max(0, self.width - len(head) - 1)])
        return Text("\n".join(lines))

    # -- lines -------------------------------------------------------------------------------------
    def _print(self, text: str, style: str | None = None) -> None:
        with self.lock:
            self.console.print(text, style=style, markup=False)

    def started(self, step: StepRecord) -> None:
        with self.lock:
            self.running[id(step)] = step
        self._print(f"  ▸ {step.name:<30} started")

    def finished(self, step: StepRecord) -> None:
        with self.lock:
            self.running.pop(id(step), None)
        mark, style = {"failed": ("✗", "bold red"), "reused": ("=", "dim")}.get(step.status, ("✓", "green"))
        status = {"reused": "reused from cache"}.get(step.status, step.status)
        figure = f"  {step.figure}" if step.figure else ""
        self._print(f"  {mark} {step.name:<30} {status:<17} {_fmt_s(step.seconds):>5}{figure}", style)


def _last_line(log: Path, size: int = 4096) -> str:
    """The last non-empty line of a log (progress bars end lines with \\r), for the live view."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - size))
            tail = f.read()
    except OSError:
        return ""
    for piece in reversed(re.split(rb"[\r\n]+", tail)):
        text = piece.decode("utf-8", "replace").strip()
        if text:
            return re.sub(r"\s+", " ", text)
    return ""


class _StdoutRouter:
    """sys.stdout while steps run (not verbose): kfp.local's prints and log lines go to a file."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8", errors="replace")

    def write(self, text):
        self.file.write(text)
        return len(text)

    def flush(self):
        self.file.flush()

    def isatty(self):
        return False

    def close(self):
        self.file.close()


class StepHooks:
    """The per-step records of one run and the kfp.local hooks that fill them (see module docstring)."""

    def __init__(self, logs: Path, console: StepConsole, verbose: bool = False, after_step=None):
        self.logs = logs
        self.console = console
        self.verbose = verbose
        self.after_step = after_step  # (StepRecord, outputs) -> error message | None (fails the step)
        self.steps: list[StepRecord] = []
        self.local = threading.local()
        self.lock = threading.Lock()

    @property
    def failed(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status == "failed"), None)

    # -- execute_single_task -----------------------------------------------------------------------
    def _display_name(self, task_name, task_spec, io_store) -> str:
        name = task_spec.task_info.name or task_name
        if "method" in task_spec.inputs.parameters and name == "joint-baseline":
            try:
                from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

                method = OrchestratorUtils.make_task_arguments(task_spec.inputs, io_store).get("method")
                name = f"joint-{method}"
            except Exception:
                pass
        return name

    def wrap_execute(self, original):
        def execute_single_task(task_name, task_spec, pipeline_resource_name, components, executors, io_store,
                                *args, **kwargs):
            name = self._display_name(task_name, task_spec, io_store)
            with self.lock:
                taken = {s.log.name for s in self.steps}
                log = self.logs / f"{_safe(name)}.log"
                k = 2
                while log.name in taken:
                    log, k = self.logs / f"{_safe(name)}-{k}.log", k + 1
                step = StepRecord(name=name, task=task_name, log=log)
                self.steps.append(step)
            self.local.step = step
            try:
                outputs, status = original(task_name, task_spec, pipeline_resource_name, components, executors,
                                           io_store, *args, **kwargs)
            except BaseException as e:
                step.status, step.error = "failed", {"type": type(e).__name__, "message": str(e), "ours": False}
                raise
            finally:
                self.local.step = None
                step.seconds = time.perf_counter() - step.started
            if status.name == "SUCCESS":
                problem = self.after_step(step, outputs) if self.after_step else None
                if problem:
                    step.status, step.error = "failed", {"type": "", "message": problem, "ours": True}
                    self.console.finished(step)
                    from kfp.local import status as kfp_status

                    return {}, kfp_status.Status.FAILURE
                step.status = ("trained" if name.startswith(("stage-", "famo-nmt-", "joint-")) else "done") \
                    if step.ran else "reused"
                step.figure = _figure(step, outputs)
                step.artifacts = {k: v.uri for k, v in outputs.items() if isinstance(getattr(v, "uri", None), str)}
            else:
                step.status = "failed"
                step.error = _read_error(step)
            self.console.finished(step)
            return outputs, status

        return execute_single_task

    # -- run_local_subprocess ----------------------------------------------------------------------
    def run_local_subprocess(self, full_command, env_vars=None) -> int:
        step = getattr(self.local, "step", None)
        if step is None:  # not through execute_single_task: keep kfp.local's own behaviour, into kfp.log
            step = StepRecord(name="step", task="step", log=self.logs / "kfp-step.log")
        first = not step.ran
        step.ran = True
        step.error_file.unlink(missing_ok=True)
        env = {**os.environ, **(env_vars or {}), STEP_ERROR_ENV: str(step.error_file)}
        if first:
            self.console.started(step)
        with open(step.log, "wb" if first else "ab") as log, subprocess.Popen(
                full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent) as proc:
            while True:
                chunk = proc.stdout.read1(1 << 16)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                if self.verbose:
                    out = getattr(self.console.stream, "buffer", None)
                    if out is not None:
                        out.write(chunk)
                        out.flush()
                    else:
                        self.console.stream.write(chunk.decode("utf-8", "replace"))
            step.returncode = proc.wait()
        return step.returncode


@contextlib.contextmanager
def capture_steps(hooks: StepHooks):
    """Install the hooks (and, unless verbose, send kfp.local's own output to logs/kfp.log)."""
    from kfp.local import subprocess_task_handler
    from kfp.local.orchestrator import task_executor

    hooks.logs.mkdir(parents=True, exist_ok=True)
    saved = (task_executor.execute_single_task, subprocess_task_handler.run_local_subprocess, sys.stdout)
    task_executor.execute_single_task = hooks.wrap_execute(saved[0])
    subprocess_task_handler.run_local_subprocess = hooks.run_local_subprocess
    router = None
    root = logging.getLogger()
    handlers = root.handlers[:]
    with warnings.catch_warnings():
        if not hooks.verbose:
            router = _StdoutRouter(hooks.logs / "kfp.log")
            sys.stdout = router
            # kfp.local also logs outside its own logger context (cache hits, workspace clean-up)
            root.handlers = [h for h in handlers if type(h) is not logging.StreamHandler]
            root.addHandler(logging.StreamHandler(router))
            # kfp.local warns per step that our image is not a Python image and that display names and
            # resources have no local effect: nothing a user of `nmtrec run` can act on
            warnings.filterwarnings("ignore", module=r"kfp\..*")
            warnings.filterwarnings("ignore", message=r".*(base image|no effect in the current local runner).*")
        try:
            with hooks.console:
                yield hooks
        finally:
            task_executor.execute_single_task, subprocess_task_handler.run_local_subprocess, sys.stdout = saved
            root.handlers = handlers
            if router is not None:
                router.close()


def _read_error(step: StepRecord) -> dict:
    try:
        return json.loads(step.error_file.read_text())
    except (OSError, ValueError):
        pass
    # no record (killed, out of memory, an error before our hook): the log's last error line, else the code
    try:
        lines = [x.strip() for x in step.log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    last = next((x for x in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", x)), None)
    code = step.returncode
    how = (f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}")
    return {"type": "", "message": last or f"the step's process {how}", "ours": False, "recorded": False}


# -- key figures ---------------------------------------------------------------------------------------
def _read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError, TypeError):
        return None


def _figure(step: StepRecord, outputs: dict) -> str:
    try:
        return _figure_of(step, outputs)
    except Exception:  # a key figure is a courtesy: never fail a run over it
        return ""


def _num(x, digits=4) -> str:
    return "null" if x is None else f"{x:.{digits}f}"


def _figure_of(step: StepRecord, outputs: dict) -> str:
    if "raw" in outputs:  # KFP metadata numbers come back as floats
        return f"{int(outputs['raw'].metadata.get('rows', 0)):,} rows"
    if "dataset" in outputs:
        md = outputs["dataset"].metadata
        text = " / ".join(f"{s} {int(md[s]):,}" for s in ("train", "valid", "test") if s in md) + " rows"
        bad = int(md.get("bad_rows_skipped") or 0)
        return text + (f", {bad:,} bad rows skipped" if bad else "")
    if "checkpoint" in outputs:
        meta = _read_json(Path(outputs["checkpoint"].path) / "stage.json") or {}
        last = (meta.get("stages") or [{}])[-1] if meta.get("stages") else meta
        parts = []
        valid = last.get("valid_loss") or {}
        if valid:
            parts.append("valid loss " + ", ".join(f"{t} {v:.4f}" for t, v in valid.items() if v is not None))
        lam = last.get("lambda_final") or {}
        if lam:
            parts.append("λ " + ", ".join(f"{t} {v:.2f}" for t, v in lam.items()))
        audit = last.get("constraint_audit") or []
        if audit:
            breach = [a["task"] for a in audit if a.get("breach")]
            parts.append(f"audit BREACH {', '.join(breach)}" if breach else "audit ok")
        fell_back = last.get("fallback")
        if fell_back:  # components/train/fallback.py
            parts.append(f"fell back to the previous stage's model ({', '.join(fell_back['breached'])} "
                         f"breached by the stage's own model)")
        epochs = last.get("epochs") or meta.get("epochs")
        if epochs:
            parts.append(f"{epochs} epochs")
        if step.ran:
            resumed = _resumed_at(step.log)
            if resumed is not None:
                parts.append(f"resumed at step {resumed}")
        return "; ".join(parts)
    if "report" in outputs:
        report = _read_json(outputs["report"].path) or {}
        nmt = report.get("methods", {}).get("nmt", {}).get("auc", {})
        return "nmt AUC " + ", ".join(f"{t} {_num(v)}" for t, v in nmt.items()) if nmt else ""
    return ""


def _resumed_at(log: Path) -> int | None:
    try:
        m = _RESUMED.search(log.read_bytes())
    except OSError:
        return None
    return int(m.group(1)) if m else None
