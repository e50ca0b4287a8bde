"""Joint-training baselines: one model trained on every task at once with a weighting method
(equal weights, one static weight vector of the grid, FAMO). The same sharded model, data and
validation-based stopping as an NMT stage; only the objective differs."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch.distributed as dist

from nmtrec.components.common.manifest import JOINT_HISTORY, StageManifest, dump_history
from nmtrec.components.train import checkpoint
from nmtrec.components.train.distributed import shared_tmp
from nmtrec.components.train.stage import loss_function, prepare
from nmtrec.components.train.epochs import fit_epochs, mean_losses
from nmtrec.components.train.objectives.registry import joint_objective
from nmtrec.components.common.config import Config


def run_joint(cfg: Config, method: str, dataset_dir: str, out_dir: str) -> StageManifest:
    objective = joint_objective(method, len(cfg.tasks))
    _, train, valid, dmp, dense_opt, plan = prepare(cfg, dataset_dir, cfg.seed, method)
    loss_fn = loss_function(cfg)
    meta = StageManifest(tasks=cfg.tasks, method=method, model_hash=cfg.model_hash(),
                         config=json.loads(cfg.to_json()), world_size=dist.get_world_size())
    with tempfile.TemporaryDirectory(prefix="nmtrec-best-") as tmp:
        history = fit_epochs(dmp, dense_opt, objective, train, valid, stage_task=0,
                              batch_size=cfg.train.batch_size, max_epochs=cfg.train.max_epochs,
                              patience=cfg.train.patience, seed=cfg.seed, best_dir=Path(shared_tmp(tmp)) / "best",
                              meta=meta, label=method, loss_fn=loss_fn, shuffle_rows=cfg.train.shuffle_rows)
    valid_loss = mean_losses(dmp, valid, cfg.train.batch_size, loss_fn)
    meta = meta.updated(valid_loss=dict(zip(cfg.tasks, (float(x) for x in valid_loss))), epochs=history["epochs"],
                        final_state=objective.state(), history=JOINT_HISTORY)
    checkpoint.save(out_dir, dmp, meta, plan=plan, files={JOINT_HISTORY: dump_history({"valid": history["valid"]})})
    return meta
