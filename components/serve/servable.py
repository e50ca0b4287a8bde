"""The servable model in plain torch: raw ids in, one probability per task out.

A trained model's TorchRec EmbeddingBagCollection becomes one `Table` per embedding table: the
vocabulary as sorted raw ids (torch.searchsorted finds a raw id's row; a miss is the out-of-vocabulary
row, a null the null row, exactly as preprocessing encodes) and the rows themselves, fp32 or row-wise
int8 dequantized on lookup. The dense part is the trained architecture's `forward_dense`. Nothing here
calls TorchRec or fbgemm, so the exported program loads with torch alone.

Input: `ids` [B, C] int64 raw ids and `present` [B, C] bool (False: the field was null), columns in
the export manifest's `inputs.columns` order. A bag's 0 is padding, as in preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nmtrec.components.serve.quantize import dequantize_rows, quantize_rowwise


class Table(nn.Module):
    """One embedding table with its vocabulary: raw id -> row -> embedding."""

    def __init__(self, vocab: np.ndarray, weight: torch.Tensor, *, first_row: int, null_row: int, oov_row: int,
                 int8: bool = False):
        super().__init__()
        vocab = np.asarray(vocab, dtype=np.int64)
        order = np.argsort(vocab, kind="stable")
        if len(vocab) == 0:  # every id is out of vocabulary: one entry that maps to the OOV row
            sorted_ids, rows = np.zeros(1, np.int64), np.full(1, oov_row, np.int64)
        else:
            sorted_ids, rows = vocab[order], order + first_row
        self.register_buffer("sorted_ids", torch.from_numpy(sorted_ids.copy()))
        self.register_buffer("rows_of_sorted", torch.from_numpy(rows.astype(np.int64)))
        self.null_row, self.oov_row, self.int8 = null_row, oov_row, int8
        if int8:
            codes, scale, bias = quantize_rowwise(weight)
            self.register_buffer("codes", codes)
            self.register_buffer("scale", scale)
            self.register_buffer("bias", bias)
        else:
            self.register_buffer("weight", weight.detach().to(torch.float32).clone())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple((self.codes if self.int8 else self.weight).shape)

    def rows(self, raw: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Row of each raw id (any shape): its vocabulary row, the OOV row if unknown, the null row if absent."""
        at = torch.searchsorted(self.sorted_ids, raw.contiguous()).clamp(max=self.sorted_ids.shape[0] - 1)
        hit = self.sorted_ids[at] == raw
        row = torch.where(hit, self.rows_of_sorted[at], torch.full_like(raw, self.oov_row))
        return torch.where(present, row, torch.full_like(raw, self.null_row))

    def embed(self, rows: torch.Tensor) -> torch.Tensor:
        if self.int8:
            return dequantize_rows(self.codes[rows], self.scale[rows], self.bias[rows])
        return self.weight[rows]


@dataclass(frozen=True)
class FeatureInput:
    """A feature's table and its columns in the input matrix [first, first + width); a bag is mean-pooled
    over its present, non-zero ids (TorchRec's MEAN pooling of the ids preprocessing kept)."""
    name: str
    table: str
    first: int
    width: int
    bag: bool


class Servable(nn.Module):
    def __init__(self, tables: dict[str, Table], features: list[FeatureInput], dense: nn.Module, tasks: list[str]):
        super().__init__()
        self.tables = nn.ModuleDict(tables)
        self.features = list(features)
        self.dense = dense  # pooled embeddings [B, sum of dims] -> logits [B, len(tasks)]
        self.tasks = list(tasks)

    def forward(self, ids: torch.Tensor, present: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = []
        for f in self.features:
            table = self.tables[f.table]
            raw, mask = ids[:, f.first:f.first + f.width], present[:, f.first:f.first + f.width]
            if not f.bag:  # one id: the pooled embedding is its row
                pooled.append(table.embed(table.rows(raw[:, 0], mask[:, 0])))
                continue
            mask = mask & (raw != 0)  # bag padding
            emb = table.embed(table.rows(raw, mask)) * mask.unsqueeze(-1)
            count = mask.sum(dim=1, keepdim=True).clamp(min=1)  # an empty bag pools to zeros
            pooled.append(emb.sum(dim=1) / count)
        probs = torch.sigmoid(self.dense(torch.cat(pooled, dim=1)))
        return {task: probs[:, i] for i, task in enumerate(self.tasks)}
