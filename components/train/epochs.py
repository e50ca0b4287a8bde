"""The training loop of one stage: epochs until validation stops improving (or a maximum).

Validation-based stopping means no epoch count needs tuning; the best parameters seen (by the stage
task's validation loss) are kept in a checkpoint and restored at the end.
"""
from __future__ import annotations

import itertools
import logging
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from nmtrec.components.train import checkpoint
from nmtrec.components.train.data import SHUFFLE_ROWS, ParquetSplit, batches, eval_batches, local_batch_size, num_batches
from nmtrec.components.train.distributed import current_device
from nmtrec.components.train.pipelined import PipelinedSteps, PlainSteps, use_sparse_dist_pipeline

log = logging.getLogger("nmtrec.train")


class NonFiniteLoss(RuntimeError):
    pass


def task_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy per task: [num_tasks]."""
    return F.binary_cross_entropy_with_logits(logits.expand_as(labels), labels, reduction="none").mean(0)


@torch.no_grad()
def mean_losses(model, split: ParquetSplit, batch_size: int, loss_fn=None) -> torch.Tensor:
    """Mean loss per task over a whole split (all ranks together, streamed), float64: exact per-row for
    BCE (`task_losses`, the default); for a batch-level loss (pairwise) the row-weighted mean of its
    batch values."""
    model.eval()
    rank, world, device = dist.get_rank(), dist.get_world_size(), current_device()
    total = torch.zeros(len(split.label_columns) + 1, dtype=torch.float64, device=device)
    for kjt, labels, mask in eval_batches(split, batch_size, rank, world):
        kjt, labels, mask = kjt.to(device), labels.to(device), mask.to(device)
        logits = model(kjt).expand_as(labels)
        if loss_fn in (None, task_losses):
            per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            total[:-1] += (per_row * mask[:, None]).sum(0).double()
        else:
            keep = mask > 0
            total[:-1] += loss_fn(logits[keep], labels[keep]).double() * keep.sum()
        total[-1] += mask.sum().double()
    dist.all_reduce(total)
    model.train()
    return (total[:-1] / total[-1]).cpu()


def objective_loss(model, objective, kjt, labels, where: str, loss_fn=task_losses, warmup=None, teacher=None):
    """(the loss a step minimises, the task losses) of one batch. During a warm-up (components/train/
    warmup.py) only the stage task's own loss counts. `teacher` (components/train/teacher.py): the
    previous stage's model, for objectives that weigh the higher tasks' divergence from it."""
    logits = model(kjt)
    losses = loss_fn(logits, labels)
    if warmup is not None:
        loss = warmup.loss(losses)
    elif teacher is not None and objective.weighs_teacher():
        loss = objective.loss(losses, divergence=teacher.divergence(logits, kjt))
    else:
        loss = objective.loss(losses)
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"{where}: loss is {loss.item()} (task losses {[float(x) for x in losses.detach()]})")
    return loss, losses


def train_step(model, dense_opt, objective, kjt, labels, where: str = "", loss_fn=task_losses,
               warmup=None) -> torch.Tensor:
    """One optimiser step (the embeddings update inside backward, fused); returns the task losses.
    During a warm-up only the stage task's own parameters move."""
    loss, losses = objective_loss(model, objective, kjt, labels, where, loss_fn, warmup)
    dense_opt.zero_grad(set_to_none=True)
    loss.backward()
    if warmup is not None:
        warmup.zero_shared_grads(model)
    dense_opt.step()
    return losses


def global_losses(losses: torch.Tensor) -> torch.Tensor:
    """Batch losses averaged over ranks: objectives update their state (multipliers) from these, so
    every rank keeps the same state."""
    out = losses.detach().clone()
    if dist.get_world_size() > 1:
        dist.all_reduce(out)
        out /= dist.get_world_size()
    return out


class EarlyStopping:
    """Keeps the epoch with the best validation score; stops after more than `patience` epochs in a row
    with neither a new best score nor a new best progress score. The two differ for NMT stages
    (objectives/nmt.py): training goes on while the stage task still improves, even through epochs whose
    constraints are broken, and while it gets closer to feasible."""

    def __init__(self, patience: int, best: float = math.inf, best_progress: float = math.inf, bad: int = 0):
        self.patience, self.best, self.best_progress, self.bad = patience, best, best_progress, bad

    def update(self, score: float, progress: float) -> tuple[bool, bool]:
        """(keep this epoch, stop after it)."""
        keep = score < self.best - 1e-6
        if keep:
            self.best = score
        progressed = progress < self.best_progress - 1e-6
        if progressed:
            self.best_progress = progress
        self.bad = 0 if keep or progressed else self.bad + 1
        return keep, self.bad > self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_progress": self.best_progress, "bad": self.bad}


