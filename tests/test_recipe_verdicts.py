"""The verdict rules of the paper recipes (muon, learning-rate, zero-init, multilayer, ridge-top, width, memorization,
nonabelian, ungrokking) on hand-made numbers, and the statistics and theory pieces they rest on."""
import math

import numpy as np
import pytest
import torch

from li2.algebra.groups import get_group
from li2.recipes.common import judge_speedup, speedup
from li2.recipes.learning_rate import cochran_armitage
from li2.recipes.learning_rate import verdict as verdict_lr
from li2.recipes.memorization import verdict as verdict_memorization
from li2.recipes.multilayer import verdict as verdict_multilayer
from li2.recipes.muon import judge_signs
from li2.recipes.muon import verdict as verdict_muon
from li2.recipes.nonabelian import fit_exponent
from li2.recipes.nonabelian import verdict as verdict_nonabelian
from li2.recipes.ridge_top import verdict as verdict_ridge
from li2.recipes.ungrokking import verdict as verdict_ungrokking
from li2.recipes.width import verdict as verdict_width
from li2.recipes.zero_init import verdict as verdict_zero_init
from li2.theory.memorization import (
    ascend_single_target,
    pair_sums,
    phi_nondecreasing,
    predicted_profile,
    single_target_energy,
    single_target_pairs,
)

# -- statistics ---------------------------------------------------------------------------------------------


def test_speedup_pairs_seeds_and_marks_censored_bounds():
    sp = speedup([1000, 800, 1200], [100, 100, 120], budget=3000)
    assert sp["pairs"] == 3 and sp["geomean"] == pytest.approx((10 * 8 * 10) ** (1 / 3))
    assert sp["ci"][0] > 1 and sp["lower_valid"] and sp["upper_valid"]
    assert judge_speedup(sp) == "supports" and judge_speedup(sp, want_faster=False) == "contradicts"
    slow_never = speedup([None, None, 900], [100, 90, 100], budget=3000)     # regular init never generalised
    assert slow_never["censored_slow"] == 2 and slow_never["lower_valid"] and not slow_never["upper_valid"]
    assert judge_speedup(slow_never) == "supports"
    both = speedup([None, 500], [None, 500], budget=3000)                    # both censored: dropped
    assert both["pairs"] == 1 and both["ci"] is None and judge_speedup(both) == "inconclusive"
    slower = speedup([100, 110, 90], [300, 320, 310], budget=3000)
    assert judge_speedup(slower) == "contradicts" and judge_speedup(slower, want_faster=False) == "supports"
    # a zero-init run that never generalised makes the ratio an upper bound: "slower" stays valid, "faster" cannot be
    fast_never = speedup([100, 110, 90], [None, 320, 310], budget=400)
    assert not fast_never["lower_valid"] and judge_speedup(fast_never) == "contradicts"
    noisy = speedup([100, 400, 90], [300, 100, 100], budget=3000)
    assert judge_speedup(noisy) == "inconclusive"


def test_cochran_armitage_trend():
    z, p = cochran_armitage([(10, 10), (6, 10), (1, 10)])
    assert z < 0 and p < 0.01
    z, p = cochran_armitage([(1, 10), (6, 10), (10, 10)])
    assert z > 0 and p < 0.01
    z, p = cochran_armitage([(5, 10), (5, 10), (5, 10)])
    assert z == pytest.approx(0) and p == pytest.approx(1)
    assert cochran_armitage([(4, 4), (4, 4)]) == (None, None) and cochran_armitage([(0, 4), (0, 4)]) == (None, None)
    # agrees with the textbook formula on a small table
    k, n, t = np.array([3, 2, 0.0]), np.array([4, 4, 4.0]), np.arange(3.0)
    pb = k.sum() / n.sum()
    T = (t * (k - n * pb)).sum()
    var = pb * (1 - pb) * ((n * t * t).sum() - (n * t).sum() ** 2 / n.sum())
    assert cochran_armitage([(3, 4), (2, 4), (0, 4)])[0] == pytest.approx(T / math.sqrt(var))


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_fit_exponent_recovers_the_power_of_d(gamma):
    pts = []
    for d, m in ((2, 24), (3, 24), (4, 52), (5, 55), (6, 42)):
        pc = 0.3 * d ** gamma * math.log(m) / m
        pts.append({"order": m, "d": d, "lo": pc / 1.05, "hi": pc * 1.05})
    fit = fit_exponent(pts)
    assert fit["gamma"] == pytest.approx(gamma, abs=0.05)
    assert fit["ci"][0] <= gamma <= fit["ci"][1] and fit["ci"][1] - fit["ci"][0] < 0.6
    wide = fit_exponent([{**p, "lo": p["lo"] / 3, "hi": p["hi"] * 3} for p in pts])
    assert wide["ci"][1] - wide["ci"][0] > fit["ci"][1] - fit["ci"][0]   # brackets widen the interval
    assert fit_exponent(pts[:2])["ci"] is None


