"""Lagrange-multiplier updates of an NMT stage: lambda_j <- max(0, lambda_j + step(g_j)).

`gradient` is the paper's projected ascent lambda += tau * g with g the (smoothed) constraint value;
tau must be searched (the paper grid-searched it). `pi` is the default and needs no search: the
nuPI controller of cooper-optim (a maintained Lagrangian library) driven by the *relative*
violation g_j / f_j*, so the error signal is scale-free (a 1% excess is a 1% excess whatever the
task's loss level), with its step set per epoch rather than per batch: a relative violation e held
for a whole epoch moves lambda by about RATE * e, whatever the number of batches in an epoch -- the
same time scale on which the stage's early stopping judges it. Faster multipliers (the earlier
default, lr 1 per batch) swing lambda between 0 and 10+ within a few epochs on the demo data: while it
is large the new task barely learns, while it is 0 the higher task drifts (`nmtrec bench nmt`).
"""
from __future__ import annotations

import torch
from cooper.optim import nuPI

RATE = 2.0  # lambda change per epoch per unit of sustained relative violation
KP = 1.0  # proportional (damping) gain relative to the integral gain


class GradientAscent:
    def __init__(self, lam: torch.Tensor, tau: float):
        self.lam, self.tau = lam, tau

    def step(self, violation: torch.Tensor, frozen: torch.Tensor) -> torch.Tensor:
        self.lam = torch.clamp(self.lam + self.tau * violation, min=0.0)
        return self.lam


class PIAscent:
    """nuPI on the relative violation; fixed gains, not tuned per data set (see module docstring)."""

    def __init__(self, lam: torch.Tensor, lr: float, kp: float = KP, ki: float = 1.0):
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


# paired constraints: lambda change per epoch per unit of sustained standardized loss change t, and the
# largest excess one check may feed in (a t of 50 on a big validation split is no reason to jump)
STANDARDIZED_RATE = 1.0
STANDARDIZED_CLIP = 4.0


def make_standardized_update(lam: torch.Tensor, checks_per_epoch: int) -> PIAscent:
    """nuPI on a standardized excess (already scale-free: `frozen` is 1), stepped once per check."""
    return PIAscent(lam, lr=STANDARDIZED_RATE / max(1, checks_per_epoch))


def make_update(kind: str, lam: torch.Tensor, tau: float, steps_per_epoch: int = 1):
    if kind == "gradient":
        return GradientAscent(lam, tau)
    if kind == "pi":
        return PIAscent(lam, lr=RATE / max(1, steps_per_epoch))
    raise ValueError(f"nmt.multiplier: unknown update {kind!r} (expected 'pi' or 'gradient')")
