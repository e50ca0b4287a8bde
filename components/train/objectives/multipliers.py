"""Lagrange-multiplier updates of an NMT stage: lambda_j <- max(0, lambda_j + step(g_j)).

`gradient` is the paper's projected ascent lambda += tau * g with g the (smoothed) constraint value;
tau must be searched (the paper grid-searched it). `pi` is the default and needs no search: the
nuPI controller of cooper-optim (a maintained Lagrangian library) driven by the *relative*
violation g_j / f_j*, which makes the error signal scale-free (a 1% excess is a 1% excess whatever
the task's loss level), while the proportional term damps the overshoot/oscillation of plain ascent.
"""
from __future__ import annotations

import torch
from cooper.optim import nuPI


class GradientAscent:
    def __init__(self, lam: torch.Tensor, tau: float):
        self.lam, self.tau = lam, tau

    def step(self, violation: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        self.lam = torch.clamp(self.lam + self.tau * violation, min=0.0)
        return self.lam


class PIAscent:
    """nuPI on the relative violation; fixed gains, not tuned per data set (see module docstring)."""

    def __init__(self, lam: torch.Tensor, lr: float = 1.0, kp: float = 4.0, ki: float = 1.0):
        self.param = torch.nn.Parameter(lam.clone())
        self.opt = nuPI([self.param], lr=lr, Kp=torch.tensor(kp, dtype=lam.dtype),
                        Ki=torch.tensor(ki, dtype=lam.dtype), maximize=True)

    @property
    def lam(self) -> torch.Tensor:
        return self.param.detach().clone()

    def step(self, violation: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        self.param.grad = (violation / frozen.abs().clamp_min(1e-8)).to(self.param)
        self.opt.step()
        with torch.no_grad():
            self.param.clamp_(min=0.0)
        return self.lam


def make_update(kind: str, lam: torch.Tensor, tau: float):
    if kind == "gradient":
        return GradientAscent(lam, tau)
    if kind == "pi":
        return PIAscent(lam)
    raise ValueError(f"nmt.multiplier: unknown update {kind!r} (expected 'pi' or 'gradient')")
