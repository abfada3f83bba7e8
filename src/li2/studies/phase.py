"""Sample-size phase transition: estimate p_c(M) from a sweep and fit its scaling (SPEC §5, §7.2).

Input is the sweep results table, one row per run, with columns `order` (M), `train_ratio` (p),
`seed` and `final_test_acc` (NaN for a run that produced no result; such rows are dropped and
counted). A run *succeeds* when final_test_acc ≥ success_threshold.

Per group order M:
    P(success | p) = σ(a + b·z),   z = (ln p − z₀)/s,   σ(t) = 1/(1 + e^(−t))
fitted by penalised maximum likelihood over all seeds (z₀, s centre and scale ln p over that M's
grid so the penalty means the same for every grid). The 50% point is
    p_c(M) = exp(z₀ + s·(−a/b)).
Its 95% CI is the profile-likelihood interval of li2.studies.intervals.pc_interval: for separated
data (seeds agree) it contains the whole gap between the highest all-fail and the lowest
all-success ratio plus what the number of seeds leaves open; a bootstrap over runs cannot see the
gap (every resample has the same one) and gave intervals inside one grid gap that missed the truth.

The constant c of p_c = c·ln M / M (keys c, c_ci) is fitted over the bracketed M by the
random-effects profile likelihood of li2.studies.intervals.fit_constant: each M weighted by its own
likelihood (so by its uncertainty), with the scatter between M (τ) as a free parameter and a
Student-calibrated cut-off, so c_ci includes both. The least-squares c of the form comparison below
is kept as c_unweighted.

Which law p_c(M) follows (key `law`, li2.studies.laws.compare_laws): every form of li2.theory.scaling
fitted by likelihood to the per-M profile likelihoods (so weighted by each p_c's uncertainty, with the
scatter between M profiled), with CIs on its parameters (the exponent b included), likelihood-ratio
tests of the nested forms (b = 1, b = ½), AIC/AICc and the preferred form with the evidence for it.
With temper > 1 (an adaptive design's runs: li2.studies.design.TEMPER) every per-M log-likelihood is
divided by it first, so the intervals, c and the laws all carry the design's calibration.

Kept from before (keys alternatives, preferred, r2): across the M's whose transition is inside the
sampled grid ("bracketed"), least squares on p_c (linear space) for the forms
    c·ln M / M              (SPEC §5; reference c = 2.7482)
    a·M^(−b)·ln M           (free exponent: the d_k / log-factor question)
    c'/√M
    a·M^(−b)                (free power law)
each scored by R² = 1 − Σ(p_c − f)² / Σ(p_c − mean p_c)² on p_c itself, so the forms compare;
their parameter CIs come from joint draws of each M's normalised profile likelihood (which spread
over the gap), refitted by least squares; they do not include the scatter between M.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import jsonable, read_parquet, write_json
from ..task import REFERENCE_C
from ..theory.scaling import FORMS, form_values
from ..views.study_figures import phase_figure
from .intervals import draws, fit_constant, pc_interval
from .laws import compare_laws

# Ridge on the logistic slope only. Without it perfectly separated data (a deterministic step,
# common when seeds agree) sends the slope to infinity; with it the slope stays finite and the
# midpoint lands inside the gap between the last failure and the first success. The intercept is
# not penalised: that would pull the midpoint towards the grid centre.
SLOPE_PENALTY = 1e-2


# A form with more parameters must beat a simpler one by more than this in R² to be worth noting
# as a real improvement rather than the extra freedom absorbing noise.
R2_MARGIN = 0.01


# ---------------------------------------------------------------------------------------------
# per-M logistic fit


def _fit_midpoint(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Penalised logistic MLE of y on z; returns (midpoint −a/b, slope b) in z units.

    Minimises  Σ [log(1 + e^η) − y·η] + ½·λ·b²,  η = a + b·z  (convex, so BFGS from (0, 1) is
    safe). NaN when y is constant: then no midpoint exists.
    """
    if y.min() == y.max():
        return math.nan, math.nan
    from scipy.optimize import minimize  # heavy (≈0.4 s): not on every li2 command's import path
    from scipy.special import expit

    def nll(theta):
        a, b = theta
        eta = a + b * z
        resid = expit(eta) - y  # expit: no overflow for steep fits
        f = np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * SLOPE_PENALTY * b * b
        grad = np.array([resid.sum(), resid @ z + SLOPE_PENALTY * b])
        return f, grad

    res = minimize(nll, x0=np.array([0.0, 1.0]), jac=True, method="BFGS")
    a, b = res.x
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0.0:
        return math.nan, float(b)
    return float(-a / b), float(b)


