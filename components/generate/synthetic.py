"""Synthetic Tenrec `ctr_data_1M`-schema CSV with planted multi-task structure.

Users and items carry two sets of latent factors: click's and like's (correlated by `conflict`). A row's
like probability is its own function of the like factors, capped by its click probability (likes only on
clicks), so click's labels say little about like: a model shared by both tasks must spend its capacity
(the embedding tables above all) on both, and with equal weights click's 12x more positives win it.
Joint training then measurably costs the higher-priority task (like). The true
probabilities of every row go into the CSV as `true_<label>` columns (option `with_truth`), which
preprocessing carries into the Parquet splits, so evaluation can report an oracle AUC.
Rows are drawn and written in chunks of `chunk_rows`, so memory stays flat at any row count.

The file is the same bytes on every machine: the true probabilities are written at TRUTH_DIGITS
significant digits. At full precision their last digits depend on the CPU (numpy's exp takes another
SIMD path with AVX-512 than with AVX2: 41,120 of the demo's 301,556 rows differed in those columns,
no id or label did).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from nmtrec.components.common.files import atomic_file

COLUMNS = ["user_id", "item_id", "click", "follow", "like", "share", "video_category",
           "watching_times", "gender", "age"] + [f"hist_{i}" for i in range(1, 11)]
LABELS = ["click", "like", "follow", "share"]
TRUTH_COLUMNS = [f"true_{label}" for label in LABELS]
# Significant digits of the written true_* probabilities. Significant digits, not fixed decimals: the
# probabilities span 1e-12..1 (like and follow go far below 1e-6), and fixed decimals would flatten
# the small ones into ties. 6 digits: a relative error of at most 5e-6, below the gap between almost
# any two user-item pairs, so the oracle AUC keeps its meaning (demo data, all 301,556 rows: every
# task's oracle AUC moved by < 1e-7 against full precision); a few ulp of CPU-dependent noise moves
# the printed value only when it straddles a rounding boundary (~1 in 10^9 values).
TRUTH_DIGITS = 6


@dataclass(frozen=True)
class SyntheticSpec:
    rows: int = 50_000
    users: int = 2_000
    items: int = 3_000
    latent_dim: int = 8
    seed: int = 0
    click_rate: float = 0.24  # share of rows (Tenrec ctr_data: 24%)
    like_rate: float = 0.019  # share of rows, only on clicks (Tenrec: 1.9%)
    # correlation of the like factors with the click factors (users' and items'). 0 = unrelated: like
    # needs room of its own in a shared representation that click's larger signal crowds out
    conflict: float = 0.0
    like_scale: float = 1.5  # spread of the like logit: how predictable like is from its factors
    popularity: float = 1.0  # Zipf exponent of item popularity (share of rows of the item of rank r ~ r^-popularity)
    null_category: float = 0.01  # share of `\N` in video_category
    duplicates: float = 0.005  # share of rows repeated verbatim
    with_truth: bool = True  # write true_<label> probability columns
    chunk_rows: int = 200_000


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _World:
    """Latent factors of users and items, drawn once from the seed."""

    def __init__(self, s: SyntheticSpec):
        rng = np.random.default_rng([s.seed, 1])
        d = s.latent_dim
        def factors(n):
            click = rng.normal(size=(n, d)) / np.sqrt(d) * 2.0
            other = rng.normal(size=(n, d)) / np.sqrt(d) * 2.0
            return click, s.conflict * click + np.sqrt(1 - s.conflict**2) * other

        self.user, self.user_like = factors(s.users)
        self.item_click, self.item_like = factors(s.items)
        self.like_scale = s.like_scale
        self.item_bias = rng.normal(scale=0.5, size=s.items)
        # a long tail, not a handful of items: rng.zipf(1.6) gave its top 10 items 85-97% of all rows
        self.item_pop = rng.permutation(np.arange(1, s.items + 1) ** -s.popularity)
        self.item_pop /= self.item_pop.sum()
        self.category = (self.item_like[:, 0] > 0).astype(np.int64)
        self.gender = rng.integers(0, 3, size=s.users)
        self.age = np.clip((self.user[:, 1] * 2 + 3.5).round(), 0, 7).astype(np.int64)
        hist = rng.choice(s.items, size=(s.users, 10), p=self.item_pop) + 1
        pad = rng.integers(0, 11, size=s.users)  # number of padded (0) slots per user
        hist[np.arange(10)[None, :] >= (10 - pad)[:, None]] = 0
        self.hist = hist
        self.click_bias, self.like_bias = self._calibrate(s, rng)

    def logits(self, users, items):
        click = (self.user[users] * self.item_click[items]).sum(1) + self.item_bias[items]
        like = (self.user_like[users] * self.item_like[items]).sum(1) * self.like_scale
        return click, like

    def probabilities(self, click, like):
        """(P(click), P(like)) from the logits: like has its own factors, capped by P(click)."""
        p_click = _sigmoid(click + self.click_bias)
        return p_click, np.minimum(_sigmoid(like + self.like_bias), p_click)

    def _calibrate(self, s, rng):
        """Choose the two biases so the label rates match the spec (bisection on a sample)."""
        u = rng.integers(0, s.users, 100_000)
        i = rng.choice(s.items, 100_000, p=self.item_pop)
        click, like = self.logits(u, i)

        def solve(f, target):
            lo, hi = -20.0, 20.0
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
            return (lo + hi) / 2

        cb = solve(lambda b: _sigmoid(click + b).mean(), s.click_rate)
        pc = _sigmoid(click + cb)
        lb = solve(lambda b: np.minimum(_sigmoid(like + b), pc).mean(), s.like_rate)
        return cb, lb


def generate(spec: SyntheticSpec, out_csv: str | Path) -> int:
    """Write `spec.rows` rows (plus planted duplicates) to out_csv; return the number written.

    Writes to a temporary name and renames at the end, so a crash never leaves a file that looks complete.
    """
    out_csv = Path(out_csv)
    world = _World(spec)
    rng = np.random.default_rng([spec.seed, 2])
    columns = COLUMNS + (TRUTH_COLUMNS if spec.with_truth else [])
    written = 0
    with atomic_file(out_csv) as tmp_csv:
        with open(tmp_csv, "wb") as sink, tqdm(total=spec.rows, unit="row", desc="generate") as bar:
            sink.write((",".join(columns) + "\n").encode())
            remaining = spec.rows
            while remaining > 0:
                n = min(spec.chunk_rows, remaining)
                remaining -= n
                table = _chunk(world, spec, rng, n).select(columns)
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
                written += table.num_rows
                bar.update(n)
    return written


def _chunk(world: _World, s: SyntheticSpec, rng, n: int):
    users = rng.integers(0, s.users, n)
    items = rng.choice(s.items, n, p=world.item_pop)
    click_logit, like_logit = world.logits(users, items)
    p_click, p_like = world.probabilities(click_logit, like_logit)
    p_like_given_click = p_like / p_click
    p_follow_given_click = _sigmoid(like_logit + world.like_bias - 2.5)
    p_share_given_click = _sigmoid(0.5 * like_logit + world.like_bias - 2.0)
    click = rng.random(n) < p_click
    like = click & (rng.random(n) < p_like_given_click)
    follow = click & (rng.random(n) < p_follow_given_click)
    share = click & (rng.random(n) < p_share_given_click)
    watching = np.where(click, rng.poisson(1.0, n) + 1, 0)
    category = world.category[items].astype(str).astype(object)
    category[rng.random(n) < s.null_category] = "\\N"
    # duplicates: repeat a few rows verbatim (the real file has ~0.7% exact duplicates)
    idx = np.arange(n)
    dup = idx[rng.random(n) < s.duplicates]
    idx = np.sort(np.concatenate([idx, dup]))
    cols = {
        "user_id": users + 1, "item_id": items + 1, "click": click.astype(np.int64),
        "follow": follow.astype(np.int64), "like": like.astype(np.int64), "share": share.astype(np.int64),
        "video_category": category, "watching_times": watching, "gender": world.gender[users],
        "age": world.age[users],
    }
    hist = world.hist[users]
    for k in range(10):
        cols[f"hist_{k + 1}"] = hist[:, k]
    truth = {"true_click": p_click, "true_like": p_like, "true_follow": p_click * p_follow_given_click,
             "true_share": p_click * p_share_given_click}
    table = {c: pa.array(v[idx]) for c, v in cols.items()}
    for c, p in truth.items():  # printed by C's correctly rounded %g: the same text on every CPU
        table[c] = pa.array([f"{x:.{TRUTH_DIGITS}g}" for x in p[idx].tolist()], pa.string())
    return pa.table(table)