class HeldOutStream:
    """One validation batch's losses per training step, for objectives whose state follows held-out
    data (NMT's multipliers). Step s reads batch s of an endless stream of reshuffled passes, so a
    resumed stage sees the same batches; a validation split smaller than a batch is one batch."""

    def __init__(self, split: ParquetSplit, batch_size: int, seed: int, loss_fn, shuffle_rows: int = SHUFFLE_ROWS):
        world = dist.get_world_size()
        self.batch_size = min(batch_size, split.rows // world * world)
        if self.batch_size == 0:
            raise ValueError(f"validation split has {split.rows} rows: fewer than the {world} processes")
        self.split, self.seed, self.loss_fn, self.shuffle_rows = split, seed, loss_fn, shuffle_rows
        self.per_pass = num_batches(split, self.batch_size)
        self._stream, self._next = None, None  # the open pass and the step it yields next

    @torch.no_grad()
    def losses(self, model, step: int) -> torch.Tensor:
        passes, pos = divmod(step, self.per_pass)
        if self._next != step or pos == 0:  # a new pass or a jump (resume): shuffle once per pass, not per step
            if self._stream is not None:
                self._stream.close()
            self._stream = batches(self.split, self.batch_size, dist.get_rank(), dist.get_world_size(),
                                   shuffle_seed=self.seed * 1000 + passes, start=pos, window_rows=self.shuffle_rows)
        kjt, labels = next(self._stream)
        self._next = step + 1
        device = current_device()
        model.eval()
        out = self.loss_fn(model(kjt.to(device)), labels.to(device))
        model.train()
        return global_losses(out)


def fit_epochs(model, dense_opt, objective, train: ParquetSplit, valid: ParquetSplit, *, stage_task: int,
               batch_size: int, max_epochs: int, patience: int, seed: int, best_dir, meta, label: str = "",
               resumer=None, loss_fn=task_losses, paired=None, checks_per_epoch: int = 1,
               warmup=None, shuffle_rows: int = SHUFFLE_ROWS, teacher=None) -> dict:
    """With a `resumer` (components/train/resume.py) the loop checkpoints every N steps and a restart
    continues from the last checkpoint instead of from the start. `loss_fn` gives the per-task batch
    losses (components/train/losses.py). `meta`: the stage's StageManifest, saved with the best epoch.
    `paired` (components/train/paired.PairedCheck): for objectives with paired checks, measured
    `checks_per_epoch` times an epoch (the last right before the epoch's validation score).
    `warmup` (components/train/warmup.Warmup): its epochs train only the stage task's own parameters.
    `shuffle_rows`: the training stream's shuffle window (components/train/data.py).
    `teacher` (components/train/teacher.py): for objectives with `needs_teacher`.
    On CUDA the steps run through TorchRec's TrainPipelineSparseDist when the objective allows it
    (components/train/pipelined.py)."""
    rank, world, device = dist.get_rank(), dist.get_world_size(), current_device()
    steps_per_epoch = num_batches(train, batch_size, world)
    if steps_per_epoch == 0:
        raise ValueError(f"training split has {train.rows} rows: fewer than train.batch_size ({batch_size}); "
                         f"lower train.batch_size")
    local_batch_size(batch_size, world)
    history = {"step": [], "loss": [], "lambda": [], "valid": []}
    held_out = (HeldOutStream(valid, batch_size, seed, loss_fn, shuffle_rows)
                if objective.needs_held_out_losses else None)
    if getattr(objective, "needs_teacher", False) and teacher is None:
        raise ValueError(f"{label}: the objective weighs a teacher's predictions but none was given")
    pipelined = use_sparse_dist_pipeline(device, objective, held_out)
    steps = (PipelinedSteps if pipelined else PlainSteps)(model, dense_opt, device)
    stopping, step, first_epoch, skip = EarlyStopping(patience), 0, 0, 0
    if resumer is not None and (progress := resumer.load(model, dense_opt, objective)) is not None:
        history, step = progress["history"], progress["step"]
        stopping = EarlyStopping(patience, progress["best"], progress.get("best_progress", progress["best"]),
                                 progress["bad"])
        first_epoch, skip = progress["epoch"], progress["pos"]
    check_every = max(1, steps_per_epoch // max(1, checks_per_epoch))

    def check(step: int, multipliers: bool = True) -> None:
        checks = paired.measure(model)
        objective.after_check(checks, multipliers)
        history.setdefault("paired", []).append(
            {"step": step, "mean": {j: c.mean for j, c in checks.items()}, "se": {j: c.se for j, c in checks.items()},
             "lambda": objective.state().get("lambda", {})})

    checking = paired is not None and objective.needs_paired_checks
    for epoch in range(first_epoch, max_epochs):
        model.train()
        warming = warmup is not None and warmup.covers(epoch)
        if warmup is not None:
            warmup.freeze_shared(warming)
        pos = skip if epoch == first_epoch else 0  # batches of this epoch done
        began, timed_steps = time.perf_counter(), steps_per_epoch - pos
        stream = batches(train, batch_size, rank, world, shuffle_seed=seed * 1000 + epoch, start=pos,
                         window_rows=shuffle_rows)
        bar = tqdm(total=steps_per_epoch, initial=pos, desc=f"{label} epoch {epoch + 1}", disable=rank != 0,
                   leave=False)
        while pos < steps_per_epoch:
            # the steps up to the next event (a paired check, a resume checkpoint, the epoch's end) run as
            # one run: the pipeline keeps batches in flight only within a run
            until = steps_per_epoch
            if checking and not warming:
                until = min(until, (pos // check_every + 1) * check_every)
            if resumer is not None and resumer.every > 0:
                until = min(until, pos + resumer.every - step % resumer.every)
            first_step = step

            def loss_of(kjt, labels, k):
                return objective_loss(model, objective, kjt, labels,
                                      f"{label}: at epoch {epoch + 1}, step {first_step + k + 1}", loss_fn,
                                      warmup if warming else None, teacher)

            for losses, kjt, labels in steps.run(itertools.islice(stream, until - pos), loss_of,
                                                 warmup if warming else None):
                shared = global_losses(losses)
                post = None
                if objective.needs_post_step_losses:  # e.g. FAMO: the loss decrease this step achieved
                    with torch.no_grad():
                        post = global_losses(loss_fn(model(kjt), labels))
                checked = held_out.losses(model, step) if held_out else None
                if not warming:  # the higher tasks cannot move during a warm-up: nothing to follow
                    objective.after_step(shared, post, checked)
                step += 1
                pos += 1
                bar.update(1)
                history["step"].append(step)
                history["loss"].append([float(x) for x in shared])
                history["lambda"].append(objective.state().get("lambda", {}))
                if checked is not None:
                    history.setdefault("held_out", []).append([float(x) for x in checked])
            if checking and not warming and pos % check_every == 0 and pos + check_every <= steps_per_epoch:
                check(step)
                history["lambda"][-1] = objective.state().get("lambda", {})  # the step's λ after its check
            if resumer is not None and resumer.due(step):
                resumer.save(model, dense_opt, objective, {"epoch": epoch, "pos": pos, "step": step,
                                                            "history": history, **stopping.state()})
        stream.close()
        bar.close()
        seconds = time.perf_counter() - began
        if warmup is not None:
            warmup.freeze_shared(False)
        if checking:  # the epoch's last check: the early-stopping score reads it (a warm-up moves no λ)
            check(step, multipliers=not warming)
        val = mean_losses(model, valid, batch_size, loss_fn)
        # seconds: this process's time for the epoch's steps and the checks and resume checkpoints between
        # them (since the resume, for a resumed epoch)
        history["valid"].append({"epoch": epoch + 1, "step": step, "loss": [float(x) for x in val],
                                 "seconds": round(seconds, 3), "steps_timed": timed_steps})
        score = objective.valid_score(val)  # the stage task's loss, made lexicographic by constraints
        if rank == 0:
            log.info("%s epoch %d: valid loss %s (score %.5f; %d steps in %.1f s)", label, epoch + 1,
                     [round(float(x), 5) for x in val], score, timed_steps, seconds)
        keep, stop = stopping.update(score, objective.progress_score(val))
        if keep:
            checkpoint.save(best_dir, model, meta.updated(epoch=epoch + 1, step=step), unsharded=False)
        if stop:
            break
    checkpoint.load_into(best_dir, model)
    history["best_valid_loss"] = stopping.best
    history["epochs"] = epoch + 1
    return history
