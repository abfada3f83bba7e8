"""The phase recipe (paper Thm 4, Fig 5): the sample-size threshold p_c(M) and the law it follows.

`run(ctx)` searches p_c(M) adaptively (li2.studies.search: per M, bisection on ln p over seeds, budget-
aware outcomes, undecided runs continued to the budget cap), analyses it (li2.studies.search_analysis:
p_c with tempered profile-likelihood intervals, the budget-doubling check, every law p_c(M) could
follow fitted by likelihood and compared, the grokking-time law with held-out errors) and writes into
ctx.out:

    search/                          the search (search.yaml, runs/, results.parquet; a rerun resumes it)
    analysis.json                    the whole analysis
    pc.parquet, laws.parquet         p_c(M) at the budget cap and at half of it; every law with its CIs
    grok_time.parquet                the grokking-time fits (per M and joint) with held-out errors
    phase.png, phase.svg             runs over (M, p), p_c(M) with every fitted law, grok time vs p/p_c − 1
    findings.json                    claim, settings, deviations, measured, rule, verdict

Settings. Adam with coupled L2, lr 2e-3 (li2's default; the paper's Fig 5 states 5e-4) and η = 2e-4 (Fig 5's),
σ = x², centred MSE, early stop once test acc ≥ 0.95 held for 100 steps, width K = κ·M, κ = 8.
Why η = 2e-4 and not li2's default 5e-4: with coupled L2, Adam normalises loss gradient plus η·θ, and where
the loss gradient of a weight is small next to η·θ the step is ≈ lr·sign(θ) — pure shrinkage. That
happens for large M (the mean-loss gradient of a W entry falls like 1/M, η·θ like 1/√M) and for large n:
at Z127, K = 1016, η = 5e-4 the weights collapsed to ‖W‖ ≈ 0 within 100 steps at every p ≥ 1.3·p_ref
(and at lr 1e-3 and 5e-4 too), an absorbing state for σ = x² — no run above p_c could generalise. At
η = 2e-4 ‖W‖ grew to ≈ 48 and the runs grokked (1100 steps at 1.33·p_ref, 200 at 2·p_ref). η = 5e-5 with the
paper's Figs 10–16 lr 5e-3 did not collapse either but had not grokked Z41 at 1.33·p_ref in 1500 steps.
Why κ = 8: the width check (benchmarks/phase_width.py: Z41, these settings, cap 4000, 12 runs per κ) found
p_c = 0.330 [0.300, 0.354] at κ = 4, 0.242 [0.229, 0.253] at κ = 8 and 0.237 [0.226, 0.249] at κ = 16: p_c
falls by a quarter from κ = 4 to 8 and then stays inside κ = 8's interval (κ = 16 cost 3× as much). The
full size repeats the check at M = 71 (κ = 16 against κ = 8).
Base budget 1000 steps (quick) / 2000 (full), continued to 4000 / 16000 while undecided.
Executors: quick and smoke train on a local process pool (ctx.workers); full on Ray — the cluster at
$LI2_RAY_ADDRESS, else a local Ray instance of ctx.workers CPUs (one session for both searches).

Verdict rule (fixed before the data of this design were seen; `verdict` implements it):
    needs ≥ 3 bracketed M, else inconclusive.
    form:     the law comparison of li2.studies.laws over the bracketed M — contradicts if c·ln M/M is
              "excluded" (its likelihood-ratio test inside a·M^−b·ln M, i.e. b = 1, rejected at 5%, or
              ΔAICc > 10); supports if it is "not excluded" (not rejected, ΔAICc ≤ 4) while its one-parameter
              rival c/√M is not (c/√M excluded or disfavoured: the data can tell the two apart); else
              inconclusive (in particular when both fit: the range of M cannot decide).
              Amended after the first quick run (which found p_c still moving with the budget): when the
              budget check fails, p_c carries a budget bias that may depend on M, so the form must also hold
              for the budget-free divergence points p_c* of the grokking-time law (li2.studies.grok_time:
              contradicts if the CI of b*_log excludes 1; supports if it includes 1 and the CI of b* excludes
              ½; else inconclusive); where the two disagree the form is inconclusive.
    constant: supports if the 95% CI of c overlaps [2.7482/1.25, 2.7482·1.25] = [2.20, 3.44] (c depends on
              the optimiser, width and budget, which differ from the reference code's calibration),
              contradicts if it lies wholly outside.
    budget:   supports if doubling the budget (cap/2 → cap) moved no p_c(M) outside its interval,
              else inconclusive (p_c is then bound to the budget).
    overall:  contradicts if form or constant contradicts; supports if every M is bracketed and all
              three support; else inconclusive.
"""
from __future__ import annotations

