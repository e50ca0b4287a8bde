"""Stage reuse when a lower-priority objective is appended to the task list.

Two ways to skip stages 1..k that an earlier run already trained:
- caching: each step's inputs are only what it depends on (components/common/step_inputs.py: stage k
  reads tasks[:k+1], model, training and NMT settings, never run-only settings), so KFP's cache, and
  kfp.local's opt-in cache for local runs, hit for stages 1..k. Locally the cache key also covers a
  digest of every project module the step's component reaches through its imports (on a cluster the
  image tag plays that part).
- `--from-checkpoint URI`: a dsl.importer brings an earlier run's stage-k artifact in and the
  pipeline starts at stage k+1. The stage checks task order and model hash and refuses a mismatch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from kfp import dsl
from kfp.dsl import pipeline_context

from nmtrec.components.common.config import Config, ConfigError
from nmtrec.pipelines.import_graph import module_files, reachable

CODE_ENV = "NMTREC_CODE_DIGEST"


def code_digest(module: str) -> str:
    """sha256 of every nmtrec module `module` can reach through its imports (import_graph.py)."""
    files = module_files()
    h = hashlib.sha256()
    for name in reachable(module):
        h.update(name.encode() + b"\0" + files[name].read_bytes() + b"\0")
    return h.hexdigest()[:16]


def key_by_code(ops) -> None:
    """Put each task's source digest into its environment: kfp.local's cache key covers a task's env vars."""
    modules = {op.component_spec.name: op.python_func.__module__ for op in vars(ops).values() if op is not None}
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.container_spec is not None:
            task.set_env_variable(CODE_ENV, code_digest(modules[task.component_spec.name]))


@dataclass(frozen=True)
class StartPoint:
    uri: str
    stages_done: int  # k: the artifact is stage k's output; the pipeline starts at stage k+1
    first_stage_uri: str | None = None  # stage 1's artifact (the report's single-task baseline)


def resolve_start(cfg: Config, uri: str, stages_done: int | None = None, first_stage: str | None = None) -> StartPoint:
    """Check --from-checkpoint (and --first-stage) against the config; see _resolve_one."""
    start = _resolve_one(cfg, uri, stages_done, "--from-checkpoint")
    if start.stages_done == 1:
        if first_stage is not None:
            raise ConfigError("--first-stage: not needed, --from-checkpoint is stage 1's checkpoint")
        return StartPoint(start.uri, 1, start.uri)
    if first_stage is None:
        raise ConfigError(f"--from-checkpoint holds stage {start.stages_done}: give stage 1's checkpoint of the same "
                          "run with --first-stage URI too (the report's single-task baseline)")
    first = _resolve_one(cfg, first_stage, 1 if "://" in first_stage.removeprefix("file://") else None,
                         "--first-stage")
    if first.stages_done != 1:
        raise ConfigError(f"--first-stage {first_stage}: holds stage {first.stages_done}, not stage 1")
    return StartPoint(start.uri, start.stages_done, first.uri)


def _resolve_one(cfg: Config, uri: str, stages_done: int | None, flag: str) -> StartPoint:
    """A local checkpoint is read here (task order and model hash are compared now, before anything
    runs); a remote one needs its stage number and is checked by the stage that loads it."""
    local = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" not in local:
        from nmtrec.components.train.checkpoint import CheckpointError, read_meta
        from nmtrec.components.train.stage import check_previous

        path = Path(local).resolve()
        try:
            meta = read_meta(path)
        except CheckpointError as e:
            raise ConfigError(f"{flag}: {e}") from None
        if meta.is_joint:
            raise ConfigError(f"{flag} {uri}: holds the joint-training baseline {meta.method!r}, not an NMT stage")
        k = len(meta.tasks)
        if stages_done is not None and stages_done != k:
            raise ConfigError(f"{flag} {uri}: holds stage {k} ({meta.tasks}), not stage {stages_done}")
        if k >= len(cfg.tasks):
            raise ConfigError(f"{flag} {uri}: already covers all tasks {cfg.tasks}: nothing left to train")
        try:
            check_previous(meta, cfg, k, uri)
        except CheckpointError as e:
            raise ConfigError(f"{flag}: {e}") from None
        return StartPoint(str(path), k)
    if stages_done is None:
        raise ConfigError(f"{flag} {uri}: a remote checkpoint needs --from-stage K (the stage it holds)")
    if not 1 <= stages_done < len(cfg.tasks):
        raise ConfigError(f"--from-stage {stages_done}: must be between 1 and {len(cfg.tasks) - 1} for tasks {cfg.tasks}")
    return StartPoint(uri, stages_done)


def import_checkpoint(start: StartPoint):
    """(importer of stage k's artifact, importer of stage 1's artifact: the same one when k = 1)."""
    last = dsl.importer(artifact_uri=start.uri, artifact_class=dsl.Model, reimport=False).set_display_name(
        f"import-stage-{start.stages_done}")
    if start.first_stage_uri in (None, start.uri):
        return last, last
    first = dsl.importer(artifact_uri=start.first_stage_uri, artifact_class=dsl.Model, reimport=False)
    return last, first.set_display_name("import-stage-1")