def _analyse_order(df: pd.DataFrame, threshold: float, n_boot: int, rng: np.random.Generator,
                   temper: float = 1.0) -> dict:
    """p_c, CI and bracketing for one M. df holds that M's runs (NaN accuracies already dropped)."""
    p = df["train_ratio"].to_numpy(float)
    y = (df["final_test_acc"].to_numpy(float) >= threshold).astype(float)
    ratios = np.unique(p)
    lnp = np.log(p)
    # centre/scale ln p by the grid so the slope penalty means the same on every grid
    z0 = float(np.mean(np.log(ratios)))
    s = float(np.std(np.log(ratios))) or 1.0
    z = (lnp - z0) / s

    by_ratio = df.assign(_succ=y).groupby("train_ratio")
    out = {
        "estimate": None,
        "ci": None,
        "bracketed": False,
        "reason": None,
        "n_runs": int(len(df)),
        "n_success": int(y.sum()),
        "ratios": [float(r) for r in ratios],
        "success_rate_by_ratio": {str(float(k)): float(v) for k, v in by_ratio["_succ"].mean().items()},
        "mean_acc_by_ratio": {str(float(k)): float(v) for k, v in by_ratio["final_test_acc"].mean().items()},
        "midpoint": None,  # the fitted 50% point even when outside the grid (diagnostic only)
        "slope_per_ln_p": None,
        "grid_bracket": None,
        "n_boot_valid": 0,
        "boot": [],  # p_c draws from the profile likelihood; consumed by the alternative forms' CIs
    }
    if len(ratios) < 2:
        out["reason"] = "single_ratio"
        return out
    if y.min() == 1.0:
        out["reason"] = "all_success"  # p_c lies below the smallest sampled ratio
        return out
    if y.max() == 0.0:
        out["reason"] = "all_failure"  # p_c lies above the largest sampled ratio
        return out

    zm, b = _fit_midpoint(z, y)
    if not np.isfinite(zm) or b <= 0:
        out["reason"] = "no_increasing_transition"  # success does not rise with p
        return out
    pc = math.exp(z0 + s * zm)
    out["midpoint"] = pc
    out["slope_per_ln_p"] = b / s
    # strictly inside: a midpoint at or past the grid edge is an extrapolation, not a measurement
    if pc <= ratios[0]:
        out["reason"] = "below_grid"
        return out
    if pc >= ratios[-1]:
        out["reason"] = "above_grid"
        return out
    out["bracketed"] = True
    out["estimate"] = pc
    k = int(np.searchsorted(ratios, pc))
    out["grid_bracket"] = [float(ratios[k - 1]), float(ratios[k])]

    out.update(_interval(p, y, pc, n_boot, rng, temper))
    return out


def _interval(p: np.ndarray, y: np.ndarray, pc: float, n_boot: int, rng: np.random.Generator,
              temper: float = 1.0) -> dict:
    """The CI of one M: profile likelihood in ln p (li2.studies.intervals), never narrower than the gap,
    plus n_boot draws from the normalised likelihood (they spread over the gap, unlike a run bootstrap)."""
    interval = pc_interval(p, y, temper=temper)
    lo, hi = interval["ci"]
    return {"ci": [min(lo, pc), max(hi, pc)], "ci_open": interval["ci_open"], "gap": interval["gap"],
            "ci_method": "profile likelihood (logistic in ln p), contains the all-fail/all-success gap"
                         + (f"; log-likelihood tempered by {temper:g} (adaptive design)" if temper != 1.0 else ""),
            "profile": interval["profile"], "boot": draws(interval["profile"], n_boot, rng),
            "n_boot_valid": int(n_boot)}


# ---------------------------------------------------------------------------------------------
# scaling forms


def _fit_form(name: str, m: np.ndarray, pc: np.ndarray) -> dict:
    """Least squares of p_c on one form, in linear space (the space R² is measured in).

    One-parameter forms f = c·g(M) have the closed form c = Σ g·p_c / Σ g². Two-parameter forms
    a·M^(−b)·h(M) start from the exact log-space line ln(p_c/h) = ln a − b·ln M, then refine by
    nonlinear least squares in linear space over (ln a, b), which keeps a > 0.
    """
    if name in ("c*ln(M)/M", "c/sqrt(M)"):
        g = form_values(name, {"c": 1.0}, m)
        return {"c": float(g @ pc / (g @ g))}
    h = np.log(m) if name == "a*M^-b*ln(M)" else np.ones_like(m)
    slope, intercept = np.polyfit(np.log(m), np.log(pc / h), 1)
    from scipy.optimize import least_squares
    res = least_squares(lambda t: np.exp(t[0]) * m ** (-t[1]) * h - pc, x0=[intercept, -slope])
    return {"a": float(np.exp(res.x[0])), "b": float(res.x[1])}