import json
import os
from contextlib import nullcontext

import pandas as pd

from ..store import jsonable, write_json, write_parquet
from ..studies.pool import ray_session
from ..studies.search import SearchSpec, estimate_cost, run_search
from ..studies.search_analysis import analyse_search
from ..task import REFERENCE_C, critical_ratio
from ..views.study_figures import phase_figure
from .common import Findings, Plan, RecipeContext, deviation

CLAIM = ("The training-set ratio above which two-layer networks generalise on group arithmetic scales as "
         "p_c = c·ln M / M (natural log), with c ≈ 2.7482 in the reference code (paper Thm 4, Fig 5; "
         "docs/theory.md#the-scaling-law--theorem-4).")
PAPER = {"figure": "Fig 5 (Thm 4)", "groups": "Z_M, M prime and composite, up to 127; products; non-abelian",
         "width": 2048, "optimiser": "not stated", "lr": 5e-4, "weight_decay": 2e-4, "seeds": 20,
         "p_grid": "not stated", "p_c definition": "not stated", "c": "not stated (reference code: 2.7482)",
         "steps": "not stated"}
TRAINING = {"weight_decay": 2e-4, "early_stop": True, "stop_margin": 100, "grok_threshold": 0.95, "diagnostics": "off",
            "checkpoint_every": 1000}
C_BAND = (REFERENCE_C / 1.25, REFERENCE_C * 1.25)
MIN_BRACKETED = 3
RULE = (f"needs >= {MIN_BRACKETED} bracketed M, else inconclusive. form: contradicts if c·ln M/M is excluded by the "
        "law comparison (LR test of b = 1 inside a·M^-b·ln M rejected at 5%, or ΔAICc > 10); supports if it is not "
        "excluded (not rejected, ΔAICc <= 4) while c/sqrt(M) is excluded or disfavoured (ΔAICc > 4 or its LR test "
        "of b = 1/2 inside a·M^-b rejected); else inconclusive; when the budget check fails, the same verdict must "
        "come from the budget-free p_c* of the grokking-time law (contradicts if the CI of b*_log excludes 1, supports "
        "if it includes 1 and the CI of b* excludes 1/2), else the form is inconclusive. constant: supports if the 95% CI of c overlaps "
        f"[{C_BAND[0]:.3f}, {C_BAND[1]:.3f}] (2.7482/1.25 .. 2.7482·1.25), contradicts if it lies outside. budget: "
        "supports if doubling the budget (cap/2 -> cap) moved no p_c(M) outside its interval, else inconclusive. "
        "overall: contradicts if form or constant contradicts; supports if every M is bracketed and all three "
        "support; else inconclusive.")

# name → search settings (orders, κ, base budget, cap, runs per M)
SIZES = {
    "smoke": {"orders": (17, 19, 23), "kappa": 8, "steps": 150, "cap": 300, "max_runs": 5,
              "base": {"lr": 0.02, "weight_decay": 1e-3, "stop_margin": 20, "checkpoint_every": 0}},
    "quick-in-all": {"orders": (23, 31, 41, 53), "kappa": 8, "steps": 1000, "cap": 2000, "max_runs": 6},
    "quick": {"orders": (23, 31, 41, 53, 71, 97, 127), "kappa": 8, "steps": 1000, "cap": 4000, "max_runs": 10},
    "full": {"orders": (23, 31, 41, 53, 71, 97, 127, 163, 211, 257), "kappa": 8, "steps": 2000, "cap": 16000,
             "max_runs": 16},
}
WIDTH_CHECK = {"order": 71, "kappas": (16,)}    # full: the same search at M = 71 with these κ as well


def size_name(size: str, in_all: bool) -> str:
    # `reproduce all --quick` cannot afford 7 group orders: the reduced study is a recorded deviation
    return "quick-in-all" if size == "quick" and in_all else size


