"""Theorem 5 of the paper (memorisation): the energy of single-target data and its maxima.

Setting (paper, appendix A.4): every training pair has the same target h — the pairs (g, g⁻¹h), g ∈ G,
with sample probabilities p_g (a unique largest, at g*). For w = [u; v] ∈ R^{2M} on the unit sphere
the pair sums s_g = u_g + v_{g⁻¹h} carry everything: Ỹᵀσ(Xw) = (Σ_g p_g σ(s_g)) ỹ_h, so

    E(w) = ½ (1 − 1/M) (Σ_g p_g σ(s_g))²

with Ỹ centred over the M classes (ỹ_h = e_h − 1/M). Centring over the samples, as the paper's
P⊥₁ does elsewhere, would make Ỹ = 0 here (every row has the same label): the theorem maximises
F(s) = Σ_g p_g σ(s_g) on Σ_g s_g² ≤ 2, which is this E up to a positive factor.

Theorem 5, with φ(x) = σ′(x)/x: φ non-decreasing (x², relu², x^q) → the maximum is FOCUSED,
w = (e_{g*} ; e_{g*⁻¹h})/√2, s = √2 e_{g*}; φ strictly decreasing (ReLU, SiLU, …) → it SPREADS,
s_g = φ⁻¹(2λ/p_g) with λ set by Σ s_g² = 2, ordered like p_g (ReLU: s ∝ p).
"""
from __future__ import annotations

import math

import torch

from ..activations import get_activation
from ..algebra.groups import Group


def single_target_pairs(group: Group, target: int) -> torch.Tensor:
    """The M pairs (g, g⁻¹h) with product h = target: (M, 2) int64, row g = (g, g⁻¹h)."""
    inv = torch.as_tensor(group.inverses, dtype=torch.long)
    table = torch.as_tensor(group.table, dtype=torch.long)
    g = torch.arange(group.order)
    second = table[inv[g], target]                         # g⁻¹h
    return torch.stack([g, second], dim=1)


def pair_sums(w: torch.Tensor, pairs: torch.Tensor, order: int) -> torch.Tensor:
    """s_g = u_g + v_{g⁻¹h}: w (…, 2M) → (…, M) in the order of `pairs` rows."""
    return w[..., pairs[:, 0]] + w[..., order + pairs[:, 1]]


def single_target_energy(w: torch.Tensor, pairs: torch.Tensor, probs: torch.Tensor, order: int,
                         activation: str) -> torch.Tensor:
    """E(w) = ½(1 − 1/M)(Σ_g p_g σ(s_g))²: w (…, 2M) → (…)."""
    sigma, _ = get_activation(activation)
    total = (probs * sigma(pair_sums(w, pairs, order))).sum(-1)
    return 0.5 * (1.0 - 1.0 / order) * total * total


def ascend_single_target(pairs: torch.Tensor, probs: torch.Tensor, order: int, activation: str,
                         restarts: int = 32, seed: int = 0, tol: float = 1e-7, max_iter: int = 4000,
                         dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected gradient ascent of the single-target E on the unit sphere from `restarts` Gaussian starts.

    Step w ← normalise(w + η t), t the tangent gradient (autograd), η per restart: ×1.25 on an accepted
    step (E_new ≥ E + ½η‖t‖²), ×½ on a rejected one; a restart stops when ‖t‖ ≤ tol·‖∇E‖ or its step
    collapses. Returns (w (R, 2M), E (R,), converged (R,) bool).
    """
    gen = torch.Generator().manual_seed(int(seed))
    w = torch.randn(restarts, 2 * order, generator=gen, dtype=dtype)
    w = w / w.norm(dim=-1, keepdim=True)
    probs = probs.to(dtype)

    def value_and_tangent(x):
        x = x.detach().requires_grad_(True)
        e = single_target_energy(x, pairs, probs, order, activation)
        (g,) = torch.autograd.grad(e.sum(), x)
        t = g - (g * x).sum(-1, keepdim=True) * x
        return e.detach(), t.detach(), g.detach().norm(dim=-1)

    E, t, gn = value_and_tangent(w)
    eta = 0.1 / t.norm(dim=-1).clamp_min(1e-300)
    done = torch.zeros(restarts, dtype=torch.bool)
    converged = torch.zeros(restarts, dtype=torch.bool)
    for _ in range(max_iter):
        tn = t.norm(dim=-1)
        conv = (tn <= tol * gn.clamp_min(1e-300)) & ~done
        converged |= conv
        done |= conv | (eta * tn < 1e-14)
        if bool(done.all()):
            break
        trial = w + eta[:, None] * t
        trial = trial / trial.norm(dim=-1, keepdim=True)
        E_t, t_t, gn_t = value_and_tangent(trial)
        ok = (E_t >= E + 0.5 * eta * tn * tn) & ~done
        w = torch.where(ok[:, None], trial, w)
        E, t, gn = torch.where(ok, E_t, E), torch.where(ok[:, None], t_t, t), torch.where(ok, gn_t, gn)
        eta = torch.where(done, eta, torch.where(ok, eta * 1.25, eta * 0.5))
    return w, E, converged


def phi(x: torch.Tensor, activation: str) -> torch.Tensor:
    """φ(x) = σ′(x)/x for x > 0 (the theorem's monotonicity test)."""
    _, dsigma = get_activation(activation)
    return dsigma(x) / x


def phi_nondecreasing(activation: str, upper: float = math.sqrt(2.0), points: int = 2000) -> bool:
    """Whether φ is non-decreasing on (0, upper] (checked on a fine grid; upper = √2 is the largest s_g)."""
    x = torch.linspace(upper / points, upper, points, dtype=torch.float64)
    f = phi(x, activation)
    return bool((f[1:] >= f[:-1] - 1e-12 * f.abs().max()).all())


def predicted_profile(probs: torch.Tensor, activation: str) -> torch.Tensor:
    """Theorem 5's maximiser s* (M,) on Σ s² = 2: √2 at argmax p if φ is non-decreasing, else the KKT
    profile s_g = φ⁻¹(2λ/p_g) (0 where 2λ/p_g ≥ φ(0⁺)), λ by bisection so that Σ s_g² = 2.
    φ⁻¹ is taken by bisection on (0, √2] (φ strictly decreasing there)."""
    p = probs.to(torch.float64)
    if phi_nondecreasing(activation):
        s = torch.zeros_like(p)
        s[int(p.argmax())] = math.sqrt(2.0)
        return s
    hi_x = math.sqrt(2.0)
    phi0 = float(phi(torch.tensor(1e-12, dtype=torch.float64), activation))

    def inverse(level: torch.Tensor) -> torch.Tensor:      # φ⁻¹(level), elementwise, 0 above φ(0⁺)
        lo, hi = torch.full_like(level, 1e-12), torch.full_like(level, hi_x)
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            above = phi(mid, activation) > level            # φ decreasing: still left of the root
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        x = 0.5 * (lo + hi)
        return torch.where(level >= phi0, torch.zeros_like(x), x)

    lam_lo, lam_hi = 1e-12, 1e12                             # Σ s² decreases as λ grows
    for _ in range(200):
        lam = math.sqrt(lam_lo * lam_hi)
        if float((inverse(2 * lam / p) ** 2).sum()) > 2.0:
            lam_lo = lam
        else:
            lam_hi = lam
    return inverse(2 * math.sqrt(lam_lo * lam_hi) / p)
