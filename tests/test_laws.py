"""Deciding the law p_c(M) (li2.studies.laws) and the grokking-time law (li2.studies.grok_time) on synthetic
studies with a known law."""
import math

import numpy as np
import pandas as pd
import pytest

from li2.studies.grok_time import grok_time_law
from li2.studies.intervals import fit_constant, profile_likelihood
from li2.studies.laws import compare_laws, fit_law
from li2.theory.scaling import FORMS, form_values, grok_time, log_shape

ORDERS = (23, 31, 41, 53, 71, 97, 127)


def profiles(law, rng, slope=25.0, runs=14, spread=0.25, orders=ORDERS):
    """Per M: runs at p_c·e^U(−spread, spread) (a search-like cloud), success ~ σ(slope·ln(p/p_c))."""
    out = []
    for m in orders:
        pc = law(m)
        p = pc * np.exp(rng.uniform(-spread, spread, runs))
        y = (rng.random(runs) < 1 / (1 + np.exp(-slope * np.log(p / pc)))).astype(float)
        out.append(profile_likelihood(p, y))
    return out


def test_forms_and_log_shapes_agree():
    m = np.array(ORDERS, float)
    for name in FORMS:
        params = {"c": 2.0} if name in ("c*ln(M)/M", "c/sqrt(M)") else {"a": 3.0, "b": 0.8}
        scale = params.get("c", params.get("a"))
        assert np.allclose(form_values(name, params, m), scale * np.exp(log_shape(name, m, params.get("b"))))
    assert np.allclose(form_values("c*ln(M)/M", {"c": 2.7482}, m), 2.7482 * np.log(m) / m)
    with pytest.raises(ValueError):
        log_shape("a*M^-b", m)


def test_lnM_over_M_truth_keeps_b_near_1_and_excludes_sqrt():
    rng = np.random.default_rng(0)
    cover, rival_out, prefer_ok = [], [], []
    for _ in range(8):
        res = compare_laws(profiles(lambda m: 2.5 * math.log(m) / m, rng), ORDERS)
        lo, hi = res["exponent"]["a*M^-b*ln(M)"]["ci"]
        cover.append(lo <= 1.0 <= hi)
        rival_out.append(res["forms"]["c/sqrt(M)"]["status"] != "not excluded")
        prefer_ok.append(res["forms"]["c*ln(M)/M"]["status"] != "excluded")
        c = res["forms"]["c*ln(M)/M"]["params"]["c"]
        assert c == pytest.approx(2.5, rel=0.1)
    print(f"\nb CI covers 1 in {sum(cover)}/8; c/√M excluded or disfavoured in {sum(rival_out)}/8")
    assert sum(cover) >= 7 and sum(prefer_ok) >= 7 and sum(rival_out) >= 6


def test_a_different_exponent_is_found_and_lnM_over_M_rejected():
    rng = np.random.default_rng(1)
    res = compare_laws(profiles(lambda m: 6.0 * m ** -1.3 * math.log(m), rng, slope=60.0), ORDERS)
    e = res["exponent"]["a*M^-b*ln(M)"]
    assert e["ci"][0] <= 1.3 <= e["ci"][1] and e["excludes_1"]
    assert res["lr_tests"]["c*ln(M)/M"]["rejected"] and res["forms"]["c*ln(M)/M"]["status"] == "excluded"
    assert res["preferred"] in ("a*M^-b*ln(M)", "a*M^-b")
    assert any("excludes b = 1" in line for line in res["evidence"])


def test_one_parameter_fit_is_fit_constant():
    rng = np.random.default_rng(2)
    profs = profiles(lambda m: 2.5 * math.log(m) / m, rng)
    law = fit_law(profs, ORDERS, "c*ln(M)/M")
    ref = fit_constant(profs, np.log(np.log(np.array(ORDERS, float)) / np.array(ORDERS, float)))
    assert law["params"]["c"] == pytest.approx(ref["c"], rel=0.01)
    assert law["loglik"] == pytest.approx(ref["loglik"], abs=1e-6)


def test_too_few_orders_for_exponent_intervals():
    rng = np.random.default_rng(3)
    law = fit_law(profiles(lambda m: 2.5 * math.log(m) / m, rng, orders=(23, 71)), (23, 71), "a*M^-b")
    assert law["params_ci"] is None
    with pytest.raises(ValueError):
        fit_law(profiles(lambda m: 0.1, rng, orders=(23,)), (23,), "a*M^-b")


# -- the grokking-time law -------------------------------------------------------------------------------

def time_study(rng, nu=1.0, amp=300.0, alpha=0.1, noise=0.2, runs=8):
    rows, pc = [], {}
    for m in ORDERS:
        pc[m] = 2.5 * math.log(m) / m
        for _ in range(runs):
            x = math.exp(rng.uniform(0.03, 0.6))
            t = float(grok_time("critical", x, amp * m ** alpha, nu)[()]) * math.exp(rng.normal(0, noise))
            rows.append({"order": m, "train_ratio": x * pc[m], "grok_step": int(t), "success": True})
        rows.append({"order": m, "train_ratio": 1.02 * pc[m], "grok_step": None, "success": False})   # censored
    return pd.DataFrame(rows), pc


def test_grok_time_law_recovers_the_exponent_and_predicts_held_out_runs():
    df, pc = time_study(np.random.default_rng(4))
    res = grok_time_law(df, pc)
    crit = res["joint"]["critical"]
    assert crit["params"]["nu"] == pytest.approx(1.0, abs=0.15)
    assert crit["params"]["alpha"] == pytest.approx(0.1, abs=0.15)
    held = crit["held_out"]
    assert held["n"] == 56 and 0.1 < held["rms_log"] < 0.35          # close to the noise (0.2) it was made with
    assert res["null"]["held_out"]["rms_log"] > 2 * held["rms_log"]   # the law predicts; a per-M mean does not
    assert res["n_censored_above_pc"] == len(ORDERS)
    assert res["critical_free"]["params"]["nu"] == pytest.approx(1.0, abs=0.3)
    for m, fits in res["per_order"].items():
        assert fits["critical"]["params"]["nu"] == pytest.approx(1.0, abs=0.5), m


def test_grok_time_law_tells_a_ratio_law_from_a_critical_one():
    rng = np.random.default_rng(5)
    rows, pc = [], {}
    for m in ORDERS:
        pc[m] = 2.5 * math.log(m) / m
        for _ in range(10):
            x = math.exp(rng.uniform(0.02, 0.9))
            rows.append({"order": m, "train_ratio": x * pc[m], "success": True,
                         "grok_step": int(440 * x ** -2 * math.exp(rng.normal(0, 0.1)))})
    res = grok_time_law(pd.DataFrame(rows), pc)
    assert res["best"] == "ratio"
    assert res["joint"]["ratio"]["params"]["nu"] == pytest.approx(2.0, abs=0.2)