def search_spec(name: str, kappa: float | None = None, orders=None) -> SearchSpec:
    s = SIZES[name]
    return SearchSpec.parse({"name": f"phase-{name}", "base": {**TRAINING, "steps": s["steps"], **s.get("base", {})},
                             "orders": list(orders or s["orders"]), "kappa": kappa or s["kappa"],
                             "budget_cap": s["cap"], "max_runs": s["max_runs"]})


def _setting(name: str) -> dict:
    s = SIZES[name]
    return {"orders": list(s["orders"]), "width": f"K = {s['kappa']}·M", "optimizer": "adam (coupled L2)",
            "lr": 2e-3, "weight_decay": 2e-4, "activation": "sqr", "loss": "mse (class-centred)",
            "budget": f"{s['steps']} steps, undecided runs continued to {s['cap']}",
            "runs_per_order": f"adaptive, at most {s['max_runs']}", "success": "test acc >= 0.95 within the budget"}


def _deviations(name: str) -> list[dict]:
    s = SIZES[name]
    devs = [deviation("width K", 2048, f"{s['kappa']}·M", "K grows with M so every M has the same room for features; "
                      "κ from the measured width check (module doc); 2048 at every M costs 8–60× more at small M"),
            deviation("lr", 5e-4, 2e-3, "li2's default: grokking ≈ 2× sooner (measured grok time ∝ lr^−0.53); the "
                      "paper's η = 2e-4 is kept (li2's default 5e-4 collapses the weights at M = 127, module doc)"),
            deviation("p grid, seeds", "grid not stated, 20 seeds", "adaptive search, one seed per run",
                      "runs land where p_c is; the tempered intervals say how well it is known"),
            deviation("p_c definition", "not stated", "50% point of P(test acc >= 0.95 within the budget) in ln p",
                      "the budget is stated with p_c and checked by doubling it")]
    if name == "quick":
        devs.append(deviation("largest M", "127", "127 (full: 257)", "the quick budget of ≈ 15 min on 2 cores"))
    if name == "quick-in-all":
        devs.append(deviation("group orders", "up to 127", "23–53, 6 runs each, cap 2000 steps",
                              "`reproduce all --quick` leaves the phase recipe ≈ 3 min"))
    if name == "smoke":
        devs.append(deviation("everything", "—", "Z17–Z23, K = 8·M, 150–300 steps, lr 0.02, η 1e-3", "tests only"))
    return devs


def plan(size: str, in_all: bool = False) -> Plan:
    name = size_name(size, in_all)
    spec = search_spec(name)
    cost = estimate_cost(spec)
    runs, seconds = cost["runs"], cost["typical_core_seconds"]
    if size == "full":
        check = search_spec(size, WIDTH_CHECK["kappas"][0], [WIDTH_CHECK["order"]])
        runs += estimate_cost(check)["runs"]
        seconds += estimate_cost(check)["typical_core_seconds"]
    return {"runs": runs, "core_hours": float(f"{seconds / 3600:.4g}"), "paper_setting": PAPER,
            "setting": _setting(name), "deviations": _deviations(name)}


# -- verdict ------------------------------------------------------------------------------------------

FORM_VERDICT = {"not excluded": "supports", "excluded": "contradicts", "disfavoured": "inconclusive"}


def form_verdict(law: dict) -> tuple[str, str]:
    """(verdict, reason) on the form c·ln M/M from a compare_laws result (RULE's "form" part before the budget
    check): its own status decides, but "supports" needs the rival c/√M excluded or disfavoured."""
    mine, test = law["forms"]["c*ln(M)/M"], law["lr_tests"]["c*ln(M)/M"]
    rival = law["forms"]["c/sqrt(M)"]
    form = FORM_VERDICT[mine["status"]]
    if form == "supports" and rival["status"] == "not excluded":
        form = "inconclusive"
    p_txt = "n/a" if test["p_value"] is None else f"{test['p_value']:.3g}"
    return form, (f"c·ln M/M is {mine['status']} (LR test of b = 1: p = {p_txt}; Δ{law['criterion'].upper()} = "
                  f"{mine['delta']:.2f}), c/√M is {rival['status']} (Δ = {rival['delta']:.2f}); preferred "
                  f"{law['preferred']} → {form}")