# -- Theorem 5 instruments ----------------------------------------------------------------------------------

def test_single_target_pairs_all_multiply_to_the_target():
    for name, h in (("Z23", 5), ("S4", 7), ("D7", 3)):
        G = get_group(name)
        pairs = single_target_pairs(G, h)
        assert sorted(pairs[:, 0].tolist()) == list(range(G.order))
        assert sorted(pairs[:, 1].tolist()) == list(range(G.order))
        assert all(G.table[a, b] == h for a, b in pairs.tolist())


def test_single_target_energy_matches_the_class_centred_energy():
    """E = ½‖Ỹᵀσ(Xw)‖² with Ỹ = onehot − 1/M and sample weights p_g, computed the slow way."""
    G = get_group("Z11")
    pairs = single_target_pairs(G, 4)
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(11, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 22, generator=gen, dtype=torch.float64)
    Y = torch.nn.functional.one_hot(torch.full((11,), 4), 11).double() - 1 / 11
    for act, sigma in (("sqr", lambda x: x * x), ("relu", torch.relu)):
        F = sigma(w[:, pairs[:, 0]] + w[:, 11 + pairs[:, 1]])                   # (3, M) activations per sample
        slow = 0.5 * ((Y.T @ (p[:, None] * F.T)) ** 2).sum(0)
        assert torch.allclose(single_target_energy(w, pairs, p, 11, act), slow)


def test_phi_monotonicity_and_theorem5_profiles():
    assert phi_nondecreasing("sqr") and phi_nondecreasing("relusqr")
    assert not phi_nondecreasing("relu") and not phi_nondecreasing("silu")
    p = torch.tensor([0.1, 0.4, 0.2, 0.3], dtype=torch.float64)
    s = predicted_profile(p, "sqr")
    assert s.tolist() == pytest.approx([0, math.sqrt(2), 0, 0])
    r = predicted_profile(p, "relu")                     # ReLU: s ∝ p on Σ s² = 2
    assert float((r * r).sum()) == pytest.approx(2) and torch.allclose(r, p * math.sqrt(2) / p.norm(), atol=1e-8)
    si = predicted_profile(p, "silu")                    # SiLU: ordered like p, all positive
    assert float((si * si).sum()) == pytest.approx(2, rel=1e-6) and list(si.argsort()) == list(p.argsort())


def test_ascent_finds_theorem5_maxima():
    G = get_group("Z13")
    pairs = single_target_pairs(G, 2)
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(13, generator=gen, dtype=torch.float64) + 0.5
    p = p / p.sum()
    w, E, conv = ascend_single_target(pairs, p, 13, "sqr", restarts=8, seed=0)
    s = pair_sums(w, pairs, 13)
    best = int(E.argmax())
    assert bool(conv.all()) and int((s[best] ** 2).argmax()) == int(p.argmax())
    assert float((s[best] ** 2).max() / (s[best] ** 2).sum()) > 0.999
    w, E, conv = ascend_single_target(pairs, p, 13, "relu", restarts=8, seed=0)
    s = pair_sums(w, pairs, 13)[int(E.argmax())].clamp_min(0)
    pred = predicted_profile(p, "relu")
    assert float((s * pred).sum() / (s.norm() * pred.norm())) > 0.999


# -- verdict rules ------------------------------------------------------------------------------------------

def _muon_arm(small_diffs, conv=True, cov_ci=(1, 3)):
    per = {}
    for k, (d, ci) in zip((16, 32, 64), small_diffs):
        per[str(k)] = {"test_loss_diff": {"diff": d, "ci": ci}, "converged": conv,
                       "coverage_diff": {"diff": 2, "ci": list(cov_ci)}}
    return per


