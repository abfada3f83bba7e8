"""Muon (SPEC §6): the Newton–Schulz iteration against the exact polar factor, the optimiser step
against a slow per-model re-implementation, and the model axis (stacked == one model at a time).

What NS5 promises. After X ← G/‖G‖_F every singular value s = σ_i/‖G‖_F goes through the same
scalar polynomial f = f₅∘…∘f₁, f_t(s) = a s + b s³ + c s⁵ with the reference's (a, b, c). Evaluated
on a fine grid (see `test_scalar_map_band`): for s ≥ 3·10⁻³, f(s) ∈ [0.8953, 1.1569]. So NS5 is
*not* the polar factor U Vᵀ — it is U diag(f(s)) Vᵀ with f(s) within ≈ ±16 % of 1 — and the
bands the tests use are SV_BAND = [0.89, 1.16] and a relative Frobenius distance ‖NS5(G) − UVᵀ‖_F /
‖UVᵀ‖_F ≤ REL_DIST = 0.16 (the largest |f(s) − 1|), for matrices whose normalised singular values
are all ≥ 3·10⁻³ (condition number ≤ ~20 at the sizes below).
"""
import numpy as np
import pytest
import torch

import li2
from li2.engine.optim import NS_COEFFS, Optimizer, newton_schulz5

SV_BAND = (0.89, 1.16)
REL_DIST = 0.16
MIN_NORMALISED_SV = 3e-3


def scalar_map(s: np.ndarray) -> np.ndarray:
    for a, b, c in NS_COEFFS:
        s = a * s + b * s**3 + c * s**5
    return s


def test_scalar_map_band():
    s = np.logspace(np.log10(MIN_NORMALISED_SV), 0, 20_000)
    f = scalar_map(s)
    assert SV_BAND[0] <= f.min() and f.max() <= SV_BAND[1]
    assert np.abs(f - 1).max() <= REL_DIST


