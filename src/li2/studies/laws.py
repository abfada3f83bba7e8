"""Which law p_c(M) follows: every form of li2.theory.scaling fitted by likelihood, with CIs, and compared.

Each bracketed M contributes its profile likelihood L_M(θ) of θ = ln p_c (li2.studies.intervals), so
each p_c is weighted by its own uncertainty (a p_c known only to lie in a wide gap pulls weakly). A form
    ln p_c(M) = ln s + log_shape(M; b) + u_M,   u_M ~ N(0, τ²)
has the joint log-likelihood ℓ(s, b, τ) = Σ_M ln ∫ L_M(ln s + log_shape(M; b) + u) φ_τ(u) du
(`intervals.joint_loglik`): τ, the scatter between M the form does not explain, is profiled, so a
form that misses the points pays in likelihood. For the free forms the exponent b is profiled on a
grid (coarse, then refined where the likelihood is within reach of its maximum):
    ℓ_p(b) = max_{s, τ} ℓ(s, b, τ),   CI of b = {b : 2(ℓ̂ − ℓ_p(b)) ≤ q},
q = k·ln(1 + t²_{k−2}/(k−2)) for k bracketed M: the cut-off that reproduces the Student-t interval of a
slope with unknown residual variance (one-parameter forms: t_{k−1}, as intervals.fit_constant).

Comparison (`compare_laws`):
  * likelihood-ratio test of each one-parameter form inside the free form it is nested in
    (theory.scaling.NESTED_IN: c·ln M/M is a·M^−b·ln M at b = 1, c/√M is a·M^−b at b = ½), calibrated
    like the CI: LR = k·ln(1 + F/(k−2)) with F ~ F(1, k−2), so "the CI of b excludes 1" and "p < 0.05"
    say the same thing;
  * AIC = 2·n_par − 2ℓ̂ and AICc = AIC + 2·n_par(n_par + 1)/(k − n_par − 1) (n_par counts τ), Akaike
    weights from AICc (AIC where AICc is undefined). The preferred form has the lowest AICc among the forms
    no LR test rejects (the fewer parameters on a tie);
  * a form is "excluded" when its LR test rejects it (p < 0.05) or it trails the best by ΔAICc > 10
    (essentially no support), "disfavoured" when ΔAICc > 4, else "not excluded" — several forms are
    commonly not excluded over a narrow range of M, and then the data cannot decide.
"""
from __future__ import annotations

import math

import numpy as np

from ..theory.scaling import FORMS, FREE_EXPONENT, NESTED_IN, log_shape, scale_name
from .intervals import TAUS, Profile, Smoothed, joint_loglik, smooth_profile, student_cut

B_RANGE = (-1.0, 3.0)        # exponents b searched
B_COARSE = 0.05
B_FINE = 0.005
EXCLUDED_DAIC, DISFAVOURED_DAIC = 10.0, 4.0
LR_LEVEL = 0.05


def _best(x: np.ndarray, prof: np.ndarray) -> tuple[float, float]:
    """(x at the middle of the flat top of prof, the top value)."""
    top = np.flatnonzero(prof >= prof.max() - 1e-9)
    return 0.5 * (x[top.min()] + x[top.max()]), float(prof.max())


class _Data:
    """The per-M profiles of one fit, smoothed once, and ℓ(x) at each exponent asked for (cached)."""

    def __init__(self, profiles: list[Profile], orders):
        self.profiles = profiles
        self.smoothed: list[Smoothed] = [smooth_profile(p) for p in profiles]
        self.m = np.asarray(orders, float)
        self.k = len(profiles)
        self._cache: dict[tuple, tuple] = {}

    def at(self, name: str, b: float | None):
        """(x grid of ln s, ℓ(x) profiled over τ, best τ index) of form `name` at exponent b."""
        key = (name, None if b is None else round(float(b), 9))
        if key not in self._cache:
            self._cache[key] = joint_loglik(self.profiles, log_shape(name, self.m, b), self.smoothed)
        return self._cache[key]


def _interval(values: np.ndarray, rel: np.ndarray, cut: float) -> tuple[list[float], list[bool]]:
    inside = np.flatnonzero(2 * -rel <= cut)
    return [float(values[inside.min()]), float(values[inside.max()])], [bool(inside.min() == 0),
                                                                         bool(inside.max() == values.size - 1)]


