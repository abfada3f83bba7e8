"""What a finished p_c search says: p_c(M) at its budget, whether doubling the budget moves it, the law
p_c(M) follows, and the grokking-time law.

`analyse_search(table, spec)` (table: li2.studies.search results, one row per run):
  * p_c at the budget cap: a run succeeds when it grokked within its budget (runs still undecided at
    the cap count as failures: "not grokked within budget_cap steps"); li2.studies.phase.analyse_phase
    with the adaptive design's tempering (li2.studies.design.TEMPER) gives each M's p_c and interval,
    the weighted c and every law (li2.studies.laws);
  * the budget check: the same analysis with success = "grokked by step budget_cap/2" (every run's
    curve holds that answer). Doubling the budget from cap/2 to cap moved p_c(M) by
    ln(p_c(cap/2)/p_c(cap)); it is within the CI when p_c(cap/2) lies inside p_c(cap)'s interval.
    Stable when every M is within (a run decided "memorized" early counts as a failure at both);
  * the grokking-time law (li2.studies.grok_time) on the runs above each M's p_c;
  * per M: runs, outcomes, runs still undecided at the cap, budgets reached, core-seconds.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .design import TEMPER
from .grok_time import grok_time_law
from .phase import analyse_phase
from .search import SearchSpec


def success_table(table: pd.DataFrame, budget: int | None = None) -> pd.DataFrame:
    """order, train_ratio, seed, final_test_acc = 1.0 when the run grokked (by step `budget` when given),
    else 0.0; NaN for runs that failed to train (analyse_phase drops and counts them)."""
    ok = table["success"].astype("boolean").fillna(False).to_numpy(bool)
    if budget is not None:
        steps = pd.to_numeric(table["grok_step"], errors="coerce").to_numpy(float)
        ok = ok & (steps <= budget)
    acc = np.where(ok, 1.0, 0.0)
    acc[(table["status"] == "failed").to_numpy(bool)] = np.nan
    return pd.DataFrame({"order": table["order"].to_numpy(int), "train_ratio": table["train_ratio"].to_numpy(float),
                         "seed": table["seed"].to_numpy(int), "final_test_acc": acc,
                         "status": table["status"].fillna("").to_numpy(str)})


def budget_check(at_cap: dict, at_half: dict, cap: int) -> dict:
    """Per M: p_c at cap/2 and at cap, the relative shift, and whether it lies inside p_c(cap)'s CI."""
    per_m, stable = {}, True
    for order, full in at_cap["pc"].items():
        half = at_half["pc"].get(order, {})
        if not full.get("bracketed") or not half.get("bracketed"):
            per_m[order] = {"pc_cap": full.get("estimate"), "pc_half": half.get("estimate"), "shift": None,
                            "within_ci": None, "note": f"not bracketed at {'cap/2' if full.get('bracketed') else 'cap'}"}
            stable = False
            continue
        lo, hi = full["ci"]
        within = lo <= half["estimate"] <= hi
        stable &= within
        per_m[order] = {"pc_cap": full["estimate"], "pc_half": half["estimate"],
                        "shift": math.log(half["estimate"] / full["estimate"]), "within_ci": within}
    return {"budgets": [cap // 2, cap], "per_order": per_m, "stable": stable,
            "rule": "doubling the budget from cap/2 to cap must move no p_c(M) outside p_c(cap)'s 95% interval"}


def _runs(table: pd.DataFrame, base: int, cap: int) -> dict:
    out = {}
    for order, g in table.groupby("order"):
        out[str(int(order))] = {
            "runs": int(len(g)), "outcomes": {str(k): int(v) for k, v in g["outcome"].value_counts().items()},
            "undecided_at_cap": int(((g["outcome"] == "undecided") & (g["budget"] >= cap)).sum()),
            "continued": int((pd.to_numeric(g["budget"], errors="coerce") > base).sum()),
            "core_seconds": round(float(pd.to_numeric(g["wall_seconds"], errors="coerce").sum()), 1)}
    return out


def analyse_search(table: pd.DataFrame, spec: SearchSpec, n_boot: int = 200, seed: int = 0) -> dict:
    """The module doc's analysis of one search; a JSON-serialisable dict with keys phase (analyse_phase at the
    cap), budget (the cap), budget_check, grok_time, runs (per M), temper."""
    cap = spec.cap
    at_cap = analyse_phase(success_table(table), n_boot=n_boot, seed=seed, reference_c=spec.reference_c,
                           temper=TEMPER)
    at_half = analyse_phase(success_table(table, cap // 2), n_boot=n_boot, seed=seed,
                            reference_c=spec.reference_c, temper=TEMPER, laws=False)
    pcs = {int(o): v["estimate"] for o, v in at_cap["pc"].items() if v.get("bracketed")}
    return {"phase": at_cap, "budget": cap, "budget_check": budget_check(at_cap, at_half, cap),
            "grok_time": grok_time_law(table, pcs) if pcs else None, "runs": _runs(table, spec.steps, cap),
            "temper": TEMPER}