def verdict(analysis: dict) -> tuple[str, dict, list[str]]:
    """(verdict, {"form", "constant", "budget"}, reasons) from an analyse_search result, by RULE."""
    phase = analysis["phase"]
    n_in = len(phase.get("bracketed_orders") or [])
    if n_in < MIN_BRACKETED or phase.get("c_ci") is None or not phase.get("law"):
        reason = f"{n_in} bracketed M (need {MIN_BRACKETED}) or no CI for c"
        return "inconclusive", {"form": "inconclusive", "constant": "inconclusive", "budget": "inconclusive"}, [reason]
    form, why = form_verdict(phase["law"])
    reasons = [f"form: {why}"]
    check = analysis["budget_check"]
    if not check["stable"]:
        star = (analysis.get("grok_time") or {}).get("pc_star_law")
        free = _budget_free_form(star)
        if free != form:
            reasons.append(f"form: p_c is budget-bound and the budget-free p_c* says {free} → inconclusive")
            form = "inconclusive"
        else:
            reasons.append(f"form: the budget-free p_c* agrees ({_star_text(star)})")
    lo, hi = phase["c_ci"]
    constant = "supports" if hi >= C_BAND[0] and lo <= C_BAND[1] else "contradicts"
    reasons.append(f"constant: c = {phase['c']:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] vs band "
                   f"[{C_BAND[0]:.3f}, {C_BAND[1]:.3f}] → {constant}")
    budget = "supports" if check["stable"] else "inconclusive"
    moved = [o for o, v in check["per_order"].items() if v.get("within_ci") is not True]
    reasons.append(f"budget: doubling {check['budgets'][0]} → {check['budgets'][1]} steps moved "
                   + (f"p_c outside its interval (or left it unbracketed) at M = {', '.join(moved)}" if moved
                      else "no p_c outside its interval") + f" → {budget}")
    parts = {"form": form, "constant": constant, "budget": budget}
    if "contradicts" in (form, constant):
        overall = "contradicts"
    elif all(v == "supports" for v in parts.values()) and phase.get("bracketed"):
        overall = "supports"
    else:
        overall = "inconclusive"
        if not phase.get("bracketed"):
            reasons.append(f"not every M bracketed: {phase.get('unbracketed_orders')}")
    return overall, parts, reasons


def _budget_free_form(star: dict | None) -> str:
    """The form verdict from the budget-free p_c*(M) exponents (RULE), "inconclusive" without them."""
    if not star:
        return "inconclusive"
    lo, hi = star["b_log_ci"]
    if not lo <= 1.0 <= hi:
        return "contradicts"
    return "supports" if not star["b_ci"][0] <= 0.5 <= star["b_ci"][1] else "inconclusive"


def _star_text(star: dict | None) -> str:
    if not star:
        return "no budget-free p_c*"
    return (f"b*_log = {star['b_log']:.3f} [{star['b_log_ci'][0]:.3f}, {star['b_log_ci'][1]:.3f}], "
            f"b* = {star['b']:.3f} [{star['b_ci'][0]:.3f}, {star['b_ci'][1]:.3f}]")


# -- outputs ------------------------------------------------------------------------------------------

def pc_table(analysis: dict) -> pd.DataFrame:
    rows = []
    check = analysis["budget_check"]["per_order"]
    for order, v in analysis["phase"]["pc"].items():
        ci = v.get("ci") or [None, None]
        b = check.get(order, {})
        runs = analysis["runs"].get(order, {})
        rows.append({"order": int(order), "pc": v.get("estimate"), "pc_lo": ci[0], "pc_hi": ci[1],
                     "bracketed": bool(v.get("bracketed")), "reason": v.get("reason"), "budget": analysis["budget"],
                     "pc_half_budget": b.get("pc_half"), "shift_on_doubling": b.get("shift"),
                     "within_ci": b.get("within_ci"), "pc_reference": critical_ratio(int(order)),
                     "runs": runs.get("runs"), "undecided_at_cap": runs.get("undecided_at_cap")})
    return pd.DataFrame(rows).astype({"pc": "float64", "pc_lo": "float64", "pc_hi": "float64",
                                      "pc_half_budget": "float64", "shift_on_doubling": "float64"})


