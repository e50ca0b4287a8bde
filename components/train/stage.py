"""Train one NMT stage: the component core, runnable without KFP.

Stage k (0-based) trains task `tasks[k]`; for k > 0 it keeps every higher task at its frozen optimum
through the Lagrangian objective, starting from a fresh initialisation (`nmt.init: fresh`, stage k-1's
model then serves as the reference and the teacher of the higher tasks) or from stage k-1's parameters
(`previous`, the paper's form). The config a stage sees has
`tasks` cut to `tasks[:k+1]`, so appending a lower-priority task leaves stages 1..k unchanged
(their KFP cache keys stay the same).

The frozen optimum of task k is measured at the stage's final (best-validation) parameters: the mean
training loss over one pass, the validation loss and AUC, and the per-row losses on the validation
and test splits (components/train/paired.py), which every later stage carries and compares with.
How later stages hold it (`nmt.constraint_data`): `paired` (default) compares each higher task with its
frozen model row by row on the validation split; `valid` follows held-out batches against the frozen
validation loss; `train` is the paper's f_j <= f_j* + r_j on training batches (a stage that stopped at
its best validation epoch has a training loss biased low, so that form reads violations that are not
there). A stage ends with two audits of every higher task: on validation (what chose the epoch) and,
reported only, on the test split (components/train/paired.py `paired_audit`). A fresh stage whose own
model fails the validation audit falls back to stage k-1's model (components/train/fallback.py).
A stage given `teachers` (its variants' artifacts, components/train/alternatives.py) trains a fresh model
distilled from them instead (components/train/objectives/distilled.py): no multipliers and no fallback,
the variants' choice holds it to the higher tasks; its audits are written as for any stage.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from nmtrec.components.train import audit, checkpoint, fallback, paired
from nmtrec.components.train.alternatives import run_with_alternatives
from nmtrec.components.train.data import load_split, num_batches
from nmtrec.components.train.distributed import (current_device, init_process_group, log_plan, set_threads, shard,
                                                  shared_tmp)
from nmtrec.components.train.epochs import fit_epochs, mean_losses, task_losses
from nmtrec.components.train.losses import per_task
from nmtrec.components.train.objectives.distilled import Distilled
from nmtrec.components.train.objectives.registry import stage_objective
from nmtrec.components.train.resume import Resumer, stage_key
from nmtrec.components.train.teacher import Teacher
from nmtrec.components.train.warmup import Warmup
from nmtrec.models.registry import build_model
from nmtrec.models.sparse import check_spec
from nmtrec.components.common.config import Config
from nmtrec.components.common.feature_spec import FeatureSpec
from nmtrec.components.common.manifest import StageManifest, StageSummary, dump_history, history_file, read_history
from nmtrec.components.common.step_inputs import Step, step_inputs_json

log = logging.getLogger("nmtrec.train")

DISTILLED_SEED = 100  # a distilled model's initialisation and data order differ from the variants'


def config_diff(a, b, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} vs {b!r}"]


def check_previous(meta: StageManifest, cfg: Config, stage: int, where) -> None:
    """Refuse a previous-stage checkpoint from another model, task order or stage."""
    want = cfg.tasks[:stage]
    if meta.tasks != want:
        raise checkpoint.CheckpointError(
            f"{where}: checkpoint was trained for tasks {meta.tasks} but stage {stage + 1} "
            f"needs the higher-priority tasks {want} in this order (priorities changed? retrain from stage 1)")
    theirs = meta.parsed_config() if meta.config else None
    changed = [t for t in want if theirs is not None and task_setting(theirs, t) != task_setting(cfg, t)]
    if changed:
        t = changed[0]
        raise checkpoint.CheckpointError(
            f"{where}: checkpoint trained task {t!r} with {task_setting(theirs, t)}, this config has "
            f"{task_setting(cfg, t)} (a higher task's label or loss changed: retrain from stage 1)")
    if meta.model_hash != cfg.model_hash():
        mine = json.loads(cfg.to_json())
        theirs = meta.config or {}
        differs = config_diff({k: theirs.get(k) for k in ("model", "features")},
                              {k: mine[k] for k in ("model", "features")})
        raise checkpoint.CheckpointError(
            f"{where}: checkpoint model/features hash {meta.model_hash} differs from this config's "
            f"{cfg.model_hash()} (checkpoint vs this config: {'; '.join(differs) or 'unknown'}; "
            f"model or features changed: retrain from stage 1)")


def task_setting(cfg: Config, task: str) -> dict:
    """What a task was trained on: its label column and loss."""
    return {"label": cfg.label_of(task), "loss": cfg.loss_of(task)}


def task_loss_names(cfg: Config) -> list[str]:
    return [cfg.loss_of(t) for t in cfg.tasks]


def loss_function(cfg: Config):
    """The per-task batch loss: each task's own (`loss`) or `train.loss` (all BCE: `task_losses`)."""
    names = task_loss_names(cfg)
    return task_losses if set(names) == {"bce"} else per_task(names)


