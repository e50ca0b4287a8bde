"""Row-wise int8 embedding tables: each row stored as uint8 codes with its own fp32 scale and bias
(the layout of TorchRec's quantized EmbeddingBagCollection / fbgemm's 8-bit rows), dequantized on lookup."""
from __future__ import annotations

import torch


def quantize_rowwise(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, D] float -> (codes uint8 [N, D], scale [N, 1], bias [N, 1]) with row ≈ codes * scale + bias.

    Per row: bias = min, scale = (max - min) / 255; each value rounds to the nearest of the 256 levels,
    so the error is at most scale / 2. A constant row gets scale 0 and comes back exactly."""
    w = weight.detach().to(torch.float32)
    lo = w.min(dim=1, keepdim=True).values
    scale = (w.max(dim=1, keepdim=True).values - lo) / 255.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant row: every code 0
    codes = torch.round((w - lo) / safe).clamp_(0, 255).to(torch.uint8)
    return codes, scale, lo


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The float rows of (codes, scale, bias) as quantize_rowwise returned them (any leading shape)."""
    return codes.to(torch.float32) * scale + bias
