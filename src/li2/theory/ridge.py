"""Stage I in closed form: the ridge top layer, backpropagated gradients G_F, and the Gram
statistics of the features (docs/theory.md, Stage I; SPEC §2, §8).

Conventions
-----------
* F: (B, n, K) or (n, K) hidden activations on the training rows; Y: (…, n, M) targets — one-hot or
  either centred form (every function centres them itself, so all three give the same result);
  λ: float or (B,) tensor.
* Two definitions of Ỹ and F̃, chosen by `centring` (li2.task.Centring; default "samples"):
    "samples"  the paper's: Ỹ = P⊥₁Y, F̃ = P⊥₁F with P⊥₁ = I_n − 11ᵀ/n over the n training rows
               (Ỹ entries y_ic − n_c/n). Loss ½‖P⊥₁(Y − FV)‖², so
               V_ridge = (F̃ᵀF̃ + λI)⁻¹F̃ᵀỸ, G_F = P⊥₁(Y − FV)Vᵀ,
               G_F(V_ridge) = λ(F̃F̃ᵀ + λI)⁻¹ỸỸᵀF̃(F̃ᵀF̃ + λI)⁻¹            (paper Eqs. 2, 4).
    "classes"  the reference code's loss, which li2 trains with: Ỹ = Y − 11ᵀ/M (each row over the
               M classes), F uncentred, outputs centred over classes: loss ½Σ_i‖P⊥_M o_i − ỹ_i‖², so
               V_ridge = (FᵀF + λI)⁻¹FᵀỸ, G_F = (Ỹ − FVP⊥_M)Vᵀ,
               G_F(V_ridge) = λ(FFᵀ + λI)⁻¹ỸỸᵀF(FᵀF + λI)⁻¹                   (SPEC §2, derived).
  At full data both Ỹ coincide (n_c/n = 1/M), and so do ỸỸᵀF and the energies; the ridge
  quantities still differ, since FᵀF = F̃ᵀF̃ + nμμᵀ (μ the sample mean of F's rows): the class form
  keeps the sample-mean direction of F inside the inverses.
  `--top-layer ridge` training uses "classes": it is the exact Stage-I limit of the run's own loss.
* Sign and scale of G_F: with the *summed* loss, G_F = −∂L/∂F, the direction F (and so W) moves
  under gradient descent. The trainer's mean loss (1/n) Σ_i ‖·‖² has gradient −(2/n) G_F.
* Class centring *(derived)*: ỸP⊥_M = Ỹ, so the ridge problem with P⊥_M inside the loss has the
  same minimiser as plain ridge (the V1 part of V only adds to the penalty). At V_ridge the output
  rows already sum to 0 (V_ridge 1 = (FᵀF+λI)⁻¹FᵀỸ1 = 0), so P⊥_M is a no-op there; it only
  matters for an arbitrary V (e.g. during Adam training).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import lapack

from ..task import CENTRINGS, DEFAULT_CENTRING

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


def spd_solve(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """X = A⁻¹B for symmetric positive definite A, by Cholesky: A (b, m, m) float64, overwritten;
    B (b, m, r) → (X (b, m, r), ok (b,) bool: False where A is not numerically positive definite, X
    then meaningless).

    On the CPU each matrix goes to LAPACK's dpotrf/dpotrs through scipy: at m = 1024 on one core
    4.4 + 3.4 ms against torch's 18.7 + 4.7 ms (the same factorisation; results agree to 1e-13)."""
    if A.device.type != "cpu":
        L, info = torch.linalg.cholesky_ex(A)
        return torch.cholesky_solve(B, L), info == 0
    xs, ok = [], []
    for a, rhs in zip(A.detach().numpy(), B.detach().to(torch.float64).numpy()):
        # a is C-ordered and symmetric: its transpose is the same matrix in the Fortran order LAPACK
        # works in, so the factorisation runs in place with no copy
        c, info = lapack.dpotrf(a.T, lower=False, overwrite_a=True, clean=False)
        x, solved = lapack.dpotrs(c, rhs, lower=False)
        xs.append(np.ascontiguousarray(x))
        ok.append(info == 0 and solved == 0)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ok)


def center_samples(A: torch.Tensor) -> torch.Tensor:
    """P⊥₁ over the sample axis: A (…, n, m) − its mean over the n rows."""
    return A - A.mean(dim=-2, keepdim=True)