def laws_table(analysis: dict) -> pd.DataFrame:
    law = analysis["phase"].get("law") or {"forms": {}}
    rows = [{"form": name, "params": json.dumps(f["params"]), "params_ci": json.dumps(f.get("params_ci")),
             "loglik": f["loglik"], "tau": f["tau"], "aic": f["aic"], "aicc": f.get("aicc"), "delta": f["delta"],
             "weight": f["weight"], "status": f["status"]} for name, f in law["forms"].items()]
    return pd.DataFrame(rows, columns=["form", "params", "params_ci", "loglik", "tau", "aic", "aicc", "delta",
                                       "weight", "status"])


def grok_time_table(analysis: dict) -> pd.DataFrame:
    gt = analysis.get("grok_time") or {}
    fits = [("joint", f, r) for f, r in (gt.get("joint") or {}).items()]
    fits += [("joint", "critical_free", gt.get("critical_free"))]
    fits += [(o, f, r) for o, d in (gt.get("per_order") or {}).items() for f, r in d.items()]
    rows = [{"scope": s, "form": f, "params": json.dumps(r["params"]), "n": r["n"],
             "rms_log_in_sample": r["rms_log_in_sample"], "held_out_rms_log": r["held_out"]["rms_log"],
             "held_out_median_factor": r["held_out"]["median_factor"]} for s, f, r in fits if r]
    return pd.DataFrame(rows, columns=["scope", "form", "params", "n", "rms_log_in_sample", "held_out_rms_log",
                                       "held_out_median_factor"])


def measured(analysis: dict) -> dict:
    """findings.json's numbers: c, the laws with CIs and evidence, p_c per M with its budget, the time law."""
    phase, gt = analysis["phase"], analysis.get("grok_time") or {}
    law = phase.get("law") or {}
    forms = {n: {k: f.get(k) for k in ("params", "params_ci", "tau", "aic", "aicc", "delta", "weight", "status")}
             for n, f in (law.get("forms") or {}).items()}
    joint = {f: {"params": r["params"], "n": r["n"], "held_out": r["held_out"]}
             for f, r in (gt.get("joint") or {}).items() if r}
    free = gt.get("critical_free")
    return {
        "c": phase.get("c"), "c_ci": phase.get("c_ci"), "c_scatter_tau": phase.get("c_scatter_tau"),
        "budget_steps": analysis["budget"], "budget_check": analysis["budget_check"],
        "pc": {o: {"estimate": v.get("estimate"), "ci": v.get("ci"), "reason": v.get("reason"),
                   "budget": analysis["budget"]} for o, v in phase["pc"].items()},
        "bracketed": phase.get("bracketed"), "bracketed_orders": phase.get("bracketed_orders"),
        "laws": forms, "exponent_ci": law.get("exponent"), "lr_tests": law.get("lr_tests"),
        "preferred": law.get("preferred"), "preferred_criterion": law.get("criterion"),
        "evidence": law.get("evidence"),
        "pc_star_law": gt.get("pc_star_law"),
        "grok_time": {"best": gt.get("best"), "joint": joint,
                      "critical_free": {"params": free["params"], "held_out": free["held_out"],
                                        "nearest_run_above_pc_star": free["nearest_run_above_pc_star"]}
                      if free else None,
                      "null_held_out": (gt.get("null") or {}).get("held_out"), "n_grokked": gt.get("n_grokked"),
                      "n_censored_above_pc": gt.get("n_censored_above_pc"), "note": gt.get("note")},
        "runs": analysis["runs"], "note": phase.get("note"),
    }


def headline(m: dict) -> str:
    if m.get("c") is None:
        return f"p_c bracketed for {len(m.get('bracketed_orders') or [])} orders; no fit of c"
    lo, hi = m["c_ci"]
    b = (m.get("exponent_ci") or {}).get("a*M^-b")
    law = f"preferred law {m['preferred']}" + (f" (b = {b['b']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}])" if b else "")
    free = m["grok_time"].get("critical_free") or {}
    nu = free.get("params", {}).get("nu")
    err = (free.get("held_out") or {}).get("median_factor")
    time_txt = (f"; T ∝ (p/p_c* − 1)^−{nu:.2f} (held-out median error ×{err:.2f})" if nu is not None and err else "")
    return f"c = {m['c']:.2f} [{lo:.2f}, {hi:.2f}] at {m['budget_steps']} steps; {law}{time_txt}"


