"""theory.py: every fast path against a slow, obvious one (SPEC §2, §3)."""
import math

import numpy as np
import pytest
import torch
from reference import one_hot_inputs

from li2.activations import ACTIVATIONS, get_activation
from li2.algebra.groups import Group, get_group
from li2.algebra.representations import isotypic_components
from li2.task import centred_targets, make_task, split
from li2.theory import (
    activation_spread,
    ascend_energy,
    backprop_gradient,
    backprop_gradient_at_ridge,
    classify_maxima,
    cosine,
    energy,
    energy_and_grad,
    energy_grad,
    energy_landscape,
    gram_statistics,
    ridge_residual,
    ridge_top_layer,
    spd_solve,
    stage2_gradient,
    tangent,
)
from li2.views import energy_figure

D = torch.float64


def _rows(group="Z7", ratio=0.6, operands=2, seed=0):
    task = make_task(get_group(group), operands)
    idx, _ = split(task.num_samples, ratio, seed)
    return task.inputs[idx], task.labels[idx], task.order


def _features(B=3, n=20, K=8, M=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(B, n, K, generator=g, dtype=D)
    Y = centred_targets(torch.randint(0, M, (n,), generator=g), M, D)
    return F, Y


# ----------------------------------------------------------------------------- ridge and G_F
# Every instrument under both definitions of Ỹ, F̃ (li2.task.Centring) against dense matrices:
#   samples  Ỹ = P⊥₁Y, F̃ = P⊥₁F with the explicit n×n P⊥₁ = I − 11ᵀ/n (the paper);
#   classes  Ỹ = Y − 11ᵀ/M, F uncentred (the reference loss li2 trains with).
CENTRINGS = ("samples", "classes")


def _dense(F, Y, centring):
    """(F as used, Ỹ as used) with explicit projector matrices: the slow, obvious reference."""
    n = F.shape[-2]
    if centring == "samples":
        P = torch.eye(n, dtype=D) - torch.ones(n, n, dtype=D) / n
        return P @ F, P @ Y
    M = Y.shape[-1]
    return F, Y @ (torch.eye(M, dtype=D) - torch.ones(M, M, dtype=D) / M)


@pytest.mark.parametrize("centring", CENTRINGS)
@pytest.mark.parametrize("K", [6, 30])          # K ≤ n: K×K Cholesky; K > n: n×n push-through branch
@pytest.mark.parametrize("lam", [0.3, "per-model"])
def test_ridge_equals_direct_solve(K, lam, centring):
    F, Y = _features(n=20, K=K)
    lam = torch.tensor([0.1, 0.5, 2.0], dtype=D) if lam == "per-model" else lam
    V = ridge_top_layer(F, Y, lam, centring=centring)
    for b in range(3):
        lb = float(lam[b]) if isinstance(lam, torch.Tensor) else lam
        f, y = _dense(F[b], Y, centring)
        A = f.T @ f + lb * torch.eye(K, dtype=D)
        torch.testing.assert_close(V[b], torch.linalg.solve(A, f.T @ y), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(ridge_top_layer(F[1], Y, 0.3 if not isinstance(lam, torch.Tensor) else float(lam[1]),
                                               centring=centring),
                               V[1], rtol=1e-10, atol=1e-12)          # unbatched F
    # one-hot or either centred Y: the function centres them itself
    onehot = Y + 1.0 / Y.shape[-1]
    torch.testing.assert_close(ridge_top_layer(F, onehot, lam, centring=centring), V, rtol=1e-9, atol=1e-11)


def test_spd_solve_against_a_direct_solve_and_flags_what_is_not_positive_definite():
    g = torch.Generator().manual_seed(3)
    F = torch.randn(3, 80, 50, generator=g, dtype=D)
    A = F.mT @ F + 0.1 * torch.eye(50, dtype=D)
    B = torch.randn(3, 50, 7, generator=g, dtype=D)
    X, ok = spd_solve(A.clone(), B)
    assert ok.tolist() == [True, True, True]
    torch.testing.assert_close(X, torch.linalg.solve(A, B), rtol=1e-10, atol=1e-12)
    A[1] = -A[1]                                    # negative definite: the factorisation fails
    _, ok = spd_solve(A.clone(), B)
    assert ok.tolist() == [True, False, True]


def test_the_two_ridge_definitions_differ_by_the_sample_mean_of_f():
    # FᵀF = F̃ᵀF̃ + nμμᵀ: even with a target that both centrings agree on, the ridge solutions differ
    F, Y = _features(n=20, K=6)
    F = F + 2.0                                     # a large sample mean, as for x² features
    Vs, Vc = (ridge_top_layer(F, Y, 0.3, centring=c) for c in CENTRINGS)
    assert (Vs - Vc).norm() > 0.1 * Vs.norm()
    with pytest.raises(ValueError, match="centring"):
        ridge_top_layer(F, Y, 0.3, centring="rows")


def test_ridge_small_lambda_tends_to_lstsq_and_keeps_dtype():
    F, Y = _features(n=20, K=6)
    V = ridge_top_layer(F, Y, 1e-12, centring="classes")
    torch.testing.assert_close(V, torch.linalg.lstsq(F, Y.expand(3, -1, -1)).solution, rtol=1e-6, atol=1e-8)
    f, y = _dense(F, Y, "samples")
    torch.testing.assert_close(ridge_top_layer(F, Y, 1e-12, centring="samples"),
                               torch.linalg.lstsq(f, y.expand(3, -1, -1)).solution, rtol=1e-6, atol=1e-8)
    assert ridge_top_layer(F.float(), Y.float(), 0.1).dtype == torch.float32
    with pytest.raises(ValueError, match="λ"):
        ridge_top_layer(torch.zeros(1, 4, 3, dtype=D), Y[:4], 0.0)


@pytest.mark.parametrize("centring", CENTRINGS)
@pytest.mark.parametrize("K", [6, 30])
def test_ridge_residual_and_gradient_closed_forms(K, centring):
    F, Y = _features(n=20, K=K)
    lam = torch.tensor([0.1, 0.5, 2.0], dtype=D)
    I_n, I_K = torch.eye(20, dtype=D), torch.eye(K, dtype=D)
    for b in range(3):
        l = float(lam[b])
        f, y = _dense(F[b], Y, centring)
        inv_n = torch.linalg.solve(f @ f.T + l * I_n, I_n)
        inv_K = torch.linalg.solve(f.T @ f + l * I_K, I_K)
        res = ridge_residual(F, Y, lam, centring=centring)[b]
        torch.testing.assert_close(res, l * inv_n @ y, rtol=1e-8, atol=1e-11)
        G = l * inv_n @ y @ y.T @ f @ inv_K          # paper Eq. 4 (samples) / SPEC §2 (classes), as written
        torch.testing.assert_close(backprop_gradient_at_ridge(F, Y, lam, centring=centring)[b], G,
                                   rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("centring", CENTRINGS)
@pytest.mark.parametrize("K", [6, 30])
def test_gradient_at_ridge_is_minus_the_total_derivative_of_the_ridge_objective(K, centring):
    # Envelope theorem: d/dF min_V [½‖F̃V − Ỹ‖² + ½λ‖V‖²] = ∂/∂F at V = V_ridge(F) = −G_F (F for classes).
    F, Y = _features(n=20, K=K)
    lam = 0.4
    Fa = F.clone().requires_grad_(True)
    f, y = _dense(Fa, Y, centring)
    V = torch.linalg.solve(f.mT @ f + lam * torch.eye(K, dtype=D), f.mT @ y)   # differentiable V(F)
    J = 0.5 * (f @ V - y).square().sum() + 0.5 * lam * V.square().sum()
    (dJ,) = torch.autograd.grad(J, Fa)
    torch.testing.assert_close(backprop_gradient_at_ridge(F, Y, lam, centring=centring), -dJ, rtol=1e-8, atol=1e-11)
    Vr = ridge_top_layer(F, Y, lam, centring=centring)
    torch.testing.assert_close(backprop_gradient(F, Vr, Y, centring=centring),
                               backprop_gradient_at_ridge(F, Y, lam, centring=centring), rtol=1e-8, atol=1e-11)
    if centring == "classes":   # P⊥1 is a no-op at V_ridge: its output rows already sum to zero.
        torch.testing.assert_close(Vr.sum(-1), torch.zeros(3, K, dtype=D), rtol=0, atol=1e-12)


def test_backprop_gradient_is_minus_autograd_of_the_centred_loss():
    F, Y = _features(n=20, K=8)
    V = torch.randn(3, 8, 5, dtype=D, generator=torch.Generator().manual_seed(1))   # V1 ≠ 0: P⊥1 matters
    Fa = F.clone().requires_grad_(True)
    O = Fa @ V
    L = 0.5 * (O - O.mean(-1, keepdim=True) - Y).square().sum()
    (dL,) = torch.autograd.grad(L, Fa)
    torch.testing.assert_close(backprop_gradient(F, V, Y, centring="classes"), -dL, rtol=1e-10, atol=1e-12)
    # the paper's loss ½‖P⊥₁(Y − FV)‖² with the dense n×n P⊥₁ (Y one-hot here: P⊥₁ removes its mean)
    P = torch.eye(20, dtype=D) - torch.ones(20, 20, dtype=D) / 20
    Fb = F.clone().requires_grad_(True)
    onehot = Y + 1.0 / 5
    Lp = 0.5 * (P @ (onehot - Fb @ V)).square().sum()
    (dLp,) = torch.autograd.grad(Lp, Fb)
    torch.testing.assert_close(backprop_gradient(F, V, onehot, centring="samples"), -dLp, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(backprop_gradient(F, V, Y), -dLp, rtol=1e-10, atol=1e-12)   # default: samples


@pytest.mark.parametrize("centring", CENTRINGS)
def test_stage2_gradient_and_cosine(centring):
    F, Y = _features()
    lam = torch.tensor([1.0, 2.0, 3.0], dtype=D)
    S = stage2_gradient(F, Y, lam, centring=centring)
    for b in range(3):
        f, y = _dense(F[b], Y, centring)
        torch.testing.assert_close(S[b], float(lam[b]) * y @ y.T @ F[b])
        torch.testing.assert_close(S[b], float(lam[b]) * y @ y.T @ f)     # ỸỸᵀF = ỸỸᵀF̃ (samples)
    A, B = torch.randn(3, 4, 5, dtype=D), torch.randn(3, 4, 5, dtype=D)
    torch.testing.assert_close(cosine(A, B), torch.nn.functional.cosine_similarity(A.flatten(1), B.flatten(1), dim=1))
    assert torch.isclose(cosine(A[0], A[0]), torch.tensor(1.0, dtype=D))


def test_gram_statistics_against_the_n_by_n_matrix():
    F, _ = _features(n=15, K=9)
    F = F.abs() + 0.3                                           # a mean over samples, like real features
    st = gram_statistics(F)
    for b in range(3):
        Fc = F[b] - F[b].mean(0)
        G = Fc.T @ Fc
        off = ~torch.eye(9, dtype=torch.bool)
        torch.testing.assert_close(st["diag"][b], G.diag().abs().mean())
        torch.testing.assert_close(st["offdiag"][b], G[off].abs().mean())
        N = F[b] @ F[b].T                                       # the n×n matrix the fast path avoids
        basis = torch.stack([torch.eye(15, dtype=D).flatten(), torch.ones(225, dtype=D)], 1)
        coef = torch.linalg.lstsq(basis, N.flatten()[:, None]).solution
        dist = (N.flatten() - (basis @ coef)[:, 0]).norm() / N.norm()
        torch.testing.assert_close(st["ntk_distance"][b], dist, rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------------------- energy

def _dense_energy(w, inputs, labels, M, act, centring="samples"):
    """E and ∇E with the explicit one-hot X, Y and projector matrices (the slow reference)."""
    X = one_hot_inputs(inputs, M, D)
    Y = torch.nn.functional.one_hot(labels, M).to(D)
    n = Y.shape[0]
    if centring == "samples":
        Y = (torch.eye(n, dtype=D) - torch.ones(n, n, dtype=D) / n) @ Y       # P⊥₁Y
    else:
        Y = Y @ (torch.eye(M, dtype=D) - torch.ones(M, M, dtype=D) / M)       # Y − 11ᵀ/M
    sigma, dsigma = get_activation(act)
    h = w @ X.T                                                 # (…, n)
    s = sigma(h)
    E = 0.5 * (s @ Y).square().sum(-1)
    grad = (dsigma(h) * (s @ Y @ Y.T)) @ X
    return E, grad


@pytest.mark.parametrize("centring", CENTRINGS)
@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("operands", [2, 3])
def test_energy_by_gathers_equals_one_hot_formula(act, operands, centring):
    inputs, labels, M = _rows("Z5" if operands == 3 else "Z7", 0.7, operands)
    w = torch.randn(2, 4, operands * M, dtype=D, generator=torch.Generator().manual_seed(3))   # (B, R, kM)
    E, g = energy_and_grad(w, inputs, labels, M, act, centring=centring)
    E_ref, g_ref = _dense_energy(w, inputs, labels, M, act, centring)
    torch.testing.assert_close(E, E_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(energy(w, inputs, labels, M, act, centring=centring), E)
    torch.testing.assert_close(energy_grad(w, inputs, labels, M, act, centring=centring), g)
    wa = w.clone().requires_grad_(True)                          # ∇E is the gradient of E (autograd)
    (ga,) = torch.autograd.grad(_dense_energy(wa, inputs, labels, M, act, centring)[0].sum(), wa)
    torch.testing.assert_close(g, ga, rtol=1e-9, atol=1e-11)


def test_the_two_energies_agree_at_full_data_and_differ_on_a_subsample():
    task = make_task(get_group("Z11"))
    w = torch.randn(5, 22, dtype=D, generator=torch.Generator().manual_seed(7))
    full = [energy_and_grad(w, task.inputs, task.labels, 11, centring=c) for c in CENTRINGS]
    torch.testing.assert_close(full[0][0], full[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full[0][1], full[1][1], rtol=1e-12, atol=1e-12)
    inputs, labels, M = _rows("Z11", 0.4)
    sub = [energy(w, inputs, labels, M, centring=c) for c in CENTRINGS]
    assert float((sub[0] - sub[1]).abs().max()) > 1e-3 * float(sub[0].abs().max())


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_energy_gradient_equals_finite_differences(act):
    inputs, labels, M = _rows("Z7", 0.6)
    w = torch.randn(3, 2 * M, dtype=D, generator=torch.Generator().manual_seed(4))
    g = energy_grad(w, inputs, labels, M, act)
    eps = 1e-6
    E_plus = energy(w[:, None, :] + eps * torch.eye(2 * M, dtype=D), inputs, labels, M, act)    # (3, 2M)
    E_minus = energy(w[:, None, :] - eps * torch.eye(2 * M, dtype=D), inputs, labels, M, act)
    torch.testing.assert_close(g, (E_plus - E_minus) / (2 * eps), rtol=1e-6, atol=1e-7)


def _frequency_point(M, k, phi1=0.3, phi2=1.1):
    a = torch.arange(M, dtype=D)
    om = 2 * math.pi * k / M
    return torch.cat([torch.cos(om * a + phi1), torch.cos(om * a + phi2)]) / math.sqrt(M)


@pytest.mark.parametrize("M", [11, 23])
def test_single_frequency_points_are_stationary_with_energy_m_over_4(M):
    task = make_task(get_group(f"Z{M}"))
    w = torch.stack([_frequency_point(M, k, 0.2 * k, 1.0 - 0.1 * k) for k in range(1, (M - 1) // 2 + 1)])
    assert torch.allclose(w.norm(dim=-1), torch.ones(len(w), dtype=D), atol=1e-12)   # on the unit sphere
    E, g = energy_and_grad(w, task.inputs, task.labels, M)
    torch.testing.assert_close(E, torch.full_like(E, M / 4), rtol=1e-12, atol=0)
    assert (tangent(w, g).norm(dim=-1) / g.norm(dim=-1)).max() < 1e-10
    # a memorisation point is far lower
    m = torch.zeros(2 * M, dtype=D)
    m[3] = m[M + 5] = 2 ** -0.5
    assert math.isclose(float(energy(m, task.inputs, task.labels, M)), 0.5 * (1 - 1 / M), rel_tol=1e-12)


def test_ascent_from_random_starts_finds_m_over_4_irrep_maxima():
    task = make_task(get_group("Z23"))
    res = ascend_energy(task.inputs, task.labels, 23, restarts=16, seed=5)
    assert bool(res.converged.all()) and float(res.rel_grad.max()) <= 1e-6
    torch.testing.assert_close(res.energy, torch.full((16,), 5.75, dtype=D), rtol=1e-9, atol=0)
    torch.testing.assert_close(res.w.norm(dim=-1), torch.ones(16, dtype=D))
    cls = classify_maxima(res.w, isotypic_components(get_group("Z23")), task.inputs, 23)
    assert cls["labels"] == ["irrep"] * 16 and bool((cls["fraction"] > 0.999).all())


def test_classify_memorisation_and_frequency_features():
    g = get_group("Z23")
    comps = isotypic_components(g)
    inputs, labels, M = _rows("Z23", 0.3)
    w = torch.zeros(3, 2 * M, dtype=D)
    w[0] = _frequency_point(M, 4)
    w[1, 7] = 1.0                                   # fires on one row of the table only
    w[2] = torch.randn(2 * M, dtype=D, generator=torch.Generator().manual_seed(0))
    cls = classify_maxima(w, comps, inputs, M)
    assert cls["labels"] == ["irrep", "memorization", "other"]
    assert comps.names[int(cls["dominant"][0])] == "k=4"
    assert float(activation_spread(w[1:2], inputs, M)) < 1.2    # ≈ one operand value


def test_energy_landscape_acceptance():
    g = get_group("Z23")
    r = energy_landscape(g, 1.0, restarts=64, seed=0)
    assert r["irrep_fraction"] >= 0.9 and abs(r["max_energy"] - 5.75) / 5.75 < 1e-3
    assert r["predicted_max_energy"] == 5.75 and r["converged"] == 64 and r["n_train"] == 529
    assert sum(r["component_histogram"].values()) == round(r["irrep_fraction"] * 64)
    low = energy_landscape(g, 0.15, restarts=32, seed=0)
    assert low["irrep_fraction"] < 0.5 and low["memorization_fraction"] > 0.5
    assert low["predicted_max_energy"] is None and low["max_energy"] < 5.75
    import json
    json.dumps(r), json.dumps(low)                 # JSON-ready


def test_even_cyclic_order_real_sign_character_doubles_the_energy():
    # Z_M, M even: the 1-dim real irrep (−1)^a reaches M/2, above every other frequency's M/4 (derived).
    r = energy_landscape(get_group("Z12"), 1.0, restarts=32, seed=0)
    assert r["predicted_max_energy"] == 6.0 and abs(r["max_energy"] - 6.0) < 1e-6
    assert r["component_histogram"].get("k=6", 0) >= 1


def test_energy_landscape_non_group_and_figure(tmp_path):
    M = 7
    a = np.arange(M)
    table = (a[:, None] * a[None, :] + a[:, None]) % M         # not a group
    r = energy_landscape(Group("ab+a", table, is_group=False), 1.0, restarts=8, seed=0)
    assert r["note"] and r["irrep_fraction"] == 0.0 and r["spectra"] is None
    energy_figure(r, tmp_path / "non_group.png")
    r2 = energy_landscape(get_group("D5"), 1.0, restarts=8, seed=0)
    assert r2["irrep_fraction"] >= 0.9
    energy_figure(r2, tmp_path / "d5.png")
    assert (tmp_path / "non_group.png").stat().st_size > 0 and (tmp_path / "d5.png").stat().st_size > 0
