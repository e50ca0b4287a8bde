"""Objective plug-ins by method name. Adding a weighting method: one file + one line here."""
from __future__ import annotations

from nmtrec.components.train.objectives.famo import FAMO
from nmtrec.components.train.objectives.famo_nmt import FAMONMTStage
from nmtrec.components.common.methods import parse_method
from nmtrec.components.train.objectives.nmt import NMTStage, SingleTask
from nmtrec.components.train.objectives.static import StaticWeights


def joint_objective(name: str, num_tasks: int):
    kind, w = parse_method(name, num_tasks)
    if kind == "equal_weights":
        return StaticWeights([1.0] * num_tasks)
    if kind == "weight_grid":
        return StaticWeights(w)
    if kind == "famo":
        return FAMO(num_tasks)
    raise ValueError(f"{name!r} is not a joint-training method")


def stage_objective(method: str, stage: int, nmt_cfg, frozen: dict[int, float], tolerance: dict[int, float],
                    frozen_valid: dict[int, float], valid_tolerance: dict[int, float], steps_per_epoch: int = 1,
                    margin: float = 0.0):
    """frozen/tolerance: what the multipliers aim at; frozen_valid/valid_tolerance: the early-stopping bound;
    margin: paired, the standard errors below level they aim at (nmt.aim)."""
    if stage == 0:
        return SingleTask(0)
    kw = dict(lambda_init=nmt_cfg.lambda_init, tau=nmt_cfg.tau, tolerance=tolerance, ema=nmt_cfg.ema,
              update=nmt_cfg.multiplier, frozen_valid=frozen_valid, valid_tolerance=valid_tolerance,
              measure=nmt_cfg.constraint_data, steps_per_epoch=steps_per_epoch, z=nmt_cfg.z,
              checks_per_epoch=nmt_cfg.checks_per_epoch, patience_on=nmt_cfg.patience_on)
    if method == "famo+nmt":  # the paper's form: FAMO balances f_k against the loss constraint term
        return FAMONMTStage(stage, frozen, **kw)
    return NMTStage(stage, frozen, anchor=nmt_cfg.anchor, higher_weight=nmt_cfg.higher_weight,
                    feasible_z=nmt_cfg.feasible_z, catch_up=nmt_cfg.catch_up, margin=margin, **kw)
