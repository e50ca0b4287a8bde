"""Stage reuse: after a k-task run, the (k+1)-task run trains only the new stage (target: ≤ 1.3x one stage).

Runs the config's pipeline locally (kfp.local, caching on, fresh cache), then the same pipeline with
one more task appended, then, as the reference, the new stage alone through the stage entry point on the
same dataset and stage-k checkpoint, as a step process. Prints which stages each run trained and the
ratio (second run) / (one stage) in CPU time (robust to other load on a shared machine) and wall time.
"""
from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nmtrec.components.common.config import ConfigError, load_config

LABELS = ["click", "like", "follow", "share"]


def add_arguments(p) -> None:
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--add-task", help="the task appended for the second run (default: the first unused label)")
    p.add_argument("--output", default="runs/bench-stage-reuse")
    p.add_argument("--target", type=float, default=1.3)


def run(args) -> int:
    from nmtrec.pipelines.local import run_local

    cfg = load_config(args.config)
    new = args.add_task or next((t for t in LABELS if t not in cfg.tasks), None)
    if new is None or new in cfg.tasks:
        raise ConfigError(f"--add-task: need a task not in {cfg.tasks}")
    # the NMT chain alone: baselines (a weight grid has one weight per task) do not carry over to k+1 tasks
    cfg = cfg.updated(methods=["nmt"])
    more = cfg.updated(tasks=[*cfg.tasks, new])
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)  # a fresh cache: the first run trains everything

    first = run_local(cfg, out / "first")
    print(f"run 1 {cfg.tasks}: {first.seconds:.1f}s, trained {first.trained_stages}, reused {first.reused_stages}")
    with Clock() as second_clock:
        second = run_local(more, out / "second")
    print(f"run 2 {more.tasks}: {second_clock}, trained {second.trained_stages}, reused {second.reused_stages}")

    stage = len(cfg.tasks)
    with Clock() as one:
        _one_stage(more, stage, out / "first" / "kfp", out / "reference")
    print(f"one stage ({new}) alone, as a step process: {one}")
    wall, cpu = second_clock.wall / one.wall, second_clock.cpu / one.cpu
    ok = cpu <= args.target and second.trained_stages == [f"stage-{stage + 1}-{new}"]
    print(f"second run / one stage: {cpu:.2f} in CPU time, {wall:.2f} in wall time (target <= {args.target}, "
          f"judged on CPU time, which other load on a shared machine does not inflate) {'OK' if ok else 'MISSED'}")
    (out / "result.json").write_text(json.dumps({
        "first_s": first.seconds, "second_wall_s": second_clock.wall, "second_cpu_s": second_clock.cpu,
        "one_stage_wall_s": one.wall, "one_stage_cpu_s": one.cpu, "ratio_cpu": cpu, "ratio_wall": wall,
        "trained_second": second.trained_stages, "reused_second": second.reused_stages}, indent=1))
    return 0 if ok else 1


class Clock:
    """Wall time and CPU time of this process and its (finished) child processes."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, _cpu() - self._cpu

    def __str__(self):
        return f"{self.wall:.1f}s wall, {self.cpu:.1f}s CPU"


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _one_stage(cfg, stage: int, kfp_root: Path, out: Path) -> None:
    """The new stage as a pipeline step runs it (a fresh process through the stage entry point), on the
    first run's dataset and last checkpoint."""
    from nmtrec.components.common.step_inputs import Step, step_inputs_json

    dataset = _only(kfp_root.glob("*/preprocess-*/dataset"))
    previous = _only(kfp_root.glob(f"*/train-stage{'' if stage == 1 else f'-{stage}'}/checkpoint"))
    subprocess.run([sys.executable, "-m", "nmtrec.components.train.launch", step_inputs_json(cfg, Step("stage", stage)), str(stage),
                    str(dataset), str(out / "checkpoint"), str(previous)], check=True)


def _only(paths) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise RuntimeError(f"expected one artifact, found {found}")
    return found[0]
