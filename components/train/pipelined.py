"""The optimiser steps of an epoch: TorchRec's TrainPipelineSparseDist on CUDA, the plain loop elsewhere.

TrainPipelineSparseDist keeps two batches in flight: while batch i runs forward and backward, batch
i+1's ids are already in their all-to-all to the ranks that hold their embedding shards (input_dist)
and batch i+2 is being copied to the GPU, on CUDA streams of their own. It calls the model's forward
for batch i, backward, then the optimizer, in that order, so a step computes exactly what the plain
loop's step computes (tested on the CPU, where the same class runs without streams).

It only runs whole runs of steps with nothing else in between, so the loop hands it the steps between
two events (a paired check, a resume checkpoint, the epoch's end; components/train/epochs.py); it is
drained and detached before each event, which runs on the plain model. Objectives that look at other
data inside a step (FAMO's post-step losses, held-out batches) keep the plain loop.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch.fx._symbolic_trace import PHWithMeta
from torchrec import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


@dataclass
class TrainBatch(Pipelineable):
    """A batch the pipeline can move between devices and streams; `features` feeds the sharded EBC."""
    features: KeyedJaggedTensor
    labels: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "TrainBatch":
        return TrainBatch(self.features.to(device, non_blocking=non_blocking),
                          self.labels.to(device, non_blocking=non_blocking))

    def record_stream(self, stream) -> None:
        self.features.record_stream(stream)
        self.labels.record_stream(stream)

    def pin_memory(self) -> "TrainBatch":
        return TrainBatch(self.features.pin_memory(), self.labels.pin_memory())

    def to_proxy_tuple(self, model: torch.nn.Module) -> dict:
        """How the pipeline's fx trace finds the sharded module's input: the model's first argument
        is this batch's `features`."""
        first = next(iter(inspect.signature(model.forward).parameters))
        return {first: PHWithMeta(ph_key="features")}


def use_sparse_dist_pipeline(device: torch.device, objective, held_out) -> bool:
    """CUDA, and an objective that needs nothing but the batch inside a step."""
    return device.type == "cuda" and not objective.needs_post_step_losses and held_out is None


# loss_of(kjt, labels, k) -> (the loss to minimise, the task losses) of the run's k-th step
LossOf = Callable[[KeyedJaggedTensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


class PlainSteps:
    """One step after another; yields (task losses, kjt, labels) after each step (on the device)."""

    def __init__(self, model, dense_opt, device: torch.device):
        self.model, self.dense_opt, self.device = model, dense_opt, device

    def run(self, batches: Iterable, loss_of: LossOf, warmup=None) -> Iterator:
        for k, (kjt, labels) in enumerate(batches):
            kjt, labels = kjt.to(self.device), labels.to(self.device)
            loss, losses = loss_of(kjt, labels, k)
            self.dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            if warmup is not None:
                warmup.zero_shared_grads(self.model)
            self.dense_opt.step()
            yield losses, kjt, labels


class _DenseStep:
    """The optimizer the pipeline calls: the dense step (the embeddings update inside backward), with
    a warm-up's zeroed shared gradients."""

    def __init__(self, model, dense_opt):
        self.model, self.dense_opt, self.warmup = model, dense_opt, None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense_opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.warmup is not None:
            self.warmup.zero_shared_grads(self.model)
        self.dense_opt.step()


class PipelinedSteps:
    """TrainPipelineSparseDist over a run of batches; yields (task losses, None, None) after each step."""

    def __init__(self, model, dense_opt, device: torch.device):
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        self.optimizer = _DenseStep(model, dense_opt)
        self.model, self._loss_of, self._k = model, None, 0
        self.pipeline = TrainPipelineSparseDist(model, self.optimizer, device, execute_all_batches=True,
                                                custom_model_fwd=self._forward)

    def _forward(self, batch: TrainBatch):
        loss, losses = self._loss_of(batch.features, batch.labels, self._k)
        self._k += 1
        return loss, losses.detach()

    def run(self, batches: Iterable, loss_of: LossOf, warmup=None) -> Iterator:
        self._loss_of, self._k, self.optimizer.warmup = loss_of, 0, warmup
        stream = (TrainBatch(kjt, labels) for kjt, labels in batches)
        while True:
            try:
                losses = self.pipeline.progress(stream)  # re-attaches the model after a detach
            except StopIteration:
                break
            yield losses, None, None
        # drained: give the model its own forward back for whatever runs until the next run
        self.pipeline.detach()
