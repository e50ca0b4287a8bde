"""Stage reuse: after a k-task run, the (k+1)-task run trains only the new stage (target: ≤ 1.3x one stage).

Runs the config's pipeline locally (kfp.local, caching on, fresh cache), then the same pipeline with
one more task appended, then, as the reference, the new stage alone through the component core on the
same dataset and stage-k checkpoint. Prints which stages each run trained and the ratio
(second run) / (one stage).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pipelines.config import ConfigError, load_config

LABELS = ["click", "like", "follow", "share"]


def add_arguments(p) -> None:
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--add-task", help="the task appended for the second run (default: the first unused label)")
    p.add_argument("--output", default="runs/bench-stage-reuse")
    p.add_argument("--target", type=float, default=1.3)


def run(args) -> int:
    from pipelines.local import run_local

    cfg = load_config(args.config)
    new = args.add_task or next((t for t in LABELS if t not in cfg.tasks), None)
    if new is None or new in cfg.tasks:
        raise ConfigError(f"--add-task: need a task not in {cfg.tasks}")
    more = cfg.model_copy(update={"tasks": [*cfg.tasks, new]})
    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)  # a fresh cache: the first run trains everything

    first = run_local(cfg, out / "first")
    print(f"run 1 {cfg.tasks}: {first.seconds:.1f}s, trained {first.trained_stages}, reused {first.reused_stages}")
    second = run_local(more, out / "second")
    print(f"run 2 {more.tasks}: {second.seconds:.1f}s, trained {second.trained_stages}, "
          f"reused {second.reused_stages}")

    stage = len(cfg.tasks)
    one = _time_one_stage(more, stage, out / "first" / "kfp", out / "reference")
    ratio = second.seconds / one
    ok = ratio <= args.target and second.trained_stages == [f"stage-{stage + 1}-{new}"]
    print(f"one stage ({new}) alone: {one:.1f}s; second run / one stage = {ratio:.2f} "
          f"(target <= {args.target}) {'OK' if ok else 'MISSED'}")
    (out / "result.json").write_text(json.dumps({
        "first_s": first.seconds, "second_s": second.seconds, "one_stage_s": one, "ratio": ratio,
        "trained_second": second.trained_stages, "reused_second": second.reused_stages}, indent=1))
    return 0 if ok else 1


def _time_one_stage(cfg, stage: int, kfp_root: Path, out: Path) -> float:
    """The new stage through the component core, on the first run's dataset and last checkpoint."""
    from components.train.core import run_stage

    dataset = _only(kfp_root.glob("*/preprocess-*/dataset"))
    previous = _only(kfp_root.glob(f"*/train-stage{'' if stage == 1 else f'-{stage}'}/checkpoint"))
    start = time.perf_counter()
    run_stage(cfg, stage, str(dataset), str(out / "checkpoint"), str(previous))
    return time.perf_counter() - start


def _only(paths) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise RuntimeError(f"expected one artifact, found {found}")
    return found[0]