def prepare(cfg: Config, dataset_dir: str, seed: int, label: str):
    """Process group, data splits and the sharded model: shared by NMT stages and joint baselines."""
    spec = FeatureSpec.read(dataset_dir)
    check_spec(spec, cfg.features)
    device = init_process_group()
    set_threads(cfg.train.threads)
    torch.manual_seed(seed)  # the dense init: identical on every rank and for any plan
    labels = cfg.labels_of(cfg.tasks)  # each task's label column
    train = load_split(dataset_dir, spec, "train", labels)
    valid = load_split(dataset_dir, spec, "valid", labels)
    model = build_model(cfg.model, spec, len(cfg.tasks))
    dmp, dense_opt, plan = shard(model, device, cfg.train, seed=cfg.seed)
    return spec, train, valid, dmp, dense_opt, log_plan(plan, label)


def tolerances(cfg: Config, optima: dict[str, float]) -> dict[str, float]:
    """r_j of each constraining task: its own tolerance (else nmt.tolerance) + relative_tolerance * |f_j*|."""
    return {t: cfg.tolerance_of(t) + cfg.nmt.relative_tolerance * abs(v) for t, v in optima.items()}


def run_stage(cfg: Config, stage: int, dataset_dir: str, out_dir: str, previous_dir: str | None = None,
              method: str = "nmt") -> StageManifest:
    """Train stage `stage` into out_dir; an nmt stage past the first with nmt.alternatives trains once per
    variant (and one model distilled from them) and keeps one (components/train/alternatives.py)."""
    if stage > 0 and method == "nmt" and cfg.nmt.alternatives:
        return run_with_alternatives(_train_stage, cfg, stage, dataset_dir, out_dir, previous_dir)
    return _train_stage(cfg, stage, dataset_dir, out_dir, previous_dir, method)


