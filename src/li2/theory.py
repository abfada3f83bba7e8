"""The Li2 theory in closed form: ridge top layer (Stage I), backpropagated gradients,
the Stage-II energy E(w) and its maxima (SPEC §2, §3, §8).

Conventions used throughout
---------------------------
* F: (B, n, K) or (n, K) hidden activations on the training rows; Ỹ: (…, n, M) centred targets
  (rows sum to 0, `task.centred_targets`); λ: float or (B,) tensor.
* Sign and scale of G_F: with the *summed* loss L = ½ Σ_i ‖P⊥1 o_i − ỹ_i‖²,
  G_F = −∂L/∂F = P⊥1(Ỹ − F V) Vᵀ, i.e. the direction F (and so W) moves under gradient descent.
  The trainer's mean loss (1/n) Σ_i ‖·‖² has gradient −(2/n) G_F.
* Centring *(derived)*: ỸP⊥1 = Ỹ, so the ridge problem with P⊥1 inside the loss has the same
  minimiser as plain ridge (the V1 part of V only adds to the penalty). At V_ridge the output rows
  already sum to 0 (V_ridge 1 = (FᵀF+λI)⁻¹FᵀỸ1 = 0), so P⊥1 is a no-op there; it only matters for
  an arbitrary V (e.g. during Adam training).
* Energy E(w) = ½‖Ỹᵀσ(Xw)‖² for w: (…, kM), one operand block of M entries per operand. X is never
  formed: Xw = w[x_1] + w[M + x_2] + … is a gather, Xᵀg a scatter-add.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .activations import get_activation
from .task import make_task, split

# ---------------------------------------------------------------------------------------------
# Stage I: ridge top layer and backpropagated gradients (SPEC §2)
# ---------------------------------------------------------------------------------------------


def _lam_view(lam, ndim: int, like: torch.Tensor):
    """λ (float or (B,) tensor) shaped to broadcast against an ndim-dimensional (B, …) tensor."""
    if isinstance(lam, torch.Tensor) and lam.ndim > 0:
        return lam.to(like).reshape(lam.shape + (1,) * (ndim - lam.ndim))
    return float(lam)


def _shifted_cholesky(A: torch.Tensor, lam) -> torch.Tensor:
    """Cholesky factor of A + λI (A: (…, m, m), modified in place), with a clear error if it fails."""
    diag = A.diagonal(dim1=-2, dim2=-1)
    diag += _lam_view(lam, A.ndim - 1, A)
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info != 0).any()):
        raise ValueError(
            "ridge solve failed: FᵀF + λI is not positive definite (λ too small for this F and precision); use λ > 0"
        )
    return L


def _ridge_parts(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype):
    """(F, Y, V, Z) in the compute dtype; Z = (FFᵀ + λI)⁻¹Ỹ when the n×n side was solved, else None.

    Solves the SMALLER of the two SPD systems by Cholesky (never an SVD):
      K ≤ n:  V = (FᵀF + λI)⁻¹ FᵀỸ                 (K×K)
      K > n:  V = Fᵀ (FFᵀ + λI)⁻¹ Ỹ                 (n×n, push-through identity)
    """
    if compute_dtype is not None:
        F, Y = F.to(compute_dtype), Y.to(compute_dtype)
    n, K = F.shape[-2], F.shape[-1]
    if K <= n:
        L = _shifted_cholesky(F.mT @ F, lam)
        return F, Y, torch.cholesky_solve(F.mT @ Y, L), None
    L = _shifted_cholesky(F @ F.mT, lam)
    Z = torch.cholesky_solve(Y, L)                        # broadcasts a shared Y over models
    return F, Y, F.mT @ Z, Z


def _residual(F, Y, V, Z, lam):
    """Ỹ − FV; on the n×n branch the closed form λZ (no cancellation when the residual is small)."""
    if Z is None:
        return Y - F @ V
    return _lam_view(lam, Z.ndim, Z) * Z


def ridge_top_layer(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64) -> torch.Tensor:
    """V = (FᵀF + λI)⁻¹ FᵀỸ.  F: (B, n, K) or (n, K); Y: (…, n, M); λ: float or (B,) → V: (…, K, M).

    Runs in `compute_dtype`, float64 by default: the Stage-I residual lives exactly in the
    small-eigenvalue part of the Gram, which float32 resolves only while λ is not tiny next to ‖F‖²
    (measured at M = 71, p = 0.4, K = 1024–4096, λ = 0.2: float32 is 1–2e-5 relative off and
    ~1.6× faster on CPU). Pass compute_dtype=None to stay in F's dtype. The result has F's dtype.
    """
    return _ridge_parts(F, Y, lam, compute_dtype)[2].to(F.dtype)


def ridge_residual(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64) -> torch.Tensor:
    """Ỹ − F V_ridge = λ (FFᵀ + λI)⁻¹ Ỹ  *(derived)*: (…, n, M)."""
    Fc, Yc, V, Z = _ridge_parts(F, Y, lam, compute_dtype)
    return _residual(Fc, Yc, V, Z, lam).to(F.dtype)


def center_rows(O: torch.Tensor) -> torch.Tensor:
    """P⊥1 applied to each row: O − mean over the last axis."""
    return O - O.mean(dim=-1, keepdim=True)


def backprop_gradient(F: torch.Tensor, V: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """G_F = P⊥1(Ỹ − F V) Vᵀ: (…, n, K), the NEGATIVE gradient of ½ Σ_i ‖P⊥1 o_i − ỹ_i‖² wrt F.

    F: (…, n, K), V: (…, K, M), Y: (…, n, M) with rows summing to 0.
    """
    return center_rows(Y - F @ V) @ V.mT


def backprop_gradient_at_ridge(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64) -> torch.Tensor:
    """G_F at V = V_ridge: λ (FFᵀ + λI)⁻¹ Ỹ Ỹᵀ F (FᵀF + λI)⁻¹ = residual · V_ridgeᵀ: (…, n, K).

    By the envelope theorem this is also −∂/∂F of min_V [½‖FV − Ỹ‖² + ½λ‖V‖²] (P⊥1 is a no-op
    at V_ridge, see module docstring). Evaluated as R Vᵀ with R = ridge residual, never forming
    both inverses.
    """
    Fc, Yc, V, Z = _ridge_parts(F, Y, lam, compute_dtype)
    return (_residual(Fc, Yc, V, Z, lam) @ V.mT).to(F.dtype)


def stage2_gradient(F: torch.Tensor, Y: torch.Tensor, lam) -> torch.Tensor:
    """Node-wise Stage-II form λ Ỹ Ỹᵀ F: (…, n, K), evaluated as λ Ỹ (ỸᵀF) (O(nMK), no n×n)."""
    return _lam_view(lam, F.ndim, F) * (Y @ (Y.mT @ F))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per model: a, b (B, …) → (B,) (or a scalar for unbatched 2-D inputs)."""
    if a.ndim <= 2:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
        squeeze = True
    else:
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        squeeze = False
    c = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(torch.finfo(a.dtype).tiny)
    return c[0] if squeeze else c


