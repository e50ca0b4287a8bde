"""The previous stage's model as the teacher of the higher tasks (`nmt.anchor: distill`).

An unsharded, frozen copy of stage k-1's model scores each training batch; the stage's objective weighs
the divergence of the current model's higher-task predictions from it (components/train/objectives/
nmt.py). Each process holds the whole copy (its tables too): cheap for the models nmtrec trains on one
machine; a sharded teacher would be the next step for tables that do not fit one device.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from nmtrec.components.train.checkpoint import load_unsharded
from nmtrec.models.registry import build_model


class Teacher:
    def __init__(self, previous_dir: str | Path, model_cfg, spec, num_higher: int, device: torch.device):
        model = build_model(model_cfg, spec, num_higher, device="cpu")
        load_unsharded(previous_dir, model, check=False)  # the stage verified the checkpoint already
        self.model = model.eval().requires_grad_(False).to(device)
        self.num_higher = num_higher

    @torch.no_grad()
    def probabilities(self, kjt) -> torch.Tensor:
        return torch.sigmoid(self.model(kjt).float())

    def divergence(self, logits: torch.Tensor, kjt) -> torch.Tensor:
        """[num_higher] mean Bernoulli KL(teacher || current) of each higher task over the batch (zero
        where the predictions agree). A shared score ([B, 1]) serves every task."""
        n, rows = self.num_higher, logits.shape[0]
        p = self.probabilities(kjt).expand(rows, n)
        current = logits.expand(rows, max(n, logits.shape[1]))[:, :n]
        entropy = F.binary_cross_entropy(p, p, reduction="none").mean(0)
        return F.binary_cross_entropy_with_logits(current, p, reduction="none").mean(0) - entropy
