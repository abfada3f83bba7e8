"""The grokking-time law: how the grok step T grows as the training ratio p nears p_c from above.

Data: the grokked runs of a phase study (order M, ratio p, grok step T) and each M's p_c. For every
form of li2.theory.scaling.GROK_TIME_FORMS (x = p/p_c),
    ln T = ln A_M − ν·u(x)     u = ln(x − 1) (critical), ln x (ratio), ln ln x (log),
fitted by least squares in ln T:
  * per M: its own A_M and ν (needs ≥ 3 runs);
  * jointly: one ν for all M and ln A_M = ln A + α·ln M (3 parameters: the law for any M);
  * "critical_free": the critical form with p_c as a free parameter per M (T diverges at p_c*, which
    need not be the search's budget-bound p_c; p_c* < every grokked p of that M), joint ν and A·M^α.
    p_c* is an extrapolation: `nearest_run_above_pc_star` says how far (in p/p_c* − 1) the closest grokked
    run lies above it.
Runs at x ≤ 1 (grokked just below the estimated p_c) cannot enter the critical and log forms: every
form is fitted to the runs at x > 1 (so their held-out errors compare) and the others are counted; runs above p_c that did not grok within the budget are censored (T > budget) and left out,
which biases T near p_c low — both counts are reported.
The divergence points p_c*(M) of "critical_free" are a budget-free threshold (a budget-bound p_c sits
above them by the ratio where T reaches the budget); `pc_star_law` fits their exponent across M —
b* of p_c* ∝ M^−b* and b*_log of p_c* ∝ ln M·M^−b*_log (the theory's form has b*_log = 1) — by least
squares, with 95% percentile intervals from N_BOOT refits on runs resampled within each M.
Held-out prediction: every grokked run is predicted by the fit without it (leave-one-out over runs:
each run has its own seed and ratio, so a held-out run is a seed and a ratio the fit never saw). The
error is e = ln T_predicted − ln T_observed; reported as RMS(e), median |e| and the median factor
exp(median |e|), beside a null model (each M's mean ln T, also left-one-out).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..theory.scaling import GROK_TIME_FORMS, grok_time_regressor

MIN_RUNS_PER_M = 3
N_BOOT = 100


def _design(form: str, x: np.ndarray, m: np.ndarray, joint: bool) -> np.ndarray:
    """Columns of the linear model for ln T: joint → [1, ln M, −u]; per M → [1, −u]."""
    u = grok_time_regressor(form, x)
    return np.column_stack([np.ones_like(x), np.log(m), -u]) if joint else np.column_stack([np.ones_like(x), -u])


def _lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _loo(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals of a linear fit, exact: e_i = r_i / (1 − h_ii) (predicted − observed)."""
    beta = _lstsq(X, y)
    r = y - X @ beta
    h = np.einsum("ij,ji->i", X, np.linalg.pinv(X))
    return -r / np.maximum(1.0 - h, 1e-12)


def _errors(e: np.ndarray) -> dict:
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n": 0, "rms_log": None, "median_abs_log": None, "median_factor": None}
    med = float(np.median(np.abs(e)))
    return {"n": int(e.size), "rms_log": float(np.sqrt(np.mean(e ** 2))), "median_abs_log": med,
            "median_factor": math.exp(med)}


def _fit_linear(form: str, df: pd.DataFrame, joint: bool) -> dict | None:
    x, m, y = df["x"].to_numpy(float), df["order"].to_numpy(float), np.log(df["grok_step"].to_numpy(float))
    ok = np.isfinite(grok_time_regressor(form, x))
    x, m, y = x[ok], m[ok], y[ok]
    k = 3 if joint else 2
    if y.size < k + 1 or (joint and np.unique(m).size < 2):
        return None
    X = _design(form, x, m, joint)
    beta = _lstsq(X, y)
    params = ({"A": math.exp(beta[0]), "alpha": float(beta[1]), "nu": float(beta[2])} if joint else
              {"A": math.exp(beta[0]), "nu": float(beta[1])})
    resid = y - X @ beta
    return {"params": params, "n": int(y.size), "excluded_x_le_1": int((~ok).sum()),
            "rms_log_in_sample": float(np.sqrt(np.mean(resid ** 2))), "held_out": _errors(_loo(X, y))}