def _width_check(ctx: RecipeContext, name: str, analysis: dict) -> dict | None:
    """full: the M = 71 search again at each κ of WIDTH_CHECK; p_c must stay inside the κ = 8 interval."""
    if name != "full":
        return None
    order = str(WIDTH_CHECK["order"])
    base = analysis["phase"]["pc"].get(order, {})
    out = {"order": int(order), "kappa": SIZES[name]["kappa"], "pc": base.get("estimate"), "ci": base.get("ci"),
           "others": {}}
    for kappa in WIDTH_CHECK["kappas"]:
        spec = search_spec(name, kappa, [WIDTH_CHECK["order"]])
        table = run_search(spec, ctx.out / f"width-kappa{kappa:g}", "ray", ctx.workers,
                           os.environ.get("LI2_RAY_ADDRESS"))
        other = analyse_search(table, spec)["phase"]["pc"].get(order, {})
        inside = bool(base.get("ci") and other.get("estimate") and base["ci"][0] <= other["estimate"] <= base["ci"][1])
        out["others"][f"{kappa:g}"] = {"pc": other.get("estimate"), "ci": other.get("ci"), "inside_base_ci": inside}
    return out


def run(ctx: RecipeContext) -> Findings:
    """Search p_c(M) at this size, analyse it, judge by RULE (module doc)."""
    name = size_name(ctx.size, ctx.in_all)
    spec = search_spec(name)
    cost = estimate_cost(spec)
    executor = "ray" if ctx.size == "full" else "local"
    ctx.log(f"phase ({name}): {len(spec.orders)} group orders, at most {cost['runs']} runs on {ctx.workers} "
            f"{executor} workers; estimated {cost['typical_core_seconds'] / 3600:.2f} core-hours (upper bound "
            f"{cost['upper_core_seconds'] / 3600:.2f}), ≈ {cost['typical_core_seconds'] / ctx.workers / 60:.0f} min")
    done = [0]

    def tick(line: str) -> None:   # one line per finished M, and a count every 10 trainings
        if " after " in line:
            ctx.log(f"  phase: {line}")
        else:
            done[0] += 1
            if done[0] % 10 == 0:
                ctx.log(f"  phase: {done[0]} trainings done")

    address = os.environ.get("LI2_RAY_ADDRESS")
    with ray_session(ctx.workers, address) if executor == "ray" else nullcontext():
        table = run_search(spec, ctx.out / "search", executor, ctx.workers, address, tick)
        analysis = jsonable(analyse_search(table, spec))
        analysis["width_check"] = _width_check(ctx, name, analysis)
    write_json(ctx.out / "analysis.json", analysis)
    write_parquet(ctx.out / "pc.parquet", pc_table(analysis))
    write_parquet(ctx.out / "laws.parquet", laws_table(analysis))
    write_parquet(ctx.out / "grok_time.parquet", grok_time_table(analysis))
    phase_figure(table, analysis["phase"], ctx.out / "phase.png", ctx.out / "phase.svg", analysis.get("grok_time"))
    verdict_, parts, reasons = verdict(analysis)
    m = measured(analysis)
    m.update(width_check=analysis["width_check"], cost_estimate=cost, trainings=done[0],
             core_seconds=round(float(pd.to_numeric(table["wall_seconds"], errors="coerce").sum()), 1))
    return {"claim": CLAIM, "paper_setting": PAPER, "setting": _setting(name), "deviations": _deviations(name),
            "expected": {"c": REFERENCE_C, "form": "c*ln(M)/M", "c_band": list(C_BAND),
                         "pc_reference": {str(o): critical_ratio(o) for o in spec.orders}},
            "measured": m, "headline": headline(m), "verdict": verdict_, "verdict_parts": parts, "reasons": reasons,
            "rule": RULE, "setup": {"size": name, "search": spec.model_dump(), "workers": ctx.workers},
            "figures": ["phase.png", "phase.svg"],
            "tables": ["search/results.parquet", "pc.parquet", "laws.parquet", "grok_time.parquet"]}