def center_targets(Y: torch.Tensor, centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """Ỹ of Y (…, n, M): P⊥₁Y ("samples", mean over rows removed) or Y − row means ("classes")."""
    if centring == "samples":
        return center_samples(Y)
    if centring == "classes":
        return center_rows(Y)
    raise ValueError(f"unknown centring '{centring}': choose one of {', '.join(CENTRINGS)}")


def centred(F: torch.Tensor, Y: torch.Tensor, centring: str = DEFAULT_CENTRING):
    """(F, Ỹ) as the chosen definition uses them: "samples" → (F̃, P⊥₁Y); "classes" → (F, Y − row means)."""
    Yc = center_targets(Y, centring)
    return (center_samples(F) if centring == "samples" else F), Yc


def _ridge_parts(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype, centring: str):
    """(F, Y, V, Z) in the compute dtype, F and Y centred by `centring`; Z = (FFᵀ + λI)⁻¹Ỹ when the
    n×n side was solved, else None.

    Solves the SMALLER of the two SPD systems by Cholesky (never an SVD):
      K ≤ n:  V = (FᵀF + λI)⁻¹ FᵀỸ                 (K×K)
      K > n:  V = Fᵀ (FFᵀ + λI)⁻¹ Ỹ                 (n×n, push-through identity)
    (F here is F̃ for "samples".)
    """
    if compute_dtype is not None:
        F, Y = F.to(compute_dtype), Y.to(compute_dtype)
    F, Y = centred(F, Y, centring)
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


def ridge_top_layer(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64,
                    centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """V_ridge: (F̃ᵀF̃ + λI)⁻¹F̃ᵀỸ ("samples") or (FᵀF + λI)⁻¹FᵀỸ ("classes").
    F: (B, n, K) or (n, K); Y: (…, n, M); λ: float or (B,) → V: (…, K, M).

    Runs in `compute_dtype`, float64 by default: the Stage-I residual lives exactly in the
    small-eigenvalue part of the Gram, which float32 resolves only while λ is not tiny next to ‖F‖²
    (measured at M = 71, p = 0.4, K = 1024–4096, λ = 0.2: float32 is 1–2e-5 relative off and
    ~1.6× faster on CPU). Pass compute_dtype=None to stay in F's dtype. The result has F's dtype.
    """
    return _ridge_parts(F, Y, lam, compute_dtype, centring)[2].to(F.dtype)


def ridge_residual(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64,
                   centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """Ỹ − F̃ V_ridge = λ (F̃F̃ᵀ + λI)⁻¹ Ỹ ("samples"; F for "classes") *(derived)*: (…, n, M)."""
    Fc, Yc, V, Z = _ridge_parts(F, Y, lam, compute_dtype, centring)
    return _residual(Fc, Yc, V, Z, lam).to(F.dtype)


def center_rows(O: torch.Tensor) -> torch.Tensor:
    """P⊥1 applied to each row: O − mean over the last axis."""
    return O - O.mean(dim=-1, keepdim=True)


def backprop_gradient(F: torch.Tensor, V: torch.Tensor, Y: torch.Tensor,
                      centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """G_F = −∂L/∂F at any V: (…, n, K). F: (…, n, K), V: (…, K, M), Y: (…, n, M).

    "samples": P⊥₁(Y − FV)Vᵀ, L = ½‖P⊥₁(Y − FV)‖² (paper Eq. 2);
    "classes": (Ỹ − FVP⊥_M)Vᵀ, L = ½Σ_i‖P⊥_M o_i − ỹ_i‖² (the loss li2 trains with).
    """
    return center_targets(Y - F @ V, centring) @ V.mT


def backprop_gradient_at_ridge(F: torch.Tensor, Y: torch.Tensor, lam, compute_dtype=torch.float64,
                               centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """G_F at V = V_ridge = residual · V_ridgeᵀ: (…, n, K);
    λ(F̃F̃ᵀ + λI)⁻¹ỸỸᵀF̃(F̃ᵀF̃ + λI)⁻¹ ("samples", paper Eq. 4) or the same with F ("classes").

    By the envelope theorem this is also −∂/∂F of min_V [½‖F̃V − Ỹ‖² + ½λ‖V‖²] (with F for
    "classes", where P⊥_M is a no-op at V_ridge, see module docstring). Evaluated as R Vᵀ with
    R = ridge residual, never forming both inverses.
    """
    Fc, Yc, V, Z = _ridge_parts(F, Y, lam, compute_dtype, centring)
    return (_residual(Fc, Yc, V, Z, lam) @ V.mT).to(F.dtype)


def stage2_gradient(F: torch.Tensor, Y: torch.Tensor, lam, centring: str = DEFAULT_CENTRING) -> torch.Tensor:
    """Node-wise Stage-II form λ Ỹ Ỹᵀ F: (…, n, K), evaluated as λ Ỹ (ỸᵀF) (O(nMK), no n×n).
    Ỹ by `centring`; for "samples" ỸᵀF = ỸᵀF̃ (P⊥₁ is idempotent)."""
    Yc = center_targets(Y, centring)
    return _lam_view(lam, F.ndim, F) * (Yc @ (Yc.mT @ F))


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
