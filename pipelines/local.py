"""Run a pipeline on this machine with kfp.local (no Kubernetes): each step is a subprocess of the
current Python environment, the same component code a cluster runs."""
from __future__ import annotations

import shutil
from pathlib import Path

from kfp import local

from pipelines.config import Config
from pipelines.factory import build_pipeline


def run_local(cfg: Config, output: str | Path) -> Path:
    """Run every step; return the path of the report.json copied to output/ (report.html beside it)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(output / "kfp"),
               raise_on_error=True)
    task = build_pipeline(cfg)()
    for key, name in (("html", "report.html"), ("report", "report.json")):  # report.json last: it marks done
        dest = output / name
        tmp = dest.with_name(name + ".tmp")
        shutil.copyfile(Path(task.outputs[key].path), tmp)
        tmp.replace(dest)
    return output / "report.json"
