"""Frozen models whose predictions a stage learns from.

- The previous stage's model, teacher of the higher tasks (`nmt.anchor: distill`): the stage's objective
  weighs the divergence of the current model's higher-task predictions from it (components/train/
  objectives/nmt.py).
- A stage's variants, teachers of every task of the model distilled from them (`nmt.distill_variants`,
  components/train/objectives/distilled.py): their predicted probabilities averaged.

Unsharded, frozen copies score each training batch. Each process holds the whole copies (their tables
too): cheap for the models nmtrec trains on one machine; a sharded teacher would be the next step for
tables that do not fit one device.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nmtrec.components.train.checkpoint import load_unsharded
from nmtrec.models.registry import build_model


class Teacher:
    def __init__(self, checkpoints: str | Path | list, model_cfg, spec, num_higher: int, device: torch.device):
        """checkpoints: one artifact directory, or several (their probabilities averaged); num_higher: the
        tasks the teacher speaks for (the first ones of the model being trained)."""
        self.models = []
        for path in checkpoints if isinstance(checkpoints, list) else [checkpoints]:
            model = build_model(model_cfg, spec, num_higher, device="cpu")
            load_unsharded(path, model, check=False)  # the stage verified the checkpoint already
            self.models.append(model.eval().requires_grad_(False).to(device))
        self.num_higher = num_higher

    @torch.no_grad()
    def probabilities(self, kjt) -> torch.Tensor:
        return sum(torch.sigmoid(m(kjt).float()) for m in self.models) / len(self.models)

    def divergence(self, logits: torch.Tensor, kjt) -> torch.Tensor:
        """[num_higher] mean Bernoulli KL(teacher || current) of each higher task over the batch (zero
        where the predictions agree). A shared score ([B, 1]) serves every task."""
        n, rows = self.num_higher, logits.shape[0]
        p = self.probabilities(kjt).expand(rows, n)
        current = logits.expand(rows, max(n, logits.shape[1]))[:, :n]
        entropy = F.binary_cross_entropy(p, p, reduction="none").mean(0)
        return F.binary_cross_entropy_with_logits(current, p, reduction="none").mean(0) - entropy