def _fixed_form(data: _Data, name: str, level: float) -> dict:
    x, prof, tau_idx = data.at(name, None)
    xs, top = _best(x, prof)
    cut = student_cut(data.k, level, 1)
    ci, opened = _interval(x, prof - top, cut)
    key = scale_name(name)
    tau = float(TAUS[int(tau_idx[int(np.argmin(np.abs(x - xs)))])])
    return {"params": {key: math.exp(xs)}, "params_ci": {key: [math.exp(ci[0]), math.exp(ci[1])]},
            "ci_open": {key: opened}, "loglik": top, "tau": tau, "n_params": 1}


def _exponent_profile(data: _Data, name: str, cut: float):
    """ℓ_p(b) on a coarse grid over B_RANGE, refined to B_FINE where 2(ℓ̂ − ℓ_p) ≤ cut + 4.
    Returns (b (B,), ℓ_p (B,), ln s at each b (B,), τ index at each b (B,))."""
    def evaluate(bs):
        rows = []
        for b in bs:
            x, prof, tau_idx = data.at(name, b)
            xs, top = _best(x, prof)
            rows.append((top, xs, int(tau_idx[int(np.argmin(np.abs(x - xs)))])))
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows])

    coarse = np.arange(B_RANGE[0], B_RANGE[1] + B_COARSE / 2, B_COARSE)
    ll, xs, ti = evaluate(coarse)
    near = coarse[2 * (ll.max() - ll) <= cut + 4.0]
    lo, hi = max(B_RANGE[0], near.min() - B_COARSE), min(B_RANGE[1], near.max() + B_COARSE)
    fine = np.arange(lo, hi + B_FINE / 2, B_FINE)
    llf, xsf, tif = evaluate(fine)
    b = np.concatenate([coarse, fine])
    order = np.argsort(b, kind="stable")
    return b[order], np.concatenate([ll, llf])[order], np.concatenate([xs, xsf])[order], \
        np.concatenate([ti, tif])[order]


def _free_form(data: _Data, name: str, level: float) -> dict:
    k = data.k
    cut = student_cut(k, level, 2)
    b, ll, xs, ti = _exponent_profile(data, name, cut)
    b_hat, top = _best(b, ll)
    i = int(np.argmin(np.abs(b - b_hat)))
    b_ci, b_open = _interval(b, ll - top, cut)
    # CI of ln a: every (b, ln a) whose joint likelihood clears the cut, projected on ln a
    a_lo, a_hi = math.inf, -math.inf
    for bj, lj in zip(b, ll):
        if 2 * (top - lj) > cut:
            continue
        x, prof, _ = data.at(name, bj)
        ok = x[2 * (top - prof) <= cut]
        if ok.size:
            a_lo, a_hi = min(a_lo, ok.min()), max(a_hi, ok.max())
    ci = {"a": [math.exp(a_lo), math.exp(a_hi)] if a_lo <= a_hi else None, "b": b_ci} if k > 2 else None
    return {"params": {"a": math.exp(xs[i]), "b": float(b_hat)}, "params_ci": ci,
            "ci_open": {"b": b_open} if k > 2 else None, "loglik": top, "tau": float(TAUS[int(ti[i])]),
            "n_params": 2, "exponent_profile": {"b": b, "loglik": ll}}


def fit_law(profiles: list[Profile] | _Data, orders, name: str, level: float = 0.95) -> dict:
    """One form of li2.theory.scaling fitted to the per-M profile likelihoods (module doc).

    Returns {"params", "params_ci" (None when k ≤ n_params), "ci_open", "loglik" (the maximum), "tau"
    (scatter between M at the maximum, in ln p), "n_params" (without τ)} (+ "exponent_profile" for free
    forms, internal)."""
    if name not in FORMS:
        raise ValueError(f"unknown scaling form '{name}'")
    data = profiles if isinstance(profiles, _Data) else _Data(profiles, orders)
    if len(data.profiles) != data.m.size or data.m.size < 2:
        raise ValueError("need one profile per group order and at least 2 orders")
    return (_free_form if FREE_EXPONENT[name] else _fixed_form)(data, name, level)


def _information(fit: dict, k: int) -> dict:
    n_par = fit["n_params"] + 1            # + τ
    aic = 2 * n_par - 2 * fit["loglik"]
    aicc = aic + 2 * n_par * (n_par + 1) / (k - n_par - 1) if k - n_par - 1 > 0 else None
    return {"aic": aic, "aicc": aicc}