def _critical_free(df: pd.DataFrame, data_only: bool = False):
    """Joint critical form with p_c* free per M (module doc); held-out errors by refitting without each run."""
    from scipy.optimize import least_squares
    orders = sorted(df["order"].unique())
    if len(df) < len(orders) + 4 or len(orders) < 2:
        return None
    idx = df["order"].map({o: i for i, o in enumerate(orders)}).to_numpy()
    p, m, y = df["train_ratio"].to_numpy(float), df["order"].to_numpy(float), np.log(df["grok_step"].to_numpy(float))
    pmin = np.array([p[idx == i].min() for i in range(len(orders))])

    def unpack(t):   # p_c* = pmin·σ(s) keeps it below every grokked ratio of its M
        return t[0], t[1], t[2], pmin / (1.0 + np.exp(-t[3:]))

    def resid(t, sel):
        lnA, alpha, nu, pcs = unpack(t)
        return (lnA + alpha * np.log(m[sel]) - nu * np.log(p[sel] / pcs[idx[sel]] - 1.0)) - y[sel]

    def fit(sel, t0):
        return least_squares(resid, t0, args=(sel,), method="trf").x

    if data_only:
        return fit, unpack, idx, orders

    t0 = np.concatenate([[math.log(300.0), 0.0, 1.0], np.full(len(orders), 2.0)])
    every = np.ones(len(df), bool)
    best = fit(every, t0)
    lnA, alpha, nu, pcs = unpack(best)
    held = []
    for i in range(len(df)):
        sel = every.copy()
        sel[i] = False
        if (idx[sel] == idx[i]).sum() == 0:
            continue
        a2, al2, nu2, pc2 = unpack(fit(sel, best))
        # without its lowest grokked ratio an M's p_c* may move above that ratio: the fit then says the
        # held-out run never groks, a miss the RMS cannot hold, so it is counted apart
        held.append(a2 + al2 * math.log(m[i]) - nu2 * math.log(p[i] / pc2[idx[i]] - 1.0) - y[i]
                    if p[i] > pc2[idx[i]] else math.inf)
    nearest = float(np.min(p / pcs[idx] - 1.0))   # how far p_c* lies below the data: an extrapolation that far
    return {"params": {"A": math.exp(lnA), "alpha": float(alpha), "nu": float(nu),
                       "pc_star": {str(int(o)): float(v) for o, v in zip(orders, pcs)}},
            "nearest_run_above_pc_star": nearest,
            "n": int(len(df)), "rms_log_in_sample": float(np.sqrt(np.mean(resid(best, every) ** 2))),
            "held_out": {**_errors(np.array(held)), "predicted_never": int(np.isinf(held).sum())}}


def _slopes(orders: np.ndarray, pcs: np.ndarray) -> tuple[float, float]:
    """(b*, b*_log): minus the least-squares slopes of ln p_c* and ln(p_c*/ln M) against ln M."""
    x = np.log(orders)
    return -float(np.polyfit(x, np.log(pcs), 1)[0]), -float(np.polyfit(x, np.log(pcs / np.log(orders)), 1)[0])


