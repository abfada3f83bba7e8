"""Stage II: the energy E(w) = ½‖Ỹᵀσ(Xw)‖², its gradient, and projected ascent to its local maxima
(docs/theory.md, Stage II; SPEC §3).

w: (…, kM), one operand block of M entries per operand. X is never formed: Xw = w[x_1] + w[M + x_2]
+ … is a gather, Xᵀg a scatter-add.

Ỹ follows `centring` (li2.task.Centring): "samples" (default) is the paper's Ỹ = P⊥₁Y over the
training rows, entries y_ic − n_c/n; "classes" is the reference loss's Ỹ = Y − 1/M. They coincide at
full data (n_c = n/M), so the full-data maxima (E* = M/4 for Z_M) are the same under both.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..activations import get_activation
from ..task import CENTRINGS, DEFAULT_CENTRING


def activation_fns(activation):
    """(σ, σ′) of a name, or a given pair as it is."""
    return get_activation(activation) if isinstance(activation, str) else activation


def energy_and_grad(w: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, order: int, activation="sqr",
                    need_grad: bool = True, centring: str = DEFAULT_CENTRING):
    """E(w) and ∇E(w) = Xᵀ[σ'(Xw) ⊙ ỸỸᵀσ(Xw)], batched over every leading axis of w.

    w: (…, kM); inputs: (n, k) training rows; labels: (n,) → E (…), ∇E (…, kM) (None if not need_grad).
    s = σ(Xw) with Xw = Σ_j w[jM + x_j] (gathers); u = Ỹᵀs by a scatter-add over labels:
      "samples":  u_c = Σ_{i: c_i = c} (s_i − s̄)  (Ỹ = Y − 1πᵀ, π_c = n_c/n);
                  (ỸỸᵀs)_i = u[c_i] − πᵀu;
      "classes":  u_c = Σ_{i: c_i = c} s_i − Σ_i s_i / M  (Ỹ = Y − 11ᵀ/M);
                  (ỸỸᵀs)_i = u[c_i] − mean(u) = u[c_i] since this u has mean 0.
    Internally the sample axis is put FIRST so gathers/scatters move contiguous rows of all
    restarts at once (index_add_ along the last axis is a slow strided loop).
    """
    if centring not in CENTRINGS:
        raise ValueError(f"unknown centring '{centring}': choose one of {', '.join(CENTRINGS)}")
    sigma, dsigma = activation_fns(activation)
    k = inputs.shape[1]
    wt = w.movedim(-1, 0)                                  # (kM, …)
    h = wt[inputs[:, 0]]
    for j in range(1, k):
        h = h + wt[j * order + inputs[:, j]]               # (n, …) = Xw
    s = sigma(h)
    samples = centring == "samples"
    if samples:
        s = s - s.mean(0, keepdim=True)                    # Ỹᵀs = YᵀP⊥₁s
    u = torch.zeros((order,) + s.shape[1:], dtype=s.dtype, device=s.device).index_add_(0, labels, s)
    if not samples:
        u = u - u.mean(0, keepdim=True)                    # Σ_c u_c = Σ_i s_i before centring
    E = 0.5 * (u * u).sum(0)
    if not need_grad:
        return E, None
    back = u[labels]                                       # (n, …): (Yu)_i
    if samples:                                            # − (1πᵀu)_i, π the label frequencies
        counts = torch.bincount(labels, minlength=order).to(u.dtype)
        back = back - torch.tensordot(counts / labels.shape[0], u, dims=([0], [0]))
    g = dsigma(h) * back                                   # (n, …)
    grad = torch.zeros_like(wt)
    for j in range(k):
        grad[j * order:(j + 1) * order].index_add_(0, inputs[:, j], g)
    return E, grad.movedim(0, -1)


def energy(w, inputs, labels, order, activation="sqr", centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """E(w) = ½‖Ỹᵀσ(Xw)‖²: w (…, kM) → (…)."""
    return energy_and_grad(w, inputs, labels, order, activation, need_grad=False, centring=centring)[0]


def energy_grad(w, inputs, labels, order, activation="sqr", centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """∇E(w) = Xᵀ[σ'(Xw) ⊙ ỸỸᵀσ(Xw)]: w (…, kM) → (…, kM)."""
    return energy_and_grad(w, inputs, labels, order, activation, centring=centring)[1]


def tangent(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Component of g tangent to the sphere through w: g − (g·w) w / ‖w‖²."""
    return g - (g * w).sum(-1, keepdim=True) / (w * w).sum(-1, keepdim=True) * w


@contextlib.contextmanager
def few_threads(work: int, limit: int = 1 << 18):
    """Run tiny batched problems (work = elements per op < limit) on ONE intra-op thread.

    Why: each ascent step is ~30 ops on ~10⁴–10⁵ elements; the OpenMP hand-off costs more than the
    op, and on a loaded machine spinning workers made Z23 take 6 s instead of 0.05 s. The process-wide
    setting is restored on exit.
    """
    old = torch.get_num_threads()
    if work >= limit or old == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class AscentResult:
    """Maxima of E on the sphere ‖w‖ = radius. w: (R, kM); energy, rel_grad, iterations, converged: (R,)."""

    w: torch.Tensor
    energy: torch.Tensor
    rel_grad: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def ascend_energy(inputs: torch.Tensor, labels: torch.Tensor, order: int, activation="sqr", restarts: int = 64,
                  seed: int = 0, w0: torch.Tensor | None = None, radius: float = 1.0, tol: float = 1e-6,
                  max_iter: int = 5000, dtype=torch.float64, centring: str = DEFAULT_CENTRING) -> AscentResult:
    """Projected gradient ascent of E on the sphere ‖w‖ = radius from R random starts, all batched.

    Step: w ← radius · normalise(w + η_r t) with t the tangent gradient and a per-restart step η_r.
    A trial is accepted if E_new ≥ E + ½ η‖t‖² (Armijo with c = ½: on a quadratic with curvature L
    this admits η ≤ 1/L, so even the stiffest direction contracts; a small c lets η creep up to the
    edge of stability 2/L, where that direction stops converging — measured: 5000 vs ~25 steps at
    Z23 full data). Accepted: η ×1.25; rejected: η ×½ and the restart stays put. One batched E/∇E
    evaluation per iteration, over the unfinished restarts only.
    Stopping: ‖t‖ ≤ tol · ‖∇E‖ (relative, scale-free: for σ = x² E is homogeneous of degree 4 so the
    radial part is 4E/radius, and the ratio is the sine of the angle between ∇E and the normal).
    A restart whose step collapses (η‖t‖ < 1e-14 radius) stops as not converged.
    What the sphere means: for homogeneous σ (sqr, relusqr: degree 4; relu: degree 2) maxima on any
    radius are the same directions up to scale. For silu/gelu E is not homogeneous and the maxima
    depend on `radius` (the scale weight decay would balance); radius 1 puts |Xw| ≲ √k, the
    near-quadratic regime.
    Starts: i.i.d. Gaussian directions (torch.Generator seeded by `seed`) unless w0 (R, kM) is given.
    E is the sample-centred (paper) or class-centred energy by `centring` (module docstring).
    """
    R = restarts if w0 is None else w0.shape[0]
    with few_threads(R * inputs.numel()):
        return _ascend(inputs, labels, order, activation, restarts, seed, w0, radius, tol, max_iter, dtype, centring)


def _ascend(inputs, labels, order, activation, restarts, seed, w0, radius, tol, max_iter, dtype,
            centring) -> AscentResult:
    k = inputs.shape[1]
    if w0 is None:
        gen = torch.Generator().manual_seed(int(seed))
        w0 = torch.randn(restarts, k * order, generator=gen, dtype=dtype)
    dev = inputs.device
    w = w0.to(device=dev, dtype=dtype)
    w = radius * w / w.norm(dim=-1, keepdim=True)
    E, g = energy_and_grad(w, inputs, labels, order, activation, centring=centring)
    t = tangent(w, g)
    tn = t.norm(dim=-1)
    eta = 0.1 * radius / tn.clamp_min(1e-300)            # first trial moves by ~0.1 rad
    R = w.shape[0]
    iters = torch.zeros(R, dtype=torch.long, device=dev)
    done = torch.zeros(R, dtype=torch.bool, device=dev)
    converged = torch.zeros(R, dtype=torch.bool, device=dev)
    for _ in range(max_iter + 1):
        gn = g.norm(dim=-1)
        conv = ((tn <= tol * gn) | (gn == 0)) & ~done
        converged |= conv
        done |= conv | (eta * tn < 1e-14 * radius)
        # Only unfinished restarts are evaluated: most converge within ~50 steps, and the slow tail
        # (restarts that started near a saddle) then costs almost nothing per step.
        act = (~done).nonzero().squeeze(1)
        if act.numel() == 0 or _ == max_iter:
            break
        iters[act] += 1
        ea, ta, tna = eta[act], t[act], tn[act]
        trial = w[act] + ea[:, None] * ta
        trial = radius * trial / trial.norm(dim=-1, keepdim=True)
        E_t, g_t = energy_and_grad(trial, inputs, labels, order, activation, centring=centring)
        ok = E_t >= E[act] + 0.5 * ea * tna * tna
        acc = act[ok]
        w[acc], E[acc], g[acc] = trial[ok], E_t[ok], g_t[ok]
        t[acc] = tangent(w[acc], g[acc])
        tn[acc] = t[acc].norm(dim=-1)
        eta[act] = torch.where(ok, ea * 1.25, ea * 0.5)
    rel = tn / g.norm(dim=-1).clamp_min(1e-300)
    return AscentResult(w, E, rel, iters, converged)
