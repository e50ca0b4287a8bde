"""`<output>/run.json`: what one `nmtrec run` did, for `nmtrec runs` and `nmtrec inspect`.

kfp.local keeps no record of a run: a step reused from the cache leaves nothing in the run's own
`kfp/<run>/` folder (its artifact stays where an earlier run wrote it), and a failed run leaves no
report. So `run_local` writes this record when the steps start (status "running", with its pid: a
record still "running" whose process is gone was killed or interrupted) and again when the run ends
("complete" or "failed"), with every step as the console showed it: trained / reused / failed and its
output artifacts' URIs (a reused stage's checkpoint is the cached artifact's).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from nmtrec.components.common.config import Config
from nmtrec.components.common.files import write_json_atomic

RUN_RECORD = "run.json"
VERSION = 1


def start_record(output: Path, cfg: Config, start=None) -> dict:
    """Write the record of a run that is starting; returns it for finish_record."""
    record = {
        "version": VERSION, "name": cfg.name, "tasks": list(cfg.tasks), "methods": list(cfg.methods),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "status": "running", "pid": os.getpid(),
        "host": socket.gethostname(), "from_checkpoint": getattr(start, "uri", None), "steps": [],
    }
    write_json_atomic(Path(output) / RUN_RECORD, record)
    return record


def finish_record(output: Path, record: dict, steps, status: str, seconds: float | None = None,
                  failed_step: str | None = None, error: str | None = None) -> None:
    """Rewrite the record with the run's outcome and its steps (console.StepRecord)."""
    record = {**record, "status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "seconds": seconds, "failed_step": failed_step, "error": error,
              "steps": [{"name": s.name, "task": s.task, "status": s.status, "seconds": round(s.seconds, 3),
                         "figure": s.figure, "artifacts": dict(s.artifacts)} for s in steps]}
    write_json_atomic(Path(output) / RUN_RECORD, record)