def gram_statistics(F: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference diagnostics of the features (SPEC §8), per model. F: (B, n, K) or (n, K).

    * diag / offdiag: mean |diagonal| and mean |off-diagonal| of F̃ᵀF̃ (F̃ = F centred over samples).
    * ntk_distance: ‖FFᵀ − (aI + b11ᵀ)‖_F / ‖FFᵀ‖_F for the best a, b. Computed WITHOUT the n×n matrix:
      the projection onto span{I, 11ᵀ} needs only ⟨FFᵀ, I⟩ = ‖F‖², ⟨FFᵀ, 11ᵀ⟩ = ‖Fᵀ1‖² and
      ‖FFᵀ‖² = ‖FᵀF‖² (the K×K Gram, or the n×n one when n < K).
    Cost: one Gram on the smaller side, O(n K min(n, K)).
    """
    Fd = F.to(torch.float64)
    n, K = Fd.shape[-2], Fd.shape[-1]
    Fc = Fd - Fd.mean(dim=-2, keepdim=True)
    G = Fc.mT @ Fc
    d = G.diagonal(dim1=-2, dim2=-1).abs()
    diag = d.mean(-1)
    offdiag = (G.abs().sum((-2, -1)) - d.sum(-1)) / max(K * (K - 1), 1)
    small = Fd.mT @ Fd if K <= n else Fd @ Fd.mT
    gg = (small * small).sum((-2, -1))                   # ⟨FFᵀ, FFᵀ⟩
    gi = (Fd * Fd).sum((-2, -1))                         # ⟨FFᵀ, I⟩
    g1 = (Fd.sum(-2) ** 2).sum(-1)                       # ⟨FFᵀ, 11ᵀ⟩
    # normal equations of min ‖G − aI − b11ᵀ‖ with ⟨I,I⟩ = n, ⟨I,11ᵀ⟩ = n, ⟨11ᵀ,11ᵀ⟩ = n²
    det = n * n * n - n * n
    a = (n * n * gi - n * g1) / det if det else gi / n
    b = (n * g1 - n * gi) / det if det else torch.zeros_like(gi)
    resid2 = gg - a * gi - b * g1                        # ‖G‖² − ⟨G, proj G⟩ (Pythagoras)
    dist = resid2.clamp_min(0).sqrt() / gg.sqrt().clamp_min(1e-300)
    return {"diag": diag, "offdiag": offdiag, "ntk_distance": dist, "ntk_a": a, "ntk_b": b}


# ---------------------------------------------------------------------------------------------
# Stage II: the energy E(w) = ½‖Ỹᵀσ(Xw)‖² (SPEC §3)
# ---------------------------------------------------------------------------------------------


def _act(activation):
    return get_activation(activation) if isinstance(activation, str) else activation


def _flat_index(inputs: torch.Tensor, order: int) -> torch.Tensor:
    """Row indices of X's nonzeros: operand j of sample i sits at column j·M + x_j. (n, k)."""
    k = inputs.shape[1]
    return inputs + order * torch.arange(k, device=inputs.device)


def energy_and_grad(w: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, order: int, activation="sqr",
                    need_grad: bool = True):
    """E(w) and ∇E(w) = Xᵀ[σ'(Xw) ⊙ ỸỸᵀσ(Xw)], batched over every leading axis of w.

    w: (…, kM); inputs: (n, k) training rows; labels: (n,) → E (…), ∇E (…, kM) (None if not need_grad).
    s = σ(Xw) with Xw = Σ_j w[jM + x_j] (gathers); u = Ỹᵀs, u_c = Σ_{i: c_i = c} s_i − Σ_i s_i / M
    (scatter-add over labels, then centring over c); (ỸỸᵀs)_i = u[c_i] − mean(u) = u[c_i] since the
    centred u has mean 0.
    Internally the sample axis is put FIRST so gathers/scatters move contiguous rows of all
    restarts at once (index_add_ along the last axis is a slow strided loop).
    """
    sigma, dsigma = _act(activation)
    k = inputs.shape[1]
    wt = w.movedim(-1, 0)                                  # (kM, …)
    h = wt[inputs[:, 0]]
    for j in range(1, k):
        h = h + wt[j * order + inputs[:, j]]               # (n, …) = Xw
    s = sigma(h)
    u = torch.zeros((order,) + s.shape[1:], dtype=s.dtype, device=s.device).index_add_(0, labels, s)
    u = u - u.mean(0, keepdim=True)                        # Σ_c u_c = Σ_i s_i before centring
    E = 0.5 * (u * u).sum(0)
    if not need_grad:
        return E, None
    g = dsigma(h) * u[labels]                              # (n, …); mean(u) is now exactly 0 up to rounding
    grad = torch.zeros_like(wt)
    for j in range(k):
        grad[j * order:(j + 1) * order].index_add_(0, inputs[:, j], g)
    return E, grad.movedim(0, -1)


def energy(w, inputs, labels, order, activation="sqr") -> torch.Tensor:
    """E(w) = ½‖Ỹᵀσ(Xw)‖²: w (…, kM) → (…)."""
    return energy_and_grad(w, inputs, labels, order, activation, need_grad=False)[0]


def energy_grad(w, inputs, labels, order, activation="sqr") -> torch.Tensor:
    """∇E(w) = Xᵀ[σ'(Xw) ⊙ ỸỸᵀσ(Xw)]: w (…, kM) → (…, kM)."""
    return energy_and_grad(w, inputs, labels, order, activation)[1]


def tangent(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Component of g tangent to the sphere through w: g − (g·w) w / ‖w‖²."""
    return g - (g * w).sum(-1, keepdim=True) / (w * w).sum(-1, keepdim=True) * w


@contextlib.contextmanager
def _few_threads(work: int, limit: int = 1 << 18):
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
                  max_iter: int = 5000, dtype=torch.float64) -> AscentResult:
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
    """
    R = restarts if w0 is None else w0.shape[0]
    with _few_threads(R * inputs.numel()):
        return _ascend(inputs, labels, order, activation, restarts, seed, w0, radius, tol, max_iter, dtype)


def _ascend(inputs, labels, order, activation, restarts, seed, w0, radius, tol, max_iter, dtype) -> AscentResult:
    k = inputs.shape[1]
    if w0 is None:
        gen = torch.Generator().manual_seed(int(seed))
        w0 = torch.randn(restarts, k * order, generator=gen, dtype=dtype)
    dev = inputs.device
    w = w0.to(device=dev, dtype=dtype)
    w = radius * w / w.norm(dim=-1, keepdim=True)
    E, g = energy_and_grad(w, inputs, labels, order, activation)
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
        E_t, g_t = energy_and_grad(trial, inputs, labels, order, activation)
        ok = E_t >= E[act] + 0.5 * ea * tna * tna
        acc = act[ok]
        w[acc], E[acc], g[acc] = trial[ok], E_t[ok], g_t[ok]
        t[acc] = tangent(w[acc], g[acc])
        tn[acc] = t[acc].norm(dim=-1)
        eta[act] = torch.where(ok, ea * 1.25, ea * 0.5)
    rel = tn / g.norm(dim=-1).clamp_min(1e-300)
    return AscentResult(w, E, rel, iters, converged)


# ---------------------------------------------------------------------------------------------
# Classifying maxima (SPEC §3, §8)
# ---------------------------------------------------------------------------------------------

IRREP, MEMORIZATION, OTHER = "irrep", "memorization", "other"


def participation_ratio(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(Σ a)² / Σ a² along `dim` for a ≥ 0: the effective number of nonzero entries (0 if a ≡ 0)."""
    return a.sum(dim) ** 2 / (a * a).sum(dim).clamp_min(1e-300)


def activation_spread(w: torch.Tensor, inputs: torch.Tensor, order: int, activation="sqr") -> torch.Tensor:
    """How many operand values carry a feature's activation: w (R, kM) → (R,), in [1, M].

    a_i = (s_i − mean s)², s = σ(Xw) on the training rows (centred because Ỹᵀ cannot see a constant).
    For each operand position j the mass is summed per value, m_j(x) = Σ_{i: x_ij = x} a_i, and its
    participation ratio PR_j = (Σ m_j)² / Σ m_j² counts the values holding it; the result is
    min_j PR_j. A feature that fires on one row (or column) of the table scores ≈ 1; a frequency
    feature ≈ 0.7 M at full data. Measuring per operand value rather than per sample keeps the scale
    independent of n: a row of the table has ≈ n/M training samples at any ratio.
    """
    sigma, _ = _act(activation)
    wt = w.movedim(-1, 0)                                  # (kM, R): samples first, as in energy_and_grad
    k = inputs.shape[1]
    h = wt[inputs[:, 0]]
    for j in range(1, k):
        h = h + wt[j * order + inputs[:, j]]
    c = sigma(h)
    c = c - c.mean(0, keepdim=True)
    a = c * c                                              # (n, R)
    spread = None
    for j in range(k):
        m = torch.zeros((order,) + a.shape[1:], dtype=a.dtype, device=a.device).index_add_(0, inputs[:, j], a)
        pr = participation_ratio(m, dim=0)
        spread = pr if spread is None else torch.minimum(spread, pr)
    return spread


def classify_maxima(w: torch.Tensor, components, inputs: torch.Tensor, order: int, activation="sqr",
                    irrep_threshold: float = 0.9, memo_threshold: float = 2.0) -> dict:
    """Label maxima w (R, kM) as "irrep", "memorization" or "other".

    * irrep-like: one NON-trivial isotypic component holds ≥ irrep_threshold of EACH operand block's
      ‖·‖² (the same component for all blocks). The trivial component is excluded: a constant feature
      is invisible through Ỹ (Ỹᵀ1 = 0) and cannot be a maximum with E > 0.
    * memorisation-like (only if not irrep-like): the activation is concentrated on few training
      samples, namely those of fewer than memo_threshold values of one operand (a row or column of
      the table): `activation_spread` < memo_threshold (default 2).
      Measured (σ = x², Z23/Z41/Z71, p = 0.2–0.9): maxima with w on one or two coordinates (the
      memorisation maxima ascent finds at small p) score 1.0–1.6; maxima ≥ 70% one frequency score
      ≥ 2.3 (≈ 0.7 M at full data). The two-element point (e_a0 + e_b0)/√2 scores 2.7 at full data
      (it is not a maximum there).
    * otherwise "other".
    components: an IsotypicComponents or None (non-groups: irrep test skipped).
    Returns {"labels": list[str], "dominant": (R,) long (−1 without components), "fraction": (R,)
    the dominant component's SMALLEST per-block fraction (NaN without components), "spectrum":
    (R, C) block-averaged fractions or None, "spread": (R,) activation_spread}.
    """
    from .spectra import node_spectrum

    R = w.shape[0]
    k = inputs.shape[1]
    spread = activation_spread(w, inputs, order, activation)
    if components is not None:
        frac = node_spectrum(w.mT, components, operands=k)     # (k, R, C)
        mean = frac.mean(0)                                    # (R, C)
        dom = mean.argmax(-1)
        dom_frac = frac.gather(-1, dom.view(1, R, 1).expand(k, R, 1)).squeeze(-1).min(0).values
        irrep = (dom_frac >= irrep_threshold) & (dom != 0)
    else:
        mean, dom = None, torch.full((R,), -1, dtype=torch.long)
        dom_frac = torch.full((R,), float("nan"), dtype=w.dtype)
        irrep = torch.zeros(R, dtype=torch.bool)
    memo = ~irrep & (spread < memo_threshold)
    labels = [IRREP if i else (MEMORIZATION if m else OTHER) for i, m in zip(irrep.tolist(), memo.tolist())]
    return {"labels": labels, "dominant": dom, "fraction": dom_frac, "spectrum": mean, "spread": spread}


def _predicted_max_energy(group, train_ratio: float, activation: str, operands: int):
    """E* for cyclic groups, σ = x², full data, 2 operands *(derived)*; None otherwise.

    Odd M: every frequency gives M/4 (SPEC §3). Even M: the real sign character (k = M/2) is a
    1-dim REAL irrep, and w = [(−1)^a; (−1)^b]/√(2M) reaches M/2, so E* = M/2 there.
    """
    if activation != "sqr" or operands != 2 or train_ratio < 1.0 or not group.is_group:
        return None
    m = group.order
    # cyclic ⇔ some element has order M: walk powers of each element (O(M²), M is small)
    table = group.table
    e = next((a for a in range(m) if np.array_equal(table[a], np.arange(m))), None)
    if e is None:
        return None
    for g in range(m):
        x, n = g, 1
        while x != e:
            x, n = int(table[x, g]), n + 1
        if n == m:
            return m / 4.0 if m % 2 else m / 2.0
    return None


def energy_landscape(group, train_ratio: float, activation: str = "sqr", restarts: int = 64, seed: int = 0,
                     operands: int = 2, tol: float = 1e-6, max_iter: int = 5000, radius: float = 1.0,
                     irrep_threshold: float = 0.9, memo_threshold: float = 2.0, components=None,
                     return_maxima: bool = False) -> dict:
    """Find maxima of E by ascent from `restarts` random starts on the training rows
    split(N, train_ratio, seed) and classify them. Returns a JSON-ready dict.

    Keys: group, order, operands, activation, train_ratio, n_train, restarts, iterations (max over
    restarts), converged (count), max_energy, mean_energy, predicted_max_energy, irrep_fraction,
    memorization_fraction, other_fraction, component_histogram (name → count among irrep-like maxima),
    component_names, and per maximum: energies, labels, dominant_fraction (smallest per-block fraction
    of the dominant component), activation_spread, spectra (R × C block-averaged fractions, or None);
    note (set for non-groups). Starts are seeded by seed + 1 (the split by seed).
    With return_maxima the maxima vectors are added as "maxima" (R × kM lists).
    """
    task = make_task(group, operands)
    train_idx, _ = split(task.num_samples, train_ratio, seed)
    inputs, labels = task.inputs[train_idx], task.labels[train_idx]
    note = None
    if components is None and group.is_group:
        from .representations import isotypic_components
        components = isotypic_components(group)
    if not group.is_group:
        components = None
        note = "not a group: maxima are not classified by irreps (only memorisation vs other)"
    with _few_threads(restarts * inputs.numel()):
        res = ascend_energy(inputs, labels, group.order, activation, restarts, seed=seed + 1, radius=radius,
                            tol=tol, max_iter=max_iter)
        cls = classify_maxima(res.w, components, inputs, group.order, activation, irrep_threshold, memo_threshold)
    labs = cls["labels"]
    hist: dict[str, int] = {}
    if components is not None:
        for lab, d in zip(labs, cls["dominant"].tolist()):
            if lab == IRREP:
                name = components.names[d]
                hist[name] = hist.get(name, 0) + 1
    R = len(labs)
    out = {
        "group": group.name,
        "order": group.order,
        "operands": operands,
        "activation": activation,
        "train_ratio": train_ratio,
        "n_train": int(labels.shape[0]),
        "restarts": R,
        "iterations": int(res.iterations.max()),
        "converged": int(res.converged.sum()),
        "max_energy": float(res.energy.max()),
        "mean_energy": float(res.energy.mean()),
        "predicted_max_energy": _predicted_max_energy(group, train_ratio, activation, operands),
        "irrep_fraction": labs.count(IRREP) / R,
        "memorization_fraction": labs.count(MEMORIZATION) / R,
        "other_fraction": labs.count(OTHER) / R,
        "component_histogram": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        "component_names": list(components.names) if components is not None else None,
        "energies": res.energy.tolist(),
        "labels": labs,
        "dominant_fraction": [None if math.isnan(x) else x for x in cls["fraction"].tolist()],
        "activation_spread": cls["spread"].tolist(),
        "spectra": cls["spectrum"].tolist() if cls["spectrum"] is not None else None,
        "note": note,
    }
    if return_maxima:
        out["maxima"] = res.w.tolist()
    return out


def energy_figure(result: dict, path_png) -> None:
    """Two panels from an `energy_landscape` result: (left) maxima × components heat map of the
    block-averaged spectral fractions, rows sorted by energy (highest on top), with each row's label;
    (right) histogram of the maxima's energies with E* (predicted_max_energy) marked if known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    E = np.asarray(result["energies"])
    order = np.argsort(-E)
    spectra = result.get("spectra")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
    ax = axes[0]
    if spectra is not None:
        S = np.asarray(spectra)[order]
        im = ax.imshow(S, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        names = result["component_names"]
        step = max(1, len(names) // 16)
        ax.set_xticks(range(0, len(names), step))
        ax.set_xticklabels(names[::step], rotation=60, fontsize=7)
        tags = [result["labels"][i][0].upper() for i in order]  # I / M / O per row
        step_r = max(1, len(tags) // 32)
        ax.set_yticks(range(0, len(tags), step_r))
        ax.set_yticklabels([f"{tags[i]} {E[order[i]]:.3g}" for i in range(0, len(tags), step_r)], fontsize=6)
        ax.set_xlabel("isotypic component")
        ax.set_ylabel("maximum (label, energy), sorted by E")
        fig.colorbar(im, ax=ax, label="fraction of ‖w‖² (block mean)")
    else:
        ax.text(0.5, 0.5, result.get("note") or "no spectra", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    ax.set_title(f"{result['group']}  p={result['train_ratio']:g}  irrep {result['irrep_fraction']:.0%}")
    ax = axes[1]
    E_star = result.get("predicted_max_energy")
    # range padded by 5% of the scale, so energies equal to 1e-12 do not blow up into an offset axis
    lo, hi = float(E.min()), float(E.max())
    if E_star is not None:
        lo, hi = min(lo, E_star), max(hi, E_star)
    pad = 0.05 * max(hi - lo, abs(hi), 1e-12)
    ax.hist(E, bins=min(30, max(5, len(E) // 2)), range=(lo - pad, hi + pad), color="tab:blue", alpha=0.8)
    ax.ticklabel_format(axis="x", useOffset=False)
    if E_star is not None:
        ax.axvline(E_star, color="tab:red", ls="--", label=f"E* = {E_star:g} (theory)")
        ax.legend()
    ax.set_xlabel("energy E at maximum")
    ax.set_ylabel("count")
    ax.set_title(f"{result['restarts']} restarts, {result['n_train']} training samples")
    fig.tight_layout()
    fig.savefig(path_png, dpi=120)
    plt.close(fig)