def _lr_test(free: dict, nested: dict, k: int, b0: float) -> dict:
    """LR test of b = b0 inside the free form, F-calibrated (module doc)."""
    from scipy.stats import f as f_dist
    stat = max(0.0, 2 * (free["loglik"] - nested["loglik"]))
    out = {"statistic": stat, "b0": b0, "p_value": None, "rejected": None}
    if k > 2:
        f_stat = (k - 2) * math.expm1(stat / k)
        out["p_value"] = float(f_dist.sf(f_stat, 1, k - 2))
        out["rejected"] = out["p_value"] < LR_LEVEL
    return out


def compare_laws(profiles: list[Profile], orders, level: float = 0.95) -> dict:
    """Every form fitted (fit_law) and compared (module doc). Returns
    {"forms": {name: fit + aic, aicc, delta, weight, status}, "preferred", "criterion" ("aicc" or "aic"),
     "lr_tests": {nested name: test}, "exponent": {free name: {"b", "ci", "excludes_1", "excludes_half"}},
     "k", "evidence": [sentences]}."""
    data = _Data(profiles, orders)
    k = data.k
    forms = {name: fit_law(data, orders, name, level) for name in FORMS}
    for fit in forms.values():
        fit.update(_information(fit, k))
    crit = "aicc" if all(f["aicc"] is not None for f in forms.values()) else "aic"
    tests = {n: _lr_test(forms[free], forms[n], k, b0) for n, (free, b0) in NESTED_IN.items()}
    # the preferred form: lowest criterion among the forms no LR test rejects (fewer parameters on a tie)
    allowed = [n for n in forms if not (n in tests and tests[n]["rejected"])]
    best = min(allowed, key=lambda n: (forms[n][crit], forms[n]["n_params"]))
    low = min(f[crit] for f in forms.values())
    weights = {n: math.exp(-0.5 * (f[crit] - low)) for n, f in forms.items()}
    total = sum(weights.values())
    for n, f in forms.items():
        f["delta"] = f[crit] - low
        f["weight"] = weights[n] / total
        rejected = n in tests and tests[n]["rejected"]
        f["status"] = ("excluded" if rejected or f["delta"] > EXCLUDED_DAIC else
                       "disfavoured" if f["delta"] > DISFAVOURED_DAIC else "not excluded")
    exponent = {}
    for n, f in forms.items():
        if FREE_EXPONENT[n] and f["params_ci"]:
            lo, hi = f["params_ci"]["b"]
            exponent[n] = {"b": f["params"]["b"], "ci": [lo, hi], "excludes_1": not lo <= 1.0 <= hi,
                           "excludes_half": not lo <= 0.5 <= hi}
    return {"forms": forms, "preferred": best, "criterion": crit, "lr_tests": tests, "exponent": exponent,
            "k": k, "evidence": _evidence(forms, best, crit, tests, exponent)}


def _evidence(forms: dict, best: str, crit: str, tests: dict, exponent: dict) -> list[str]:
    lines = [f"preferred: {best} (lowest {crit.upper()} among the forms no LR test rejects; Akaike weight "
             f"{forms[best]['weight']:.2f})"]
    for n, e in exponent.items():
        lines.append(f"{n}: b = {e['b']:.3f}, 95% CI [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}] — "
                     f"{'excludes' if e['excludes_1'] else 'includes'} b = 1")
    for n, t in tests.items():
        if t["p_value"] is not None:
            lines.append(f"{n} inside {NESTED_IN[n][0]} (b = {t['b0']:g}): LR = {t['statistic']:.2f}, "
                         f"p = {t['p_value']:.3g} → {'rejected' if t['rejected'] else 'not rejected'}")
    for n, f in forms.items():
        if n != best:
            why = " (its LR test)" if n in tests and tests[n]["rejected"] and f["delta"] <= EXCLUDED_DAIC else ""
            lines.append(f"{n}: Δ{crit.upper()} = {f['delta']:.2f} → {f['status']}{why}")
    undecided = [n for n, f in forms.items() if f["status"] == "not excluded"]
    if len(undecided) > 1:
        lines.append(f"not excluded by the data: {', '.join(undecided)} — the range of M cannot decide between them")
    return lines
