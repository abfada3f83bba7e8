"""Honest intervals for a success threshold p_c and for the constant of a one-parameter scaling law.

Why not the bootstrap over runs. When the seeds agree (every run fails below some ratio and succeeds
above the next one — the usual case on a real grid), every bootstrap resample has the same gap, the
fitted midpoint lands in the same place, and the percentile interval shrinks to a sliver inside ONE
grid gap although the data say nothing about where in the gap p_c lies. On synthetic studies with a
known c the bootstrap intervals of p_c and c missed the truth.

Per group order: profile likelihood in ln p (`pc_interval`).
    P(success | p) = σ(β·(ln p − θ)),  θ = ln p_c,  β ≥ 0 the slope per unit ln p.
The profile log-likelihood ℓ_p(θ) = max_β ℓ(θ, β) is tabulated on a fine θ grid (β on a log grid
up to a slope that is a step on any real grid, so separated data are represented exactly). The 95%
interval is {θ : 2(ℓ̂ − ℓ_p(θ)) ≤ χ²₁(0.95) = 3.84}. Properties that make it honest:
  * separated data: the likelihood supremum (= 1) is reached for every θ strictly inside the gap
    between the highest ratio where every run failed and the lowest where every run succeeded, so
    the interval contains that whole gap (its closure is added explicitly), and beyond it extends
    as far as the number of seeds allows (few seeds → a wider interval): the seed-to-seed spread;
  * smooth transitions: the usual profile-likelihood interval of a logistic midpoint, whose
    coverage is close to nominal for the tens of runs per M of a phase sweep (checked in
    tests/test_phase_coverage.py).
It needs no prior and no resampling (deterministic; ~20 ms per M). For an adaptive design (the p_c
search) the log-likelihood is divided by a calibrated `temper` first (li2.studies.design.TEMPER): such
designs cluster their runs where the data happened to look separated, and the plain interval
undercovers there.

Across group orders: a random-effects likelihood for the constant (`fit_constant`).
    ln p_c(M) = ln c + ln g(M) + u_M,   u_M ~ N(0, τ²)   (g(M) = ln M / M for the theory's law)
Each M contributes its profile likelihood L_M, shifted to x = ln c and smoothed by the random effect:
L_M^τ(x) = ∫ L_M(x + ln g(M) + u) φ_τ(u) du. The joint log-likelihood Σ_M ln L_M^τ(x) is profiled
over τ ≥ 0 (τ is the scatter between M that the law does not explain), and the interval is
{x : 2(ℓ̂ − ℓ_p(x)) ≤ q} with q = k·ln(1 + t²_{k−1, 0.975}/(k − 1)), k the number of M. That q is the
exact calibration of the profile-likelihood interval for a normal mean with unknown variance (it
reproduces the Student-t interval), which is what the τ-profile becomes when the scatter between M
dominates; when the per-M likelihoods dominate it is more conservative than χ²₁ (q = 5.4 instead of
3.84 at k = 5). Weighting is automatic: a sharp per-M likelihood pulls harder than a flat one, and an
M whose p_c is only known to lie in a wide gap constrains c only to that gap. Each M's smoothed
likelihoods (one per τ) are computed once on a padded θ grid (`smooth_profile`), so fitting many shapes
to the same profiles (li2.studies.laws) only interpolates. Identical relative
grids (the same multiples of a reference p_c at every M) make every M's gap the same in c, so the
joint interval keeps that whole gap instead of averaging it away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CHI2_95 = 3.841458820694124       # χ²₁ quantile at 0.95
THETA_STEP = 0.002                # θ = ln p grid step (0.2% in p)
THETA_PAD = 1.0                   # grid extends this far (in ln p) beyond the sampled ratios
SLOPES = np.geomspace(0.2, 5000.0, 90)   # β per unit ln p; 5000 × a 1% grid gap = a step
X_STEP = 0.005                    # ln c grid step of the combination
TAUS = np.concatenate([[0.0], np.geomspace(0.005, 2.0, 48)])


@dataclass
class Profile:
    """Profile log-likelihood of θ = ln p_c for one M: theta (T,), loglik (T,) with max 0; gap: for
    separated data (ln p of the highest all-fail ratio, of the lowest all-success ratio), where the
    likelihood is at its supremum, else None."""

    theta: np.ndarray
    loglik: np.ndarray
    gap: tuple[float, float] | None = None


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _aggregate(ratios, successes, trials=None):
    """(z = ln p per distinct ratio, successes k, trials n); runs at the same ratio are pooled."""
    p = np.asarray(ratios, float)
    s = np.asarray(successes, float)
    t = np.ones_like(s) if trials is None else np.asarray(trials, float)
    if p.shape != s.shape or p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ValueError("ratios, successes (and trials) must be 1-D arrays of the same non-zero length")
    if (p <= 0).any() or (s < 0).any() or (s > t).any():
        raise ValueError("ratios must be > 0 and 0 <= successes <= trials")
    u, inv = np.unique(p, return_inverse=True)
    return np.log(u), np.bincount(inv, s), np.bincount(inv, t)


def profile_likelihood(ratios, successes, trials=None) -> Profile:
    """ℓ_p(θ) = max_β Σ_r [k_r ln σ(β(z_r − θ)) + (n_r − k_r) ln σ(−β(z_r − θ))], minus its maximum.

    ratios: (R,) training ratios (runs or distinct ratios); successes: (R,) successes (0/1 per run, or
    counts with trials (R,)). θ runs from ln(min p) − THETA_PAD to ln(max p) + THETA_PAD.
    """
    z, k, n = _aggregate(ratios, successes, trials)
    theta = np.arange(z.min() - THETA_PAD, z.max() + THETA_PAD + THETA_STEP / 2, THETA_STEP)
    eta = SLOPES[None, :, None] * (z[None, None, :] - theta[:, None, None])          # (T, S, R)
    ll = (k * _log_sigmoid(eta) + (n - k) * _log_sigmoid(-eta)).sum(-1)             # (T, S)
    prof = ll.max(1)
    return Profile(theta, prof - prof.max(), _gap(z, k, n))


def _gap(z: np.ndarray, k: np.ndarray, n: np.ndarray):
    """(ln p of the highest all-fail ratio, of the lowest all-success ratio) when the data are
    separated (every failure below every success), else None."""
    fail_any, succ_any = k < n, k > 0
    if not fail_any.any() or not succ_any.any():
        return None
    top_fail, low_succ = z[fail_any].max(), z[succ_any].min()
    return (top_fail, low_succ) if top_fail < low_succ else None


def pc_interval(ratios, successes, trials=None, level: float = 0.95, temper: float = 1.0) -> dict:
    """Profile-likelihood interval of p_c for one M (module docstring). Returns
    {"estimate": the profile maximum (the middle of the flat top for separated data), "ci": [lo, hi],
     "ci_open": [lower open, upper open] (the interval reached the end of the θ grid: p_c is only
     bounded on the other side), "gap": [top all-fail ratio, lowest all-success ratio] or None,
     "profile": Profile}. With no success, or no failure, the estimate is None and the interval open.
    temper ≥ 1 divides the log-likelihood (the returned profile too) before the cut: the calibration of
    an adaptive design, whose runs cluster where the data happened to look separated.
    """
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    if temper < 1.0:
        raise ValueError("temper must be >= 1 (it can only widen the interval)")
    z, k, n = _aggregate(ratios, successes, trials)
    prof = profile_likelihood(ratios, successes, trials)
    if temper != 1.0:   # an adaptive design's likelihood, flattened (li2.studies.design.TEMPER)
        prof = Profile(prof.theta, prof.loglik / temper, prof.gap)
    cut = CHI2_95 if level == 0.95 else _chi2_1(level)
    gap = prof.gap
    inside = np.flatnonzero(2 * -prof.loglik <= cut)
    lo_i, hi_i = int(inside.min()), int(inside.max())
    top = np.flatnonzero(prof.loglik >= -1e-9)
    est = 0.5 * (prof.theta[top.min()] + prof.theta[top.max()])
    lo, hi = prof.theta[lo_i], prof.theta[hi_i]
    if gap is not None:   # the supremum holds on the whole open gap: keep its closure
        lo, hi = min(lo, gap[0]), max(hi, gap[1])
    degenerate = k.sum() == 0 or k.sum() == n.sum()
    return {"estimate": None if degenerate else math.exp(est), "ci": [math.exp(lo), math.exp(hi)],
            "ci_open": [lo_i == 0, hi_i == prof.theta.size - 1],
            "gap": None if gap is None else [math.exp(gap[0]), math.exp(gap[1])], "profile": prof}


def _chi2_1(level: float) -> float:
    from scipy.stats import chi2
    return float(chi2.ppf(level, 1))


def student_cut(k: int, level: float, n_params: int = 1) -> float:
    """k·ln(1 + t²_{k−q}/(k−q)) for q = n_params location parameters: the LR cut-off that reproduces the
    Student-t interval of a normal linear model with unknown variance (module doc); χ²₁ when k ≤ q."""
    from scipy.stats import t as student_t
    dof = k - n_params
    if dof < 1:
        return _chi2_1(level)
    q = float(student_t.ppf(0.5 + level / 2, dof))
    return k * math.log1p(q * q / dof)


SMOOTH_TRUNCATE = 5.0             # the random-effect kernel is cut at 5 τ


@dataclass
class Smoothed:
    """One M's likelihood smoothed by each random effect: lik[j] = ∫ L_M(θ + u) φ_{TAUS[j]}(u) du on
    `grid` (G,) (step X_STEP), for θ anywhere: beyond the grid the value is the end value (the
    profile's likelihood is continued as a constant, and the grid is padded by the kernel's reach)."""

    grid: np.ndarray
    lik: np.ndarray      # (len(TAUS), G)


def smooth_profile(profile: Profile) -> Smoothed:
    """The Smoothed likelihoods of one Profile (computed once; every fit then only interpolates)."""
    from scipy.ndimage import gaussian_filter1d
    pad = SMOOTH_TRUNCATE * TAUS[-1] + X_STEP
    grid = np.arange(profile.theta[0] - pad, profile.theta[-1] + pad + X_STEP / 2, X_STEP)
    base = np.exp(np.interp(grid, profile.theta, profile.loglik))
    lik = np.stack([base if tau == 0.0 else
                    gaussian_filter1d(base, tau / X_STEP, mode="nearest", truncate=SMOOTH_TRUNCATE)
                    for tau in TAUS])
    return Smoothed(grid, lik)


def _at(sm: Smoothed, theta: np.ndarray) -> np.ndarray:
    """sm's smoothed likelihoods at θ values (X,): (len(TAUS), X), linear between grid points."""
    pos = np.clip((theta - sm.grid[0]) / X_STEP, 0.0, sm.grid.size - 1.000001)
    i = pos.astype(int)
    w = pos - i
    return sm.lik[:, i] * (1.0 - w) + sm.lik[:, i + 1] * w


