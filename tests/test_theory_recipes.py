"""The dynamics and energy recipes (issue 11): their rules on synthetic numbers, the Theorem-4 machinery
(li2.theory.stability) against closed forms, and their plans."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from li2.algebra.groups import get_group
from li2.recipes import dynamics, energy
from li2.recipes.common import VERDICTS
from li2.theory.stability import energy_constants, irrep_maxima, is_standard_cyclic, subsample_ascent

PLAN_KEYS = {"runs", "core_hours", "paper_setting", "setting", "deviations"}


# -- plans -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", [dynamics, energy])
def test_plans_list_settings_and_every_deviation_with_a_reason(recipe):
    for size in ("smoke", "quick", "full"):
        p = recipe.plan(size)
        assert set(p) >= PLAN_KEYS and p["core_hours"] >= 0
        assert all(set(d) == {"what", "paper", "here", "why"} and d["why"] for d in p["deviations"])
    assert len(recipe.plan("quick")["deviations"]) > len(recipe.plan("full")["deviations"])


def test_dynamics_full_is_fig3():
    s = dynamics.plan("full")["setting"]
    assert (s["group"], s["width"], s["train_ratio"], s["weight_decay"], s["seeds"]) == \
        ("Z71", 2048, 0.4, [2e-4, 0.0], [15, 15])


# -- dynamics ------------------------------------------------------------------------------------------------

def _seeds(n=6, **over):
    rows = []
    for s in range(n):
        r = {"seed": s, "lazy_end": 100.0 + s, "independent_end": 400.0 + s, "interactive_end": 500.0,
             "independent_start": 120.0, "lazy_w_drift": 0.05 + 0.001 * s, "lazy_clean": True,
             "stage3_signal": "cosine_drop", "all_stages": True, "grok_step": 600.0 + 10 * s, "final_test_acc": 1.0,
             "grad_initial": 1.0, "grad_peak": 3.0 + 0.1 * s, "grad_peak_step": 100, "grad_final": 0.2,
             "t_half_v": 20.0 + s, "t_half_w": 200.0 + s, "max_offdiag_ratio": 0.03 + 0.001 * s,
             "peak_stage2_cosine": 0.9, "grok_stage": "III", "final_coverage": 35.0}
        r["grok_minus_lazy"] = math.log(r["grok_step"] + 1) - math.log(r["lazy_end"] + 1)
        r["w_minus_v"] = math.log(r["t_half_w"] + 1) - math.log(r["t_half_v"] + 1)
        r.update({k: (v(s) if callable(v) else v) for k, v in over.items()})
        rows.append(r)
    return pd.DataFrame(rows)


def test_dynamics_rule_supports_the_paper_picture_and_each_part_can_fail():
    zero = _seeds(3, final_test_acc=lambda s: 0.02 + 0.01 * s, grad_final=0.01)
    v, parts, reasons = dynamics.verdict(dynamics.measure(_seeds(), zero))
    assert v == "supports" and set(parts.values()) == {"supports"} and len(reasons) == 7
    cases = {"stage1_lazy": dict(lazy_w_drift=lambda s: 1.5 + 0.01 * s),
             "V_before_W": dict(w_minus_v=lambda s: -0.5 - 0.01 * s),
             "grok_after_stage1": dict(grok_minus_lazy=lambda s: -1.0 - 0.01 * s),
             "gram_diagonal": dict(max_offdiag_ratio=lambda s: 0.2 + 0.01 * s),
             "grad_norm": dict(grad_final=lambda s: 3.0 + 0.1 * s)}
    for part, over in cases.items():
        v, parts, _ = dynamics.verdict(dynamics.measure(_seeds(**over), zero))
        assert parts[part] == "contradicts" and v == "contradicts", part
    v, parts, _ = dynamics.verdict(dynamics.measure(_seeds(), _seeds(3)))   # η = 0 groks too
    assert parts["weight_decay"] == "contradicts"


def test_dynamics_rule_is_inconclusive_when_seeds_cannot_decide():
    zero = _seeds(3, final_test_acc=0.02)
    m = dynamics.measure(_seeds(3), zero)                     # 3/3 seeds: Clopper–Pearson [0.29, 1]
    assert dynamics.verdict(m)[1]["stages"] == "inconclusive"
    noisy = _seeds(6, lazy_w_drift=lambda s: [0.01, 0.3, 0.02, 0.25, 0.05, 0.15][s])
    assert dynamics.verdict(dynamics.measure(noisy, zero))[1]["stage1_lazy"] == "inconclusive"
    assert dynamics.share_ci([True] * 6)["ci"][0] > 0.5 and dynamics.share_ci([True] * 5)["ci"][0] < 0.5


def test_half_time_is_interpolated_between_evaluations():
    m = pd.DataFrame({"step": [0, 10, 20], "x": [0.0, 0.4, 1.0]})
    assert dynamics._half_time(m, "x") == pytest.approx(10 + (0.5 - 0.4) / 0.6 * 10)
    assert dynamics._half_time(m, "missing") is None


def test_dynamics_smoke_findings(tmp_path):
    from li2.recipes import reproduce
    f = reproduce("dynamics", tmp_path / "d", size="smoke")
    assert {"paper_setting", "setting", "deviations", "measured", "rule", "verdict"} <= set(f)
    assert f["verdict"] in VERDICTS and f["measured"]["n_seeds"] == {"eta_2e-4": 1, "eta_0": 1}
    assert (tmp_path / "d" / "dynamics.png").exists() and (tmp_path / "d" / "seeds.parquet").exists()


# -- energy: the Theorem-4 machinery ------------------------------------------------------------------------

def test_energy_constants_printed_are_a_quarter_of_measured():
    assert energy_constants(23, 1, "complex") == {"measured_formula": 23 / 4, "printed": 23 / 16}
    assert energy_constants(24, 1, "real") == {"measured_formula": 12.0, "printed": 3.0}
    assert energy_constants(24, 3, "real")["measured_formula"] == 4.0


@pytest.mark.parametrize("name", ["Z11", "Z12", "S3", "D5", "Q8"])
def test_irrep_maxima_are_stationary_pure_and_at_the_measured_energy(name):
    g = get_group(name)
    mx = irrep_maxima(g, per_component=2, seed=1)
    comps = mx["components"]
    assert is_standard_cyclic(g) == name.startswith("Z")
    assert float(mx["rel_grad"].max()) < 1e-6 and float(mx["share"].min()) > 0.999
    for e, c in zip(mx["energy"].tolist(), mx["component"].tolist()):
        want = energy_constants(g.order, comps.degrees[c], comps.kinds[c])["measured_formula"]
        assert e == pytest.approx(want, rel=1e-6)
    assert sorted(set(mx["component"].tolist())) == list(range(1, len(comps.names)))   # every component


def test_subsample_ascent_keeps_maxima_at_full_data_and_loses_them_when_scarce():
    g = get_group("Z23")
    mx = irrep_maxima(g)
    full = subsample_ascent(g, mx, 1.0, 0)
    assert bool(full["stayed"].all()) and full["n_train"] == 529
    torch.testing.assert_close(full["energy"], mx["energy"])               # nothing to climb at p = 1
    scarce = subsample_ascent(g, mx, 0.2, 0)
    assert float(scarce["stayed"].float().mean()) < 0.5
    assert bool((scarce["energy"] >= scarce["start_energy"] - 1e-9).all())  # ascent never goes down


def _threshold_rows(pstar=0.5, grid=(0.3, 0.4, 0.45, 0.55, 0.6, 0.8), splits=3, order=23):
    rows = []
    for p in grid:
        for sp in range(splits):
            for start in range(4):
                rows.append({"group": f"Z{order}", "order": order, "family": "cyclic", "centring": "samples",
                             "degree": 1, "train_ratio": p, "split": sp, "start": start, "stayed": p >= pstar})
    return pd.DataFrame(rows)


def test_threshold_interval_holds_the_gap_and_flags_unbracketed_grids():
    th = energy.thresholds(_threshold_rows())
    v = th["Z23|d=1|samples"]
    assert v["reason"] == "bracketed" and v["ci"][0] <= 0.45 and v["ci"][1] >= 0.55 and 0.45 < v["p_star"] < 0.55
    assert energy.thresholds(_threshold_rows(pstar=0.1))["Z23|d=1|samples"]["reason"] == "kept_everywhere"


def test_energy_rule_and_slope():
    law = lambda m: 2.0 * math.log(m) / m   # noqa: E731  (the grid below never puts p* on a grid point)
    rows = pd.concat([_threshold_rows(law(m), grid=tuple(law(m) * np.exp(np.linspace(-0.52, 0.48, 11))), order=m)
                      for m in (23, 31, 41, 53, 71)])
    th = energy.thresholds(rows)
    sc = energy.scaling(th)
    assert sc["slope"]["ci"][0] < 1 < sc["slope"]["ci"][1] and sc["c_ci"][0] < 2.0 < sc["c_ci"][1]
    estar = [{"max_rel_grad": 0.0, "min_share": 1.0, "E_measured": 5.75, "E_formula": 5.75}]
    v, parts, _ = energy.verdict({"E_star": estar, "thresholds": th, "scaling": sc})
    assert v == "supports", parts
    flat = pd.concat([_threshold_rows(0.5, grid=tuple(0.5 * np.exp(np.linspace(-0.5, 0.5, 11))), order=m)
                      for m in (23, 31, 41, 53, 71)])            # p* independent of M: slope 0
    th0 = energy.thresholds(flat)
    assert energy.verdict({"E_star": estar, "thresholds": th0, "scaling": energy.scaling(th0)})[1]["scaling"] \
        == "contradicts"
    bad = [{**estar[0], "E_measured": 5.75 / 4}]
    assert energy.verdict({"E_star": bad, "thresholds": th, "scaling": sc})[1]["full_data_maxima"] == "contradicts"


def test_ratios_stay_at_or_below_one():
    assert energy.ratios_for(23, (1.0, 2.0, 3.0)) == [round(2.7482 * math.log(23) / 23 * x, 6) for x in (1.0, 2.0)]