def pc_star_law(df: pd.DataFrame, best: dict, seed: int = 0) -> dict | None:
    """The exponent of the budget-free p_c*(M) (module doc); df: the grokked runs above p_c (as fitted)."""
    if best is None or len(best["params"]["pc_star"]) < 3:
        return None
    fit, unpack, idx, orders = _critical_free(df, data_only=True)
    m = np.array(orders, float)
    start = np.concatenate([[math.log(best["params"]["A"]), best["params"]["alpha"], best["params"]["nu"]],
                            np.full(len(orders), 2.0)])
    b, b_log = _slopes(m, np.array([best["params"]["pc_star"][str(int(o))] for o in orders]))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(idx == i) for i in range(len(orders))]
    boots = []
    for _ in range(N_BOOT):
        pick = np.concatenate([rng.choice(g, g.size) for g in groups])
        sel = np.zeros(len(df), int)
        np.add.at(sel, pick, 1)       # a run drawn twice counts twice: repeat its residual
        rep = np.repeat(np.arange(len(df)), sel)
        boots.append(_slopes(m, unpack(fit(rep, start))[3]))
    boots = np.array(boots)
    ci = lambda col: [float(np.percentile(boots[:, col], 2.5)), float(np.percentile(boots[:, col], 97.5))]  # noqa: E731
    lo, hi = ci(1)
    return {"b": b, "b_ci": ci(0), "b_log": b_log, "b_log_ci": [lo, hi], "b_log_excludes_1": not lo <= 1.0 <= hi,
            "c_star": {str(int(o)): best["params"]["pc_star"][str(int(o))] * o / math.log(o) for o in orders},
            "n_boot": N_BOOT}


def _null(df: pd.DataFrame) -> dict:
    """Each M's mean ln T, left-one-out: what a law must beat."""
    e = []
    for _, g in df.groupby("order"):
        y = np.log(g["grok_step"].to_numpy(float))
        if y.size >= 2:
            e.extend((y.sum() - y) / (y.size - 1) - y)
    return {"held_out": _errors(np.array(e))}


def grok_time_law(runs: pd.DataFrame, pc: dict[int, float]) -> dict:
    """Fit every grokking-time form per M and jointly (module doc).

    runs: columns order, train_ratio, grok_step (NA when it did not grok), success (bool); pc: M → p_c.
    Returns {"n_grokked", "n_censored_above_pc", "per_order": {M: {form: fit}}, "joint": {form: fit},
    "critical_free": fit, "null": {...}, "best": the joint form with the lowest held-out RMS, "note"}."""
    df = runs[runs["order"].isin(list(pc))].copy()
    df["x"] = df["train_ratio"] / df["order"].map(pc)
    grokked = df[df["success"].astype(bool) & df["grok_step"].notna() & (df["grok_step"] > 0)]
    censored = int(((~df["success"].astype(bool)) & (df["x"] > 1.0)).sum())
    below = int((grokked["x"] <= 1.0).sum())
    grokked = grokked[grokked["x"] > 1.0]     # every form on the same runs, so held-out errors compare
    out = {"n_grokked": int(len(grokked)), "n_grokked_at_or_below_pc": below, "n_censored_above_pc": censored,
           "per_order": {}, "joint": {},
           "critical_free": None, "null": _null(grokked), "best": None}
    for o, g in grokked.groupby("order"):
        if len(g) >= MIN_RUNS_PER_M:
            out["per_order"][str(int(o))] = {f: _fit_linear(f, g, joint=False) for f in GROK_TIME_FORMS}
    out["joint"] = {f: _fit_linear(f, grokked, joint=True) for f in GROK_TIME_FORMS}
    out["critical_free"] = _critical_free(grokked)
    out["pc_star_law"] = pc_star_law(grokked, out["critical_free"])
    scored = {f: r["held_out"]["rms_log"] for f, r in out["joint"].items() if r and r["held_out"]["rms_log"] is not None}
    if out["critical_free"] and out["critical_free"]["held_out"]["rms_log"] is not None:
        scored["critical_free"] = out["critical_free"]["held_out"]["rms_log"]
    out["best"] = min(scored, key=scored.get) if scored else None
    out["note"] = (f"{censored} runs above p_c did not grok within their budget (censored, left out: T near p_c "
                   f"is biased low)" if censored else None)
    return out