def joint_loglik(profiles: list[Profile], log_shape, smoothed: list[Smoothed] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The random-effects log-likelihood of x = ln c in ln p_c(M) = x + log_shape[M] + u_M, u_M ~ N(0, τ²),
    profiled over τ ∈ TAUS (module doc). Returns (x (X,) grid, ℓ(x) (X,) not normalised, index into TAUS
    of the best τ at each x (X,)). profiles: one Profile per M; log_shape: (k,); smoothed: their
    smooth_profile (pass them when fitting many shapes to the same profiles)."""
    log_shape = np.asarray(log_shape, float)
    if len(profiles) != log_shape.size or not profiles:
        raise ValueError("need one profile per group order")
    smoothed = smoothed if smoothed is not None else [smooth_profile(p) for p in profiles]
    lo = min(p.theta[0] - s for p, s in zip(profiles, log_shape))
    hi = max(p.theta[-1] - s for p, s in zip(profiles, log_shape))
    x = np.arange(lo, hi + X_STEP / 2, X_STEP)
    joint = sum(np.log(np.maximum(_at(sm, x + s), 1e-300)) for sm, s in zip(smoothed, log_shape))
    return x, joint.max(0), joint.argmax(0)


def fit_constant(profiles: list[Profile], log_shape, level: float = 0.95) -> dict:
    """Random-effects profile-likelihood fit of ln c in ln p_c(M) = ln c + log_shape[M] + u_M (module doc).

    profiles: one Profile per M (θ = ln p_c); log_shape: (k,) ln g(M), e.g. ln(ln M / M).
    Returns {"c", "ci": [lo, hi], "ci_open", "tau" (scatter between M at the maximum, in ln p),
    "cut" (the LR cut-off used), "k", "loglik" (the maximum of the joint log-likelihood)}.
    """
    log_shape = np.asarray(log_shape, float)
    x, prof, tau_idx = joint_loglik(profiles, log_shape)
    best = prof.max()
    rel = prof - best
    k = len(profiles)
    cut = student_cut(k, level)
    inside = np.flatnonzero(2 * -rel <= cut)
    top = np.flatnonzero(rel >= -1e-9)
    est = 0.5 * (x[top.min()] + x[top.max()])
    i_best = int(np.argmin(np.abs(x - est)))
    ci = [x[inside.min()], x[inside.max()]]
    common = _common_gap(profiles, log_shape)
    if common is not None:   # every M separated and their gaps overlap: the supremum holds on it all
        ci = [min(ci[0], common[0]), max(ci[1], common[1])]
        est = 0.5 * (common[0] + common[1])
    return {"c": math.exp(est), "ci": [math.exp(ci[0]), math.exp(ci[1])],
            "ci_open": [bool(inside.min() == 0), bool(inside.max() == x.size - 1)],
            "tau": float(TAUS[int(tau_idx[i_best])]), "cut": cut, "k": k, "loglik": float(best)}


def _common_gap(profiles: list[Profile], log_shape: np.ndarray):
    """The intersection of the per-M gaps in x = ln c when every M is separated (else None): there
    the joint likelihood (with τ = 0) is exactly at its supremum, so the interval keeps its closure
    however close the truth lies to a grid point."""
    if any(p.gap is None for p in profiles):
        return None
    lo = max(p.gap[0] - s for p, s in zip(profiles, log_shape))
    hi = min(p.gap[1] - s for p, s in zip(profiles, log_shape))
    return (lo, hi) if lo < hi else None


def draws(profile: Profile, size: int, rng: np.random.Generator) -> np.ndarray:
    """p_c draws from the normalised profile likelihood (a flat prior in ln p): (size,) ratios.

    For separated data these spread over the whole gap — the resampling of the position inside
    the gap that a bootstrap over runs cannot do. Used for the CIs of the alternative scaling forms.
    """
    w = np.exp(profile.loglik)
    idx = rng.choice(profile.theta.size, size=size, p=w / w.sum())
    jitter = rng.uniform(-0.5, 0.5, size) * THETA_STEP
    return np.exp(profile.theta[idx] + jitter)
