"""An NMT stage under several variants of its settings (`nmt.alternatives`), keeping one.

Where the higher tasks have slack (a lower task helps them: positive transfer), the constraints do not
bind and the stage's mix of losses -- how much of the higher tasks' own losses it keeps training
(`nmt.higher_weight`) -- decides where on the joint weighting curve it lands, and no one mix suits every
data set. So stage k trains as configured and under each alternative, each a whole stage with its own
constraints, multipliers, early stopping and fallback, and keeps the model with the lowest validation
loss of its own task: the stage's early stopping, applied across the variants too. A higher task is
held by every variant's own constraints; the choice reads only the new task. The kept checkpoint is
republished under the stage's own config with every variant's validation losses in its summary.
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


def run_with_alternatives(train_stage, cfg: Config, stage: int, dataset_dir: str, out_dir: str,
                          previous_dir: str) -> StageManifest:
    """train_stage(cfg, stage, dataset_dir, out_dir, previous_dir) -> StageManifest: one variant."""
    task = cfg.tasks[stage]
    init_process_group()  # the ranks agree on one directory for the variants
    with tempfile.TemporaryDirectory(prefix="nmtrec-variants-") as local:
        root = Path(shared_tmp(local))
        metas = [train_stage(c, stage, dataset_dir, str(root / f"variant-{i}"), previous_dir)
                 for i, c in enumerate(variants(cfg))]
        losses = [m.stages[-1].valid_loss[task] for m in metas]
        kept = min(range(len(metas)), key=losses.__getitem__)  # ties: the stage's own settings
        keys = [{}, *cfg.nmt.alternatives]  # what each variant changes ({}: the stage's own settings)
        record = [{"nmt": k, "valid_loss": m.stages[-1].valid_loss, "kept": i == kept}
                  for i, (k, m) in enumerate(zip(keys, metas))]
        log.info("stage %d (%s): kept the variant %s (validation %s loss %s)", stage + 1, task, keys[kept], task,
                 " vs ".join(f"{x:.5f}" for x in losses))
        meta = metas[kept]
        summary = replace(meta.stages[-1], alternatives=record)
        meta = meta.updated(stages=[*meta.stages[:-1], summary],
                            config=json.loads(step_inputs_json(cfg, Step("stage", stage))))
        checkpoint.republish(root / f"variant-{kept}", out_dir, meta)
    return meta