def _r2(pc: np.ndarray, fitted: np.ndarray) -> float | None:
    ss_tot = float(np.sum((pc - pc.mean()) ** 2))
    if ss_tot == 0.0:
        return None
    return 1.0 - float(np.sum((pc - fitted) ** 2)) / ss_tot


def _adjusted_r2(r2: float | None, n: int, k: int) -> float | None:
    """R²_adj = 1 − (1 − R²)·(n − 1)/(n − k), k fitted parameters; None when n ≤ k."""
    if r2 is None or n <= k:
        return None
    return 1.0 - (1.0 - r2) * (n - 1) / (n - k)


def _weighted_c(orders: list[int], per_m: dict, notes: list[str]) -> dict:
    """c, c_ci of p_c = c·ln M/M by li2.studies.intervals.fit_constant (module docstring)."""
    m = np.array(orders, float)
    weighted = fit_constant([per_m[o]["profile"] for o in orders], np.log(np.log(m) / m))
    if any(weighted["ci_open"]):
        notes.append("the CI of c reaches the end of the likelihood grid on one side: c is bounded on one side only")
    return {"c": weighted["c"], "c_ci": weighted["ci"], "c_scatter_tau": weighted["tau"],
            "c_method": ("random-effects profile likelihood over the bracketed M (each weighted by its own "
                         "likelihood; scatter between M τ profiled; Student-calibrated cut-off)")}


def _ls_form(name: str, m: np.ndarray, pc: np.ndarray, joint: np.ndarray | None) -> dict:
    """One form by least squares: params, CIs from the joint draws (n_boot, k), R² and adjusted R²."""
    params = _fit_form(name, m, pc)
    r2 = _r2(pc, form_values(name, params, m))
    ci = None
    if joint is not None:
        draws = [_fit_form(name, m, row) for row in joint]
        ci = {key: [float(np.percentile([d[key] for d in draws], q)) for q in (2.5, 97.5)] for key in params}
    return {"params": params, "params_ci": ci, "n_params": len(params), "r2": r2,
            "r2_adj": _adjusted_r2(r2, len(m), len(params))}


def _scaling(orders: list[int], per_m: dict, n_boot: int, seed: int, reference_c: float) -> dict:
    """All scaling fits over the bracketed M's: c weighted (intervals.fit_constant), the forms by least
    squares with CIs from joint draws of the per-M profile likelihoods."""
    m = np.array(orders, float)
    pc = np.array([per_m[o]["estimate"] for o in orders], float)
    n = len(orders)
    notes = []

    # Joint draws: the per-M likelihoods come from disjoint runs, hence are independent, so a
    # joint draw takes one valid draw of each M at random and every form is refitted on it.
    rng = np.random.default_rng([seed, 0])
    pools = [per_m[o]["boot"][np.isfinite(per_m[o]["boot"])] for o in orders]
    joint = None
    if all(pool.size > 0 for pool in pools):
        joint = np.stack([rng.choice(pool, n_boot) for pool in pools], axis=1)  # (n_boot, n)
    else:
        notes.append("some bracketed M has no valid draw; no CIs for the scaling fits")

    forms = {name: _ls_form(name, m, pc, joint) for name in FORMS}
    if n == 2:
        notes.append("only 2 bracketed M's: two-parameter forms fit exactly (R² = 1), so R² cannot rank them")

    # Preferred form by R², and whether extra parameters really buy anything.
    r2s = {k: v["r2"] for k, v in forms.items() if v["r2"] is not None}
    preferred = max(r2s, key=r2s.get) if r2s else None
    adj = {k: v["r2_adj"] for k, v in forms.items() if v["r2_adj"] is not None}
    preferred_adj = max(adj, key=adj.get) if adj else None
    if preferred is not None and forms[preferred]["n_params"] > 1:
        simple = max((k for k in r2s if forms[k]["n_params"] == 1), key=r2s.get)
        gap = r2s[preferred] - r2s[simple]
        if gap < R2_MARGIN:
            notes.append(
                f"{preferred} wins on R² by only {gap:.4f} over the one-parameter {simple}; "
                f"the extra parameter is not clearly needed (adjusted R² prefers {preferred_adj})"
            )

    c_form = forms["c*ln(M)/M"]
    ref_r2 = _r2(pc, reference_c * np.log(m) / m)
    return {
        **_weighted_c(orders, per_m, notes),
        "c_unweighted": c_form["params"]["c"],
        "c_unweighted_ci": c_form["params_ci"]["c"] if c_form["params_ci"] else None,
        "r2": c_form["r2"],
        "reference_r2": ref_r2,
        "alternatives": forms,
        "preferred": preferred,
        "preferred_adjusted": preferred_adj,
        "note": "; ".join(notes) or None,
    }