def _train_stage(cfg: Config, stage: int, dataset_dir: str, out_dir: str, previous_dir: str | None = None,
                 method: str = "nmt", teachers: list[str] | None = None) -> StageManifest:
    """teachers: the artifacts of the stage's variants; the stage then trains a fresh model distilled from
    them (components/train/objectives/distilled.py) instead of the constrained objective."""
    if not 0 <= stage < len(cfg.tasks):
        raise ValueError(f"stage {stage + 1} does not exist for tasks {cfg.tasks}")
    cfg = cfg.model_copy(update={"tasks": cfg.tasks[:stage + 1]})
    task = cfg.tasks[stage]
    distilled = teachers is not None
    label = f"stage {stage + 1} ({task})" + (f" [{method}]" if stage and method != "nmt" else "") + \
        (" [distilled]" if distilled else "")
    prev = None
    if stage > 0:
        if previous_dir is None:
            raise ValueError(f"{label}: needs the checkpoint of stage {stage}")
        prev = checkpoint.read_meta(previous_dir)
        check_previous(prev, cfg, stage, previous_dir)

    seed = cfg.seed + stage + (DISTILLED_SEED if distilled else 0)
    spec, train, valid, dmp, dense_opt, plan = prepare(cfg, dataset_dir, seed, label)
    # famo+nmt is the paper's form: it continues from the previous parameters and weighs the losses
    fresh = prev is not None and method == "nmt" and (cfg.nmt.init == "fresh" or distilled)
    if prev is not None and not fresh:
        checkpoint.load_into(previous_dir, dmp, allow_new_heads=True, check=False)

    higher = cfg.tasks[:stage]
    frozen = {j: prev.frozen_optima[t] for j, t in enumerate(higher)} if prev else {}
    frozen_valid = {j: prev.frozen_valid[t] for j, t in enumerate(higher)} if prev else {}
    tol = tolerances(cfg, prev.frozen_optima) if prev else {}
    vtol = tolerances(cfg, prev.frozen_valid) if prev else {}
    valid_tol = {j: vtol[t] for j, t in enumerate(higher)}
    if cfg.nmt.constraint_data == "valid":  # aim at the frozen value; r_j is the noise allowance of the audit
        bound, bound_tol = frozen_valid, {j: 0.0 for j in frozen_valid}
    else:  # the paper's f_j <= f_j* + r_j on training batches
        bound, bound_tol = frozen, {j: tol[t] for j, t in enumerate(higher)}
    margin = 0.0
    if stage > 0 and cfg.nmt.aim == "audit" and cfg.nmt.constraint_data == "paired" and not distilled:
        rows = spec.rows_per_split()
        margin = paired.audit_margin(cfg.nmt.z, rows.get("valid", 0), rows.get("test", 0))
        log.info("%s: holds the higher tasks %.2f validation standard errors below level (nmt.aim: audit)",
                 label, margin)
    objective = Distilled() if distilled else stage_objective(
        method, stage, cfg.nmt, bound, bound_tol, frozen_valid, valid_tol, num_batches(train, cfg.train.batch_size),
        margin)
    frozen_rows = {split: paired.load_rows(previous_dir, split) for split in ("valid", "test")} if prev else {}
    frozen_scores = {split: paired.load_rows(previous_dir, split, paired.scores_file)
                     for split in ("valid", "test")} if prev else {}
    checker = warmup = None
    # pairwise higher tasks judged by the AUC they lose (nmt.rank_by_auc): by the checks, the fallback and the audits
    ranked = tuple(t for t in higher if cfg.nmt.rank_by_auc and cfg.loss_of(t) == "pairwise")
    if stage > 0 and not distilled:  # a distilled model is held to the rule of the variants' choice instead
        if cfg.nmt.constraint_data == "paired":
            missing = [t for t in higher if t not in frozen_rows["valid"]]
            if missing:
                raise checkpoint.CheckpointError(
                    f"{previous_dir}: has no per-row validation losses of {missing} (written by an older nmtrec?): "
                    f"retrain from stage 1, or set nmt.constraint_data: valid")
            unscored = [t for t in ranked if t not in frozen_scores["valid"]]
            if unscored:
                log.warning("%s: no frozen validation scores of %s (written by an older nmtrec?): checked by their "
                            "pairwise loss, not by AUC (nmt.rank_by_auc)", previous_dir, unscored)
            ranking = {j: frozen_scores["valid"][t] for j, t in enumerate(higher) if t in ranked and t not in unscored}
            checker = paired.PairedCheck(valid, {j: frozen_rows["valid"][t] for j, t in enumerate(higher)},
                                         cfg.train.batch_size, task_loss_names(cfg),
                                         {j: cfg.tolerance_of(t) for j, t in enumerate(higher)}, ranking)
        warmup = Warmup(dmp, stage, 0 if fresh else cfg.nmt.warmup_epochs)
    teacher = None
    if distilled:
        teacher = Teacher(teachers, cfg.model, spec, len(cfg.tasks), current_device())
    elif getattr(objective, "needs_teacher", False):
        teacher = Teacher(previous_dir, cfg.model, spec, stage, current_device())
    loss_fn = loss_function(cfg)
    inputs_json = step_inputs_json(cfg, Step("stage", stage))  # what the stage depends on: its identity
    meta = StageManifest(tasks=cfg.tasks, stage=stage, task=task, method=method if stage else "nmt",
                         model_hash=cfg.model_hash(), config=json.loads(inputs_json),
                         world_size=dist.get_world_size())
    resumer = None
    if cfg.train.resume_root:
        resumer = Resumer(cfg.train.resume_root, stage_key(inputs_json, stage,
                                                           f"{task}:{method}" + (":distilled" if distilled else "")),
                          cfg.train.checkpoint_every, meta, plan)
    with tempfile.TemporaryDirectory(prefix="nmtrec-best-") as tmp:
        best_dir = resumer.best_dir if resumer else Path(shared_tmp(tmp)) / "best"
        history = fit_epochs(dmp, dense_opt, objective, train, valid, stage_task=stage,
                              batch_size=cfg.train.batch_size, max_epochs=cfg.train.max_epochs,
                              patience=cfg.train.patience, seed=seed,
                              best_dir=best_dir, meta=meta, label=label, resumer=resumer, loss_fn=loss_fn,
                              paired=checker, checks_per_epoch=cfg.nmt.checks_per_epoch, warmup=warmup,
                              shuffle_rows=cfg.train.shuffle_rows, teacher=teacher)
        fell_back = None  # a fresh stage that breaks a constraint on validation (components/train/fallback.py)
        if fresh and checker is not None and cfg.nmt.fallback:  # fresh: an "nmt" stage past the first
            breached = fallback.breached_on_valid(dmp, valid, frozen_rows["valid"], higher, cfg.train.batch_size,
                                                  cfg.nmt.z, {t: cfg.tolerance_of(t) for t in higher},
                                                  task_loss_names(cfg), frozen_scores["valid"], ranked)
            if breached:
                log.warning("%s: significantly worse than stage %d on %s on validation: falls back to stage %d's "
                            "model (%s's own parameters, if it has any, trained on it)", label, stage, breached,
                            stage, task)
                fit = fallback.train_on_frozen(
                    dmp, dense_opt, previous_dir, stage, train, valid, batch_size=cfg.train.batch_size,
                    max_epochs=cfg.train.max_epochs, patience=cfg.train.patience, seed=cfg.seed + stage,
                    best_dir=Path(shared_tmp(tmp)) / "fallback", meta=meta, label=label, loss_fn=loss_fn,
                    shuffle_rows=cfg.train.shuffle_rows)
                fell_back = {"breached": breached, "epochs": fit["epochs"]}
                history["fallback"] = fit  # the constrained attempt's series stay; the summary names the breach
    bs = cfg.train.batch_size
    files: dict[str, str | bytes] = {}
    train_loss = [float(x) for x in mean_losses(dmp, train, bs, loss_fn)]
    valid_loss = [float(x) for x in mean_losses(dmp, valid, bs, loss_fn)]
    test = load_split(dataset_dir, spec, "test", cfg.labels_of(cfg.tasks))
    scores = {"valid": audit.split_scores(dmp, valid, bs), "test": audit.split_scores(dmp, test, bs)}
    labels = {"valid": valid.labels, "test": test.labels}
    valid_auc, test_auc = (audit.aucs(scores[s], labels[s]) for s in ("valid", "test"))
    # per-row losses of every task: this stage's task becomes a reference for the later stages, the
    # higher ones are compared with theirs (on test: reported only, no decision reads the test split)
    rows = {s: paired.row_losses(scores[s], labels[s], task_loss_names(cfg)) for s in scores}
    for split in rows:
        files[paired.rows_file(split)] = paired.dump_rows({**frozen_rows.get(split, {}), task: rows[split][:, stage]})
        own = np.broadcast_to(scores[split], labels[split].shape)[:, stage]  # a shared score serves every task
        files[paired.scores_file(split)] = paired.dump_rows({**frozen_scores.get(split, {}), task: own})
    frozen_optima = {**(prev.frozen_optima if prev else {}), task: train_loss[stage]}
    frozen_valid_all = {**(prev.frozen_valid if prev else {}), task: valid_loss[stage]}
    frozen_valid_auc = {**(prev.frozen_valid_auc if prev else {}), task: valid_auc[stage]}
    frozen_test_auc = {**((prev.frozen_test_auc or {}) if prev else {}), task: test_auc[stage]}
    lambdas = {cfg.tasks[j]: v for j, v in objective.state().get("lambda", {}).items()}
    allowance = {t: cfg.tolerance_of(t) for t in higher}  # r_j's absolute part: the paired audits' allowance
    if cfg.nmt.constraint_data == "paired":
        checks = paired.paired_audit(higher, rows["valid"], frozen_rows.get("valid", {}), valid_auc,
                                    frozen_valid_auc, cfg.nmt.z, lambdas, allowance, scores["valid"],
                                    labels["valid"], frozen_scores.get("valid"), task_loss_names(cfg), ranked)
    else:
        checks = audit.constraint_audit(cfg.tasks, stage, valid_loss, valid_auc, frozen_valid_all,
                                        frozen_valid_auc, lambdas, vtol)
    test_audit = paired.paired_audit(higher, rows["test"], frozen_rows.get("test", {}), test_auc, frozen_test_auc,
                                    cfg.nmt.z, lambdas, allowance, scores["test"], labels["test"],
                                    frozen_scores.get("test"), task_loss_names(cfg), ranked)
    summary = StageSummary(
        task=task, method=meta.method, frozen_optima=frozen_optima, lambda_final=lambdas,
        tolerance=tol, constraint_audit=checks,
        train_loss=dict(zip(cfg.tasks, train_loss)), valid_loss=dict(zip(cfg.tasks, valid_loss)),
        valid_auc=dict(zip(cfg.tasks, valid_auc)), epochs=history["epochs"], history=history_file(stage),
        test_audit=test_audit or None, fallback=fell_back,
    )
    audit.enforce(checks, label, cfg.nmt.fail_on_breach)
    earlier, carried = _carry_histories(prev, previous_dir)
    files.update(carried)
    files[history_file(stage)] = dump_history(history)
    meta = meta.updated(frozen_optima=frozen_optima, frozen_valid=frozen_valid_all, frozen_valid_auc=frozen_valid_auc,
                        frozen_test_auc=frozen_test_auc, stages=earlier + [summary])
    checkpoint.save(out_dir, dmp, meta, plan=plan, files=files)
    if resumer is not None:
        resumer.cleanup()
    return meta


def _carry_histories(prev: StageManifest | None, previous_dir: str | None) -> tuple[list[StageSummary], dict]:
    """The earlier stages' summaries and their per-step histories {artifact path: JSON}: every stage
    artifact carries the histories of all stages so far (the report plots them from the last one).
    A version-1 previous manifest's inline histories move to files here."""
    summaries, files = [], {}
    for j, s in enumerate(prev.stages if prev else []):
        hist = read_history(previous_dir, s)
        if hist is not None:
            files[history_file(j)] = dump_history(hist)
        summaries.append(replace(s, history=history_file(j) if hist is not None else None, inline_history=None))
    return summaries, files
