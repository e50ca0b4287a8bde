"""Fault tolerance of a stage: a resume checkpoint every `train.checkpoint_every` optimiser steps
under `train.resume_root/<stage key>/last`, and the best-validation checkpoint beside it.

A restarted stage (pod lost, `kill -9`) with the same config finds `last`, loads the model, the fused
and dense optimizer states, the objective's state (e.g. NMT multipliers) and its place in the data
(epoch, batch), and continues: it loses at most one interval, and because the data order is a pure
function of (seed, epoch) the result equals an uninterrupted run's. The key includes a hash of the
stage's whole config, so a changed config never resumes from a stale checkpoint.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch.distributed as dist

from nmtrec.components.train import checkpoint

log = logging.getLogger("nmtrec.train")


def stage_key(inputs_json: str, stage: int, task: str) -> str:
    """`inputs_json`: the stage's inputs (step_inputs.py), which leave out every run-only setting, so a
    stage restarted with another process count (a pod rescheduled with fewer GPUs) still resumes; the
    checkpoint reshards on load."""
    digest = hashlib.sha256(inputs_json.encode()).hexdigest()[:12]
    return f"stage{stage + 1}-{task}-{digest}"


class Resumer:
    def __init__(self, root: str | Path, key: str, every: int, meta, plan: dict | None = None):
        """`meta`: the stage's StageManifest (components/common/manifest.py), saved with each resume point."""
        self.dir = Path(root) / key
        self.every = every
        self.meta = meta
        self.plan = plan

    @property
    def best_dir(self) -> Path:
        return self.dir / "best"

    @property
    def last_dir(self) -> Path:
        return self.dir / "last"

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, model, dense_opt, objective, progress: dict) -> None:
        checkpoint.save(self.last_dir, model, self.meta.updated(step=progress["step"]), dense_opt=dense_opt,
                        plan=self.plan, unsharded=False,
                        extra={"progress": progress, "objective": objective.resume_state()})

    def load(self, model, dense_opt, objective) -> dict | None:
        """The saved progress after loading everything back, or None when there is nothing to resume."""
        if not (self.last_dir / checkpoint.MANIFEST).is_file():
            return None
        meta = checkpoint.read_meta(self.last_dir)
        if meta.model_hash != self.meta.model_hash or meta.tasks != self.meta.tasks:
            raise checkpoint.CheckpointError(
                f"{self.last_dir}: resume checkpoint is for tasks {meta.tasks} / model {meta.model_hash}, "
                f"this stage is for {self.meta.tasks} / {self.meta.model_hash}")
        checkpoint.load_into(self.last_dir, model, dense_opt=dense_opt, check=False)
        extra = checkpoint.read_extra(self.last_dir)
        objective.load_state(extra["objective"])
        if dist.get_rank() == 0:
            log.info("resuming from %s at step %d", self.last_dir, extra["progress"]["step"])
        return extra["progress"]

    def cleanup(self) -> None:
        """After the stage's output is safely written."""
        if dist.get_world_size() > 1:
            dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            root = self.dir.parent
            if root.name.endswith(".resume"):  # a default root (`<stage output>.resume`, `<run output>/.resume`)
                try:
                    root.rmdir()  # only when empty: another stage of the run may be using it
                except OSError:
                    pass
