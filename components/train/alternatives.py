"""An NMT stage under several variants of its settings (`nmt.alternatives`), keeping one.

Where the higher tasks have slack (a lower task helps them: positive transfer), the constraints do not
bind and the stage's mix of losses -- how much of the higher tasks' own losses it keeps training
(`nmt.higher_weight`) -- decides where on the joint weighting curve it lands, and no one mix suits every
data set. So stage k trains as configured and under each alternative, each a whole stage with its own
constraints, multipliers, early stopping and fallback. A variant replaces the stage as configured only
where it is no worse on any higher task's validation loss (priority first: a variant may not trade a
higher task for the new one, even within the constraints' tolerance), and among those the lowest
validation loss of the new task is kept: the stage's early stopping, applied across the variants too.
The kept checkpoint is republished under the stage's own config with every variant's validation losses
in its summary.
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
    """train_stage(cfg, stage, dataset_dir, out_dir, previous_dir) -> StageManifest: one variant."""
    task = cfg.tasks[stage]
    init_process_group()  # the ranks agree on one directory for the variants
    with tempfile.TemporaryDirectory(prefix="nmtrec-variants-") as local:
        root = Path(shared_tmp(local))
        metas = [train_stage(c, stage, dataset_dir, str(root / f"variant-{i}"), previous_dir)
                 for i, c in enumerate(variants(cfg))]
        losses = [m.stages[-1].valid_loss for m in metas]
        kept = choose(losses, cfg.tasks[:stage], task)
        keys = [{}, *cfg.nmt.alternatives]  # what each variant changes ({}: the stage's own settings)
        record = [{"nmt": k, "valid_loss": v, "kept": i == kept} for i, (k, v) in enumerate(zip(keys, losses))]
        log.info("stage %d (%s): kept the variant %s (validation %s loss %s)", stage + 1, task, keys[kept], task,
                 " vs ".join(f"{x[task]:.5f}" for x in losses))
        meta = metas[kept]
        summary = replace(meta.stages[-1], alternatives=record)
        meta = meta.updated(stages=[*meta.stages[:-1], summary],
                            config=json.loads(step_inputs_json(cfg, Step("stage", stage))))
        checkpoint.republish(root / f"variant-{kept}", out_dir, meta)
    return meta