def _law(orders: list[int], per_m: dict) -> dict:
    """compare_laws over the bracketed M's likelihoods, without its internal exponent profiles."""
    law = compare_laws([per_m[o]["profile"] for o in orders], orders)
    for fit in law["forms"].values():
        fit.pop("exponent_profile", None)
    return law


# ---------------------------------------------------------------------------------------------
# public API


def _usable(results: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """(the rows with an accuracy, the run counts). Only a missing accuracy drops a run: a run that finished
    but did not grok (diverged, memorised) is a failure, which is exactly the data the transition is made of."""
    required = {"order", "train_ratio", "final_test_acc"}
    missing = required - set(results.columns)
    if missing:
        raise ValueError(f"results table lacks columns {sorted(missing)}")
    acc = pd.to_numeric(results["final_test_acc"], errors="coerce")
    dropped = acc.isna()
    counts: dict = {"n_runs_total": int(len(results)), "n_runs_used": int((~dropped).sum()),
                    "n_runs_dropped_nan": int(dropped.sum())}
    if "status" in results.columns:
        counts["dropped_by_status"] = {str(k): int(v) for k, v in results.loc[dropped, "status"].value_counts().items()}
    return results.loc[~dropped].assign(final_test_acc=acc[~dropped]), counts


def analyse_phase(
    results: pd.DataFrame,
    success_threshold: float = 0.95,
    n_boot: int = 200,
    seed: int = 0,
    reference_c: float = REFERENCE_C,
    temper: float = 1.0,
    laws: bool = True,
) -> dict:
    """p_c(M) per group order and the scaling fits; a JSON-serialisable dict (see module doc).

    Keys: success_threshold, n_runs_total/used/dropped_nan (+ dropped_by_status when a `status`
    column exists), pc {str(M): {estimate, ci, ci_method, ci_open, gap, bracketed, reason, …}},
    bracketed, bracketed_orders, unbracketed_orders, c, c_ci (weighted, module doc), c_method,
    c_scatter_tau, c_unweighted (least squares) and its CI, r2 (of the least-squares c·ln M/M),
    reference_c, reference_r2, alternatives, preferred, preferred_adjusted, note; law (with laws=True and
    ≥ 2 bracketed M): every form fitted by likelihood and compared (li2.studies.laws.compare_laws).
    temper ≥ 1 flattens every per-M likelihood (intervals.pc_interval): for adaptive designs (the search).
    """
    df, out = _usable(results)
    out.update(success_threshold=float(success_threshold), n_boot=int(n_boot), seed=int(seed),
               reference_c=float(reference_c))
    per_m = {}
    for order, group in sorted(df.groupby("order"), key=lambda kv: kv[0]):
        rng = np.random.default_rng([seed, int(order)])  # same draws whatever other M's exist
        per_m[int(order)] = _analyse_order(group, success_threshold, n_boot, rng, temper)
    inside = [o for o, r in per_m.items() if r["bracketed"]]
    out["bracketed"] = bool(per_m) and len(inside) == len(per_m)
    out["bracketed_orders"] = inside
    out["unbracketed_orders"] = [o for o in per_m if o not in inside]

    out["temper"] = float(temper)
    out["law"] = None
    if len(inside) >= 2:
        out.update(_scaling(inside, per_m, n_boot, seed, reference_c))
        if laws:
            out["law"] = _law(inside, per_m)
    else:
        out.update(
            c=None, c_ci=None, c_method=None, c_scatter_tau=None, c_unweighted=None, c_unweighted_ci=None,
            r2=None, reference_r2=None, alternatives=None, preferred=None, preferred_adjusted=None,
            note=f"{len(inside)} bracketed M (need >= 2): widen the ratio grids so p_c lies inside them",
        )
    if out["unbracketed_orders"]:
        extra = "unbracketed M excluded from the fits: " + ", ".join(
            f"{o} ({per_m[o]['reason']})" for o in out["unbracketed_orders"])
        out["note"] = f"{out['note']}; {extra}" if out["note"] else extra

    for r in per_m.values():
        r.pop("boot", None)      # internal; the CI summarises them
        r.pop("profile", None)
    out["pc"] = {str(o): r for o, r in per_m.items()}
    return jsonable(out)


def analyse_sweep_dir(out: Path, threshold: float = 0.95) -> dict:
    """Run the phase analysis on DIR/results.parquet; write DIR/phase.json, phase.png, phase.svg."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a folder (give the --out of an li2 sweep)")
    results = read_parquet(out / "results.parquet")
    analysis = analyse_phase(results, success_threshold=threshold)
    write_json(out / "phase.json", analysis)
    phase_figure(results, analysis, out / "phase.png", out / "phase.svg")
    return analysis