def test_verdict_muon():
    lower = [(-0.02, [-0.03, -0.01])] * 3
    count = {"L": 20, "L_H_L": 72.0, "muon": {"mean": 50}, "independent": {"mean": 90},
             "muon_minus_independent": {"diff": -40, "ci": [-60, -20]}}
    m = {"L": 35, "arms": {"shared": _muon_arm(lower), "best": _muon_arm(lower)}, "count": count}
    v, parts, _ = verdict_muon(m)
    assert v == "supports" and set(parts) == {"test_loss_shared_lr", "test_loss_best_lr", "coverage_theorem8",
                                              "theorem8_count"}
    more = {**count, "muon_minus_independent": {"diff": 40, "ci": [20, 60]}}
    assert verdict_muon({**m, "count": more})[1]["theorem8_count"] == "contradicts"
    assert verdict_muon({**m, "count": {}})[1]["theorem8_count"] == "inconclusive"
    higher = [(0.02, [0.01, 0.03])] * 3
    v, parts, _ = verdict_muon({"L": 35, "arms": {"shared": _muon_arm(higher), "best": _muon_arm(lower)}})
    assert v == "contradicts" and parts["test_loss_shared_lr"] == "contradicts"
    # widths that did not converge are not counted
    v, parts, _ = verdict_muon({"L": 35, "arms": {"shared": _muon_arm(higher, conv=False), "best": _muon_arm(lower)}})
    assert parts["test_loss_shared_lr"] == "inconclusive"
    # only widths <= L count: K = 64 is above L = 35 and is ignored
    mixed = [(-0.02, [-0.03, -0.01]), (0.0, [-0.01, 0.01]), (0.5, [0.4, 0.6])]
    assert verdict_muon({"L": 35, "arms": {"shared": _muon_arm(mixed)}})[1]["test_loss_shared_lr"] == "supports"
    fewer = verdict_muon({"L": 35, "arms": {"shared": _muon_arm(lower, cov_ci=(-3, -1))}})[1]
    assert fewer["coverage_theorem8"] == "contradicts"
    assert verdict_muon({})[0] == "inconclusive"
    assert judge_signs([], -1) == "inconclusive" and judge_signs([-1, 0], -1) == "supports"
    assert judge_signs([-1, 1], -1) == "inconclusive" and judge_signs([0, 1], -1) == "contradicts"


def _sp(ratios, budget=3000):
    return speedup([r * 100 for r in ratios], [100] * len(ratios), budget)


def test_verdict_zero_init_and_multilayer():
    m = {"speedups": {"Z41 p=0.3": _sp([3, 4, 5]), "Z41 p=0.6": _sp([1.5, 1.6, 1.4])}}
    assert verdict_zero_init(m)[0] == "supports" and verdict_multilayer(m)[0] == "supports"
    m["speedups"]["Z41 p=0.6"] = _sp([0.5, 0.6, 0.55])
    assert verdict_zero_init(m)[0] == "contradicts"
    m["speedups"]["Z41 p=0.6"] = _sp([0.5, 2.0, 1.0])
    assert verdict_zero_init(m)[0] == "inconclusive"
    assert verdict_zero_init({})[0] == "inconclusive"


def test_verdict_ridge_top_wants_slower_at_23_and_faster_elsewhere():
    good = {"speedups": {"Z23": _sp([0.4, 0.5, 0.45]), "Z41": _sp([2, 2.5, 2.2])},
            "ridge_generalised": {"Z23": [3, 3], "Z41": [3, 3]}}
    v, parts, _ = verdict_ridge(good)
    assert v == "supports" and parts == {"Z23.slower": "supports", "Z41.faster": "supports", "still_groks": "supports"}
    flipped = {**good, "speedups": {"Z23": _sp([2, 2.5, 2.2]), "Z41": _sp([2, 2.5, 2.2])}}
    assert verdict_ridge(flipped)[1]["Z23.slower"] == "contradicts"
    never = {**good, "ridge_generalised": {"Z23": [0, 3], "Z41": [0, 3]}}
    assert verdict_ridge(never)[0] == "contradicts"


def test_verdict_learning_rate():
    m = {"features": {"small_lr": {"runs": 4, "generalised": 4, "irrep_share_min": 0.9},
                      "large_lr": {"runs": 2, "generalised": 0},
                      "energy_diff": {"diff": 0.5, "ci": [0.2, 0.8]}},
         "boundary": {"trend_z": -2.5, "trend_p": 0.01, "share_by_lr": {}}}
    v, parts, _ = verdict_lr(m)
    assert v == "supports" and parts == {"small_lr": "supports", "large_lr": "supports", "boundary": "supports"}
    gen = {**m, "features": {**m["features"], "large_lr": {"runs": 2, "generalised": 2}}}
    assert verdict_lr(gen)[1]["large_lr"] == "contradicts"
    lowE = {**m, "features": {**m["features"], "energy_diff": {"diff": -0.5, "ci": [-0.8, -0.2]}}}
    assert verdict_lr(lowE)[1]["large_lr"] == "contradicts"
    assert verdict_lr({**m, "boundary": {"trend_z": 2.5, "trend_p": 0.01}})[1]["boundary"] == "contradicts"
    assert verdict_lr({**m, "boundary": {"trend_z": -1.0, "trend_p": 0.3}})[1]["boundary"] == "inconclusive"
    assert verdict_lr({**m, "boundary": {"trend_z": None, "trend_p": None}})[1]["boundary"] == "inconclusive"