def well_conditioned(batch: int, rows: int, cols: int, seed: int, cond: float = 20.0) -> torch.Tensor:
    """Random U diag(σ) Vᵀ with σ log-uniform in [1/cond, 1] (float64)."""
    gen = torch.Generator().manual_seed(seed)
    r = min(rows, cols)
    U, _ = torch.linalg.qr(torch.randn(batch, rows, r, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(batch, cols, r, generator=gen, dtype=torch.float64))
    sig = cond ** -torch.rand(batch, r, generator=gen, dtype=torch.float64)
    return 3.7 * (U * sig[:, None, :]) @ V.transpose(1, 2)


@pytest.mark.parametrize("shape", [(1, 40, 64), (1, 64, 40), (3, 142, 120), (3, 120, 142), (2, 48, 48)])
def test_ns5_against_polar_factor(shape):
    G = well_conditioned(*shape, seed=sum(shape))
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    assert (S / G.norm(dim=(1, 2), keepdim=True)[..., 0]).min() >= MIN_NORMALISED_SV   # precondition holds
    polar = U @ Vh
    X = newton_schulz5(G)
    assert X.shape == G.shape
    sv = torch.linalg.svdvals(X)
    assert sv.min() >= SV_BAND[0] and sv.max() <= SV_BAND[1], (sv.min(), sv.max())
    rel = (X - polar).norm(dim=(1, 2)) / polar.norm(dim=(1, 2))
    assert rel.max() <= REL_DIST, rel
    # NS5 keeps the singular vectors: X = U diag(f(s)) Vᵀ with f the scalar map
    s = (S / G.norm(dim=(1, 2))[:, None]).numpy()
    expected = U @ torch.diag_embed(torch.as_tensor(scalar_map(s))) @ Vh
    torch.testing.assert_close(X, expected, rtol=1e-6, atol=1e-6)


def test_ns5_batched_equals_one_by_one_and_is_scale_free():
    G = well_conditioned(4, 30, 50, seed=1)
    X = newton_schulz5(G)
    for b in range(4):
        torch.testing.assert_close(X[b:b + 1], newton_schulz5(G[b:b + 1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(newton_schulz5(1e3 * G), X, rtol=1e-6, atol=1e-6)


# -- the optimiser step -------------------------------------------------------------------------------

def slow_ns5(g: torch.Tensor) -> torch.Tensor:
    """One matrix, written out as SPEC §6 states it (float64)."""
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.linalg.norm(x) + 1e-7)
    for a, b, c in NS_COEFFS:
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tall else x


def test_muon_step_matches_slow_per_model_reimplementation():
    gen = torch.Generator().manual_seed(3)
    B, lrs, wds, mlrs = 3, [1e-3, 2e-3, 5e-3], [0.0, 1e-3, 5e-2], [0.02, 0.05, 0.1]
    params = {"W": torch.randn(B, 14, 9, generator=gen, dtype=torch.float64),
              "V": torch.randn(B, 9, 7, generator=gen, dtype=torch.float64)}
    grads_seq = [{k: torch.randn_like(v) for k, v in params.items()} for _ in range(5)]
    opt = Optimizer("muon", params, torch.tensor(lrs, dtype=torch.float64), torch.tensor(wds, dtype=torch.float64),
                    muon_lr=torch.tensor(mlrs, dtype=torch.float64))
    refs = []
    for b in range(B):
        W = params["W"][b].clone()
        V = params["V"][b].clone().requires_grad_(True)
        adam = torch.optim.Adam([V], lr=lrs[b], weight_decay=wds[b])   # coupled L2, as li2's adam
        refs.append({"W": W, "V": V, "m": torch.zeros_like(W), "adam": adam})
    for grads in grads_seq:
        opt.step(params, grads)
        for b, ref in enumerate(refs):
            ref["m"] = 0.99 * ref["m"] + 0.01 * grads["W"][b]
            ref["W"] = ref["W"] * (1 - mlrs[b] * wds[b]) - mlrs[b] * slow_ns5(ref["m"])
            ref["V"].grad = grads["V"][b].clone()
            ref["adam"].step()
    for b, ref in enumerate(refs):
        torch.testing.assert_close(params["W"][b], ref["W"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(params["V"][b], ref["V"].detach(), rtol=1e-10, atol=1e-12)


def test_muon_lr_defaults_to_lr_and_frozen_models_stay_put():
    gen = torch.Generator().manual_seed(4)
    params = {"W": torch.randn(2, 6, 5, generator=gen, dtype=torch.float64),
              "V": torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)}
    before = {k: v.clone() for k, v in params.items()}
    opt = Optimizer("muon", params, torch.tensor([0.01, 0.01], dtype=torch.float64),
                    torch.tensor([0.0, 0.0], dtype=torch.float64))
    g = {k: torch.randn_like(v) for k, v in params.items()}
    opt.step(params, g, active=torch.tensor([True, False]))
    expected_W = before["W"][0] - 0.01 * slow_ns5(0.01 * g["W"][0])
    torch.testing.assert_close(params["W"][0], expected_W, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(params["W"][1], before["W"][1], rtol=0, atol=0)
    torch.testing.assert_close(params["V"][1], before["V"][1], rtol=0, atol=0)


def test_muon_training_stacked_equals_one_model_at_a_time():
    """The model axis: a stack of seeds trains exactly like each seed alone (float64)."""
    common = dict(group="Z7", train_ratio=0.6, width=12, optimizer="muon", muon_lr=0.05, lr=0.01, steps=30,
                  eval_every=5, early_stop=False, diagnostics="off", dtype="float64", write=False, figures=False)
    stacked = li2.train(seeds=[0, 1, 2], execution="stack", **common)
    for seed in (0, 1, 2):
        alone = li2.train(seeds=[seed], execution="sequential", **common)
        a = alone.metrics.drop(columns=["wall_seconds"]).reset_index(drop=True)
        s = stacked.metrics[stacked.metrics.seed == seed].drop(columns=["wall_seconds"]).reset_index(drop=True)
        np.testing.assert_allclose(s.to_numpy(float), a.to_numpy(float), rtol=1e-9, atol=1e-12)
        for k in ("W", "V"):
            torch.testing.assert_close(stacked.params[seed][k], alone.params[seed][k], rtol=1e-9, atol=1e-12)
