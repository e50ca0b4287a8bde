"""Run a pipeline on this machine with kfp.local (no Kubernetes): each step is a subprocess of the
current Python environment, the same component code a cluster runs.

With caching on, kfp.local's cache lives in `.kfp-cache` beside the output directory, so a later
run (another output directory, one more task) reuses every step whose inputs and code are unchanged.

The console shows one line per step (pipelines/console.py); each step's output goes to
`<output>/logs/<step>.log`. A failed step raises StepFailed with the step's own error message.
With `train.checkpoint_every` and no `train.resume_root`, the stages keep their resume checkpoints
under `<output>/.resume` (one folder per stage, keyed by the stage's inputs): the same path on every
rerun of the same run, so a rerun after a crash or kill -9 resumes the unfinished stage; the folder
goes when the run completes. `<output>/run.json` records the run and its steps (run_record.py).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kfp import local

from nmtrec.components.common.config import Config
from nmtrec.components.common.feature_spec import FeatureSpec, LabelError
from nmtrec.components.common.files import copy_file_atomic, write_text_atomic
from nmtrec.pipelines.console import StepConsole, StepFailed, StepHooks, StepRecord, capture_steps
from nmtrec.components.common.step_inputs import RUN_SETTINGS_ENV, run_settings_json
from nmtrec.pipelines.pipeline import build_pipeline
from nmtrec.pipelines.run_record import finish_record, start_record

CACHE_DIR = ".kfp-cache"
LOGS_DIR = "logs"
EFFECTIVE_CONFIG = "config.yaml"  # the run's config after --set, beside report.json
RESUME_DIR = ".resume"  # the default train.resume_root of `nmtrec run`, under its output folder
_CACHE_HIT = re.compile(r"Task (\S+) cache hit")


@dataclass
class LocalRun:
    report: Path  # output/report.json
    seconds: float
    steps: dict[str, str] = field(default_factory=dict)  # task name -> "ran" | "cached"
    trained_stages: list[str] = field(default_factory=list)  # stage display names, e.g. "stage-3-share"
    reused_stages: list[str] = field(default_factory=list)
    records: list[StepRecord] = field(default_factory=list)  # every step as the console showed it
    logs: Path | None = None


class _CacheHits(logging.Handler):
    """kfp.local logs one line per cache hit (outside its own logger context)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.tasks: list[str] = []

    def emit(self, record):
        m = _CACHE_HIT.search(record.getMessage())
        if m:
            self.tasks.append(m.group(1))


def run_local(cfg: Config, output: str | Path, *, cache: bool = True, start=None, verbose: bool = False,
              stream=None) -> LocalRun:
    """Run every step (cached ones are skipped); report.json and report.html are copied to output/.
    `verbose`: every step's output (and kfp.local's) streams to the console as well as to its log."""
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    forget_report(output)
    save_effective_config(cfg, output)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output / "kfp"),
               raise_on_error=True, enable_caching=cache, cache_root=str(output.parent / CACHE_DIR))
    pipeline = build_pipeline(cfg, local=True, start=start)
    resume_root = None
    if cfg.train.checkpoint_every and not cfg.train.resume_root:  # stable across reruns (module docstring)
        resume_root = output / RESUME_DIR
        cfg = cfg.updated(train={"resume_root": str(resume_root)})
    hits = _CacheHits()
    hooks = StepHooks(output / LOGS_DIR, StepConsole(stream or sys.stdout, verbose=verbose), verbose=verbose,
                      after_step=lambda step, outputs: _check_dataset(cfg, step, outputs))
    root = logging.getLogger()
    level = root.level
    root.addHandler(hits)
    root.setLevel(logging.INFO)
    # each step's subprocess inherits the run settings; kfp.local's cache key covers only task env vars
    record = start_record(output, cfg, start)  # run.json, for `nmtrec runs` / `nmtrec inspect`
    saved = os.environ.get(RUN_SETTINGS_ENV)
    os.environ[RUN_SETTINGS_ENV] = run_settings_json(cfg)
    began = time.perf_counter()
    try:
        with capture_steps(hooks):
            task = pipeline()
    except Exception as e:
        failed = hooks.failed
        finish_record(output, record, hooks.steps, "failed", time.perf_counter() - began,
                      failed.name if failed else None, (failed.error or {}).get("message") if failed else str(e))
        if failed is None:
            raise
        err = failed.error or {}
        message = err.get("message") or str(e)
        if err.get("type") and not err.get("ours"):  # not one of ours: its type says what kind of failure
            message = f"{err['type'].rsplit('.', 1)[-1]}: {message}"
        raise StepFailed(failed.name, message, failed.log if failed.ran else None,
                         recorded=err.get("recorded", True)) from e
    finally:
        root.removeHandler(hits)
        root.setLevel(level)
        if saved is None:
            os.environ.pop(RUN_SETTINGS_ENV, None)
        else:
            os.environ[RUN_SETTINGS_ENV] = saved
    seconds = time.perf_counter() - began
    for key, name in (("html", "report.html"), ("report", "report.json")):  # report.json last: it marks done
        dest = output / name
        copy_file_atomic(Path(task.outputs[key].path), dest)
    finish_record(output, record, hooks.steps, "complete", seconds)
    if resume_root is not None:  # every stage is done: nothing left to resume
        shutil.rmtree(resume_root, ignore_errors=True)
    spec_tasks = _task_names(pipeline)
    steps = {name: ("cached" if name in hits.tasks else "ran") for name in spec_tasks}
    stages = pipeline.stage_tasks
    return LocalRun(report=dest, seconds=seconds, steps=steps,
                    trained_stages=[stages[t] for t in stages if steps.get(t) == "ran"],
                    reused_stages=[stages[t] for t in stages if steps.get(t) == "cached"],
                    records=hooks.steps, logs=output / LOGS_DIR)


def save_effective_config(cfg: Config, output: Path) -> Path:
    """`<output>/config.yaml`: the config this run used, the file's keys with every --set applied and
    every default filled in (`nmtrec run --config` reads it back to the same config)."""
    text = f"# the effective config of this run (--set overrides applied, defaults filled in)\n" \
           f"{yaml.safe_dump(cfg.as_written(), sort_keys=False)}"
    return write_text_atomic(output / EFFECTIVE_CONFIG, text)


def forget_report(output: str | Path) -> None:
    """A run that fails must not leave an earlier run's report looking like its own."""
    for name in ("report.json", "report.html"):
        (Path(output) / name).unlink(missing_ok=True)


def _check_dataset(cfg: Config, step: StepRecord, outputs: dict) -> str | None:
    """After preprocessing (run or reused), before any training: every task's label needs both classes
    in every split (feature_spec.json's per-split positives)."""
    if "dataset" not in outputs:
        return None
    try:
        FeatureSpec.read(outputs["dataset"].path).check_labels(cfg.tasks, label_of=cfg.label_map())
    except LabelError as e:
        return f"{e} (checked after step {step.name!r}, before training)"
    except (OSError, ValueError):
        return None  # the stages read the spec again and name what is wrong with it
    return None


def _task_names(pipeline) -> list[str]:
    return list(pipeline.pipeline_spec.root.dag.tasks)
