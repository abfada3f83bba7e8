"""Where the adaptive p_c search trains next: a pure function of the outcomes so far (no files, no runs).

One group order's search is a sequence of batches. The first batch probes `start` (multiples of the
reference p_ref = c_ref·ln M / M). After each batch, with (p_i, success_i) of every run so far:
  * no success yet: the next batch steps up from the highest ratio by factors e^(δ), e^(2δ), … (capped
    at p = MAX_RATIO, so there is a test set); no failure yet: down from the lowest by e^(−δ), … (δ = ln `expand`);
  * both: the profile likelihood of θ = ln p_c (li2.studies.intervals) is normalised to a density
    over θ (a flat prior), and the next batch sits at its quantiles 1/(b+1), …, b/(b+1) — probabilistic
    bisection on ln p: each batch lands where the remaining uncertainty about p_c is, and for separated
    data (every seed agrees) it halves the gap between the highest all-fail and the lowest all-success
    ratio while runs on both sides pin the seed-to-seed spread.
The search of that M stops when the 95% interval of p_c is closed and narrower than `tolerance`·p̂_c
(relative width (hi − lo)/p̂_c), when `max_runs` runs are spent, or when p_c is out of reach (every run
failed at p = MAX_RATIO, or every run succeeded at the lowest ratio `min_ratio`).

The interval of an adaptive design is tempered (`TEMPER`). The design concentrates its runs where the
data so far put p_c, so a run of seeds that happened to look separated pulls the next runs next to
it and the profile-likelihood interval at χ²₁(0.95) comes out too narrow: on simulated searches
(logistic transitions with slopes 15–400 per unit ln p, 16 runs, tolerance 5%) it covered the true
p_c in only 53–77% of searches with slopes ≤ 80. Dividing the log-likelihood by TEMPER =
χ²₁(0.99)/χ²₁(0.95) ≈ 1.73 — the same interval as the cut 6.63 — brought coverage to 80–100% across
those slopes, 89% on average (tests/test_search.py measures it: at slope 30, 53% plain, 93% tempered). Every analysis of search data uses it (the per-M
intervals, the weighted c and the law fits), and so does the stopping rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .intervals import pc_interval

TEMPER = 6.634896601021214 / 3.841458820694124     # χ²₁(0.99) / χ²₁(0.95): module doc


@dataclass(frozen=True)
class Design:
    """The search's knobs (li2.studies.search.SearchSpec carries them)."""

    start: tuple[float, ...] = (0.75, 1.0, 1.33)   # first batch, multiples of p_ref
    batch: int = 2                                   # runs per later batch
    tolerance: float = 0.05                          # stop when (hi − lo)/p̂_c < tolerance
    max_runs: int = 16                               # per group order
    expand: float = 1.5                              # step factor while p_c is not bracketed
    min_ratio: float = 1e-3
    temper: float = TEMPER                           # likelihood tempering of the adaptive design


MAX_RATIO = 0.9      # a run needs a test set to say whether it generalised


def tidy_ratio(p: float) -> float:
    """4 significant digits, capped at MAX_RATIO: the ratios a search proposes read (and hash) cleanly."""
    return min(MAX_RATIO, float(f"{p:.4g}"))


def status(ratios, successes, design: Design) -> dict:
    """Where one M's search stands: {"state": "start" | "unbracketed" | "searching" | "converged" |
    "exhausted" | "out_of_reach", "estimate", "ci", "width" (relative), "n"}."""
    p = np.asarray(ratios, float)
    y = np.asarray(successes, float)
    n = int(p.size)
    out = {"state": "start", "estimate": None, "ci": None, "width": None, "n": n}
    if n == 0:
        return out
    if y.max() == 0.0 or y.min() == 1.0:
        edge = p.max() if y.max() == 0.0 else p.min()
        out["state"] = "out_of_reach" if (y.max() == 0.0 and edge >= MAX_RATIO) or \
            (y.min() == 1.0 and edge <= design.min_ratio) else "unbracketed"
    else:
        r = pc_interval(p, y, temper=design.temper)
        out.update(estimate=r["estimate"], ci=r["ci"], profile=r["profile"])
        lo, hi = r["ci"]
        out["width"] = (hi - lo) / r["estimate"]
        closed = not any(r["ci_open"])
        out["state"] = "converged" if closed and out["width"] < design.tolerance else "searching"
    if out["state"] in ("unbracketed", "searching") and n >= design.max_runs:
        out["state"] = "exhausted"
    return out


def _quantiles(profile, b: int) -> list[float]:
    """θ at the quantiles 1/(b+1) … b/(b+1) of the normalised likelihood exp(ℓ_p(θ))."""
    w = np.exp(profile.loglik)
    cdf = np.cumsum(w) / w.sum()
    return [float(np.interp(q, cdf, profile.theta)) for q in np.arange(1, b + 1) / (b + 1)]


def propose(ratios, successes, p_ref: float, design: Design) -> list[float]:
    """The next batch of training ratios for one M ([] when its search is over); module doc."""
    st = status(ratios, successes, design)
    if st["state"] == "start":
        return [tidy_ratio(m * p_ref) for m in design.start]
    if st["state"] not in ("unbracketed", "searching"):
        return []
    b = min(design.batch, design.max_runs - st["n"])
    p = np.asarray(ratios, float)
    if st["state"] == "unbracketed":
        up = not np.asarray(successes, float).any()
        edge = p.max() if up else p.min()
        step = math.log(design.expand) * (1 if up else -1)
        out = [tidy_ratio(max(design.min_ratio, edge * math.exp(step * (i + 1)))) for i in range(b)]
        return sorted(set(out))
    return [tidy_ratio(math.exp(t)) for t in _quantiles(st["profile"], b)]
