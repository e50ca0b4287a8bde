"""Run a pipeline on this machine with kfp.local (no Kubernetes): each step is a subprocess of the
current Python environment, the same component code a cluster runs.

With caching on, kfp.local's cache lives in `.kfp-cache` beside the output directory, so a later
run (another output directory, one more task) reuses every step whose inputs and code are unchanged.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kfp import local

from nmtrec.components.common.config import Config
from nmtrec.components.common.files import copy_file_atomic
from nmtrec.components.common.step_inputs import RUN_SETTINGS_ENV, run_settings_json
from nmtrec.pipelines.pipeline import build_pipeline

CACHE_DIR = ".kfp-cache"
_CACHE_HIT = re.compile(r"Task (\S+) cache hit")


@dataclass
class LocalRun:
    report: Path  # output/report.json
    seconds: float
    steps: dict[str, str] = field(default_factory=dict)  # task name -> "ran" | "cached"
    trained_stages: list[str] = field(default_factory=list)  # stage display names, e.g. "stage-3-share"
    reused_stages: list[str] = field(default_factory=list)


class _CacheHits(logging.Handler):
    """kfp.local logs one line per cache hit (outside its own logger context)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.tasks: list[str] = []

    def emit(self, record):
        m = _CACHE_HIT.search(record.getMessage())
        if m:
            self.tasks.append(m.group(1))


def run_local(cfg: Config, output: str | Path, *, cache: bool = True, start=None) -> LocalRun:
    """Run every step (cached ones are skipped); report.json and report.html are copied to output/."""
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output / "kfp"),
               raise_on_error=True, enable_caching=cache, cache_root=str(output.parent / CACHE_DIR))
    pipeline = build_pipeline(cfg, local=True, start=start)
    hits = _CacheHits()
    root = logging.getLogger()
    level = root.level
    root.addHandler(hits)
    root.setLevel(logging.INFO)
    # each step's subprocess inherits the run settings; kfp.local's cache key covers only task env vars
    saved = os.environ.get(RUN_SETTINGS_ENV)
    os.environ[RUN_SETTINGS_ENV] = run_settings_json(cfg)
    began = time.perf_counter()
    try:
        task = pipeline()
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
    spec_tasks = _task_names(pipeline)
    steps = {name: ("cached" if name in hits.tasks else "ran") for name in spec_tasks}
    stages = pipeline.stage_tasks
    return LocalRun(report=dest, seconds=seconds, steps=steps,
                    trained_stages=[stages[t] for t in stages if steps.get(t) == "ran"],
                    reused_stages=[stages[t] for t in stages if steps.get(t) == "cached"])


def _task_names(pipeline) -> list[str]:
    return list(pipeline.pipeline_spec.root.dag.tasks)
