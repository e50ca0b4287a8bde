"""An NMT stage under several variants of its settings (`nmt.alternatives`), keeping one.

Where the higher tasks have slack (a lower task helps them: positive transfer), the constraints do not
bind and the stage's mix of losses -- how much of the higher tasks' own losses it keeps training
(`nmt.higher_weight`) -- decides where on the joint weighting curve it lands, and no one mix suits every
data set. So stage k trains as configured and under each alternative, each a whole stage with its own
constraints, multipliers, early stopping and fallback. A variant replaces the stage as configured only
where it is no worse on any higher task's validation loss (priority first: a variant may not trade a
higher task for the new one, even within the constraints' tolerance), and among those the lowest
validation loss of the new task is kept: the stage's early stopping, applied across the variants too.
With `nmt.distill_variants` the stage also trains one fresh model distilled from all the variants (their
averaged predictions: components/train/objectives/distilled.py) and offers it to the same choice. The kept
checkpoint is republished under the stage's own config with every candidate's validation losses in its
summary.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from nmtrec.components.common.config import Config
from nmtrec.components.common.manifest import StageManifest
from nmtrec.components.common.step_inputs import Step, step_inputs_json
from nmtrec.components.train import checkpoint
from nmtrec.components.train.distributed import init_process_group, shared_tmp

log = logging.getLogger("nmtrec.train")


def variants(cfg: Config) -> list[Config]:
    """The stage's own config, then one per alternative (none of them with alternatives of its own)."""
    own = cfg.nmt.model_copy(update={"alternatives": []})
    return [cfg.model_copy(update={"nmt": nmt})
            for nmt in [own, *(cfg.nmt.alternative(i) for i in range(len(cfg.nmt.alternatives)))]]


def choose(valid_losses: list[dict[str, float]], higher: list[str], task: str) -> int:
    """The variant kept: among those no worse than the first (the stage as configured) on every higher
    task's validation loss, the lowest of the new task's (ties: the earlier variant)."""
    first = valid_losses[0]
    allowed = [i for i, v in enumerate(valid_losses) if all(v[h] <= first[h] for h in higher)]
    return min(allowed, key=lambda i: valid_losses[i][task])


def run_with_alternatives(train_stage, cfg: Config, stage: int, dataset_dir: str, out_dir: str,
                          previous_dir: str) -> StageManifest:
    """train_stage(cfg, stage, dataset_dir, out_dir, previous_dir, teachers=None) -> StageManifest: one variant
    (teachers: the variants' artifacts, to distill a model from)."""
    task = cfg.tasks[stage]
    init_process_group()  # the ranks agree on one directory for the variants
    with tempfile.TemporaryDirectory(prefix="nmtrec-variants-") as local:
        root = Path(shared_tmp(local))
        configs = variants(cfg)
        dirs = [str(root / f"variant-{i}") for i in range(len(configs))]
        metas = [train_stage(c, stage, dataset_dir, d, previous_dir) for c, d in zip(configs, dirs)]
        # what each candidate is: the variant's changed keys ({}: the stage's own settings), or distilled
        records = [{"nmt": k} for k in [{}, *cfg.nmt.alternatives]]
        if cfg.nmt.distill_variants:
            dirs.append(str(root / "distilled"))
            metas.append(train_stage(configs[0], stage, dataset_dir, dirs[-1], previous_dir, teachers=dirs[:-1]))
            records.append({"nmt": {}, "distilled_from": list(range(len(configs)))})
        losses = [m.stages[-1].valid_loss for m in metas]
        kept = choose(losses, cfg.tasks[:stage], task)
        record = [{**r, "valid_loss": v, "kept": i == kept} for i, (r, v) in enumerate(zip(records, losses))]
        log.info("stage %d (%s): kept the %s (validation %s loss %s)", stage + 1, task,
                 "distilled model" if "distilled_from" in records[kept] else f"variant {records[kept]['nmt']}",
                 task, " vs ".join(f"{x[task]:.5f}" for x in losses))
        meta = metas[kept]
        summary = replace(meta.stages[-1], alternatives=record)
        meta = meta.updated(stages=[*meta.stages[:-1], summary],
                            config=json.loads(step_inputs_json(cfg, Step("stage", stage))))
        checkpoint.republish(dirs[kept], out_dir, meta)
    return meta