def test_verdict_width():
    m = {"closed_form": {"per_node_slope": {"mean": -2.0, "ci": [-2.5, -1.5]},
                         "coefficient_slope": {"mean": -1.0, "ci": [-1.2, -0.8]}},
         "training": {"sgd": {"spearman": 1.0, "growth": 2.0}},
         "coverage": {"L": 20, "smallest_width_min_coverage": 6, "smallest_width_max_coverage": 7,
                      "smallest_width_covering_all": 512}}
    v, parts, _ = verdict_width(m)
    assert v == "supports" and set(parts) == {"shrinks", "lemma1_form", "slower_sgd", "enough_nodes"}
    bad = {**m, "closed_form": {"per_node_slope": {"ci": [0.5, 1.0]}, "coefficient_slope": {"ci": [-2.2, -1.8]}}}
    p = verdict_width(bad)[1]
    assert p["shrinks"] == "contradicts" and p["lemma1_form"] == "contradicts"
    assert verdict_width({**m, "training": {"sgd": {"spearman": -1.0, "growth": 0.5}}})[1]["slower_sgd"] == "contradicts"
    assert verdict_width({**m, "training": {"sgd": {"spearman": 1.0, "growth": 1.1}}})[1]["slower_sgd"] == "inconclusive"
    cov = {**m, "coverage": {**m["coverage"], "smallest_width_min_coverage": 20}}
    assert verdict_width(cov)[1]["enough_nodes"] == "contradicts"


def test_verdict_memorization_uses_wilson_intervals():
    ok = {"per_activation": {"sqr": {"kind": "focused", "hits": 8, "draws": 8},
                             "relu": {"kind": "spread", "hits": 8, "draws": 8}}}
    assert verdict_memorization(ok)[0] == "supports"
    few = {"per_activation": {"sqr": {"kind": "focused", "hits": 2, "draws": 2}}}
    assert verdict_memorization(few)[0] == "inconclusive"          # 2/2: the interval still reaches below 50%
    bad = {"per_activation": {"relu": {"kind": "spread", "hits": 0, "draws": 8}}}
    assert verdict_memorization(bad)[0] == "contradicts"
    assert verdict_memorization({})[0] == "inconclusive"


def test_verdict_nonabelian_exponent():
    groups = {"S4": {"d": 3, "lo": 0.5, "hi": 0.6, "pc_linear_reference": 0.55, "pc_d_squared": 3.3}}
    lin = {"groups": groups, "fit": {"gamma": 1.1, "ci": [0.7, 1.5], "points": 4}}
    assert verdict_nonabelian(lin)[:2] == ("supports", {"linear": "supports", "d_squared": "contradicts"})
    sq = {"groups": groups, "fit": {"gamma": 2.1, "ci": [1.6, 2.5], "points": 4}}
    assert verdict_nonabelian(sq)[:2] == ("contradicts", {"linear": "contradicts", "d_squared": "supports"})
    both = {"groups": groups, "fit": {"gamma": 1.5, "ci": [0.8, 2.3], "points": 4}}
    assert verdict_nonabelian(both)[0] == "inconclusive"
    neither = {"groups": groups, "fit": {"gamma": 3.5, "ci": [3.0, 4.0], "points": 4}}
    assert verdict_nonabelian(neither)[1] == {"linear": "inconclusive", "d_squared": "inconclusive"}
    assert verdict_nonabelian({"groups": groups, "fit": {"gamma": None, "ci": None}})[0] == "inconclusive"


def test_verdict_ungrokking():
    long_ok = [{"outcome": "grokked", "grok_step": 300, "steps_trained": 6000}]
    long_ung = [{"outcome": "ungrokked", "grok_step": None, "steps_trained": 6000}]
    low = {"p2_over_pc": 0.4, "grokked_before": True, "ungrokked": True}
    high = {"p2_over_pc": 1.33, "grokked_before": True, "ungrokked": False}
    assert verdict_ungrokking({"long_training": long_ok, "less_data": [low, high]})[0] == "supports"
    assert verdict_ungrokking({"long_training": long_ung, "less_data": []})[0] == "supports"
    nolow = {**low, "ungrokked": False}
    assert verdict_ungrokking({"long_training": long_ok, "less_data": [nolow, high]})[0] == "contradicts"
    assert verdict_ungrokking({"long_training": [], "less_data": [nolow]})[0] == "inconclusive"
