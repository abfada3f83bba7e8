"""The muon recipe (SPEC §6, §7.4): Adam vs Muon with few hidden nodes.

See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json and the sizes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..store import write_parquet
from ..views.figures import pyplot, save_both
from .common import Findings, RecipeContext, announce_estimate, combine, mean_ci, train_grid, welch_diff

# Muon's learning rate on W. Probe (Z71, K = 60, p = 0.25, η = 5e-4, 1500 steps, seed 0, 2 cores shared):
#   muon_lr 0.005 → test 0.09; 0.02 → 0.68; 0.05 → 0.988 (grok 1200); 0.1 → 0.978 (grok 800);
#   0.2 → 0.981 (grok 400); Adam lr 2e-3 → 0.979 (grok 500). 0.1 sits in the middle of the plateau
#   0.05–0.2 where Muon generalises; its RMS step (0.1·√K/√(2M·K)) is ≈ 4× Adam's. At p = 0.2 every
#   muon_lr tried (0.01–0.1, also with η = 5e-3, 2e-2) memorised while Adam generalised at K ≥ 90.
MUON_LR = 0.1

CLAIM = (
    'With few hidden nodes (K = 60–120, M = 71) Muon keeps nodes from collapsing onto the same maximum, '
    'so it covers more frequencies and reaches higher test accuracy than Adam (paper Lemma 2, Thm 8, Fig 8; '
    'docs/theory.md#muon--lemma-2-and-theorem-8).')
RULE = (
    "per training ratio p and width K: Welch 95% CI of mean(Muon) − mean(Adam) over seeds, for coverage (distinct "
    "frequencies learned) and final test acc. Per p: supports if Muon's coverage is higher with the CI above 0 at "
    ">= 2 of the K values and Muon's test acc is not lower on average (mean difference >= −0.005); contradicts if "
    "Adam's coverage is higher with the CI below 0 at >= 2 K values, or Muon is lower on average in BOTH coverage "
    "and test acc by more than the noise (average coverage difference < −0.5 and average test difference < "
    "−0.005); else inconclusive. overall: contradicts if some p contradicts, supports if every p supports, else "
    "inconclusive.")


def verdict_one_ratio(per: dict, label: str = "") -> tuple[str, list[str]]:
    """The rule above for one training ratio: per = {K: {"coverage_diff": {diff, ci}, "test_acc_diff": {…}}}."""
    reasons = []
    up = down = 0
    cov_d, test_d = [], []
    for k, v in per.items():
        c, t = v["coverage_diff"], v["test_acc_diff"]
        if c["diff"] is not None:
            cov_d.append(c["diff"])
        if t["diff"] is not None:
            test_d.append(t["diff"])
        ci = c.get("ci")
        if ci and ci[0] > 0:
            up += 1
        if ci and ci[1] < 0:
            down += 1
        reasons.append(f"{label}K={k}: coverage Muon − Adam = {c['diff']:+.2f} CI {_ci(ci)}, test acc Muon − Adam = "
                       f"{t['diff']:+.4f} CI {_ci(t.get('ci'))}")
    mc = float(np.mean(cov_d)) if cov_d else None
    mt = float(np.mean(test_d)) if test_d else None
    if not per or mc is None:
        v = "inconclusive"
    elif up >= 2 and (mt is None or mt >= -0.005):
        v = "supports"
    elif down >= 2 or (mc < -0.5 and mt is not None and mt < -0.005):
        v = "contradicts"
    else:
        v = "inconclusive"
    reasons.append(f"{label}coverage higher for Muon (CI > 0) at {up} K, lower (CI < 0) at {down} K; mean "
                   f"differences: coverage {mc if mc is None else f'{mc:+.2f}'}, test acc "
                   f"{mt if mt is None else f'{mt:+.4f}'} → {v}")
    return v, reasons


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    """m = {"per_ratio": {p: {"per_width": …}}} → (verdict, {"p=…": verdict}, reasons)."""
    parts, reasons = {}, []
    for p, v in (m.get("per_ratio") or {}).items():
        parts[f"p={p}"], why = verdict_one_ratio(v.get("per_width") or {}, f"p={p}: ")
        reasons += why
    if not parts:
        return "inconclusive", {"runs": "inconclusive"}, ["no runs"]
    return combine(parts), parts, reasons


def _ci(ci) -> str:
    return "n/a" if not ci else f"[{ci[0]:+.3g}, {ci[1]:+.3g}]"


def _per_width(df: pd.DataFrame) -> dict:
    out = {}
    for k, g in df.groupby("width"):
        a, mu = g[g.optimizer == "adam"], g[g.optimizer == "muon"]
        out[str(int(k))] = {
            "adam": {"coverage": mean_ci(a.final_coverage), "test_acc": mean_ci(a.final_test_acc)},
            "muon": {"coverage": mean_ci(mu.final_coverage), "test_acc": mean_ci(mu.final_test_acc)},
            "coverage_diff": welch_diff(mu.final_coverage, a.final_coverage),
            "test_acc_diff": welch_diff(mu.final_test_acc, a.final_test_acc)}
    return out


def run(ctx: RecipeContext) -> Findings:
    """Adam vs Muon with few hidden nodes, M = 71, K ∈ {60, 90, 120}: coverage and test accuracy over seeds.

    Two training ratios: p = 0.3 (≈ 1.8 p_c: enough data that the limit is the number of nodes) and
    p = 0.2 (≈ 1.2 p_c: scarce). η = 5e-4, Adam lr 2e-3 (coupled L2), Muon on W with muon_lr = MUON_LR
    and Adam on V; a fixed 2000-step budget (no early stop), so both optimisers are compared after the
    same number of steps: 1000 at p = 0.3, 2000 at p = 0.2 (Adam at K = 90, p = 0.2 generalised at step
    ≈ 1600 in a probe). quick: 3 seeds (36 runs, ≈ 2 min on 2 contended cores); full: 5 seeds, 3000 steps,
    p ∈ {0.2, 0.25, 0.3, 0.4}; smoke: Z11, K ∈ {6, 8, 10}, 2 seeds, 30 steps.
    """
    widths = ctx.pick((6, 8, 10), (60, 90, 120), (60, 90, 120))
    seeds = ctx.pick(2, 3, 5)
    base = dict(group="Z71", weight_decay=5e-4, lr=2e-3, muon_lr=MUON_LR,
                diagnostics="basic", eval_every=100, early_stop=False, checkpoint_every=0)
    base.update(ctx.pick(dict(group="Z11", eval_every=10), {}, {}))
    ratios = ctx.pick([0.5], [0.2, 0.3], [0.2, 0.25, 0.3, 0.4])
    # quick: p = 0.3 settles within 1000 steps (both optimisers generalise by step ≈ 300), p = 0.2 needs 2000
    budgets = ctx.pick({0.5: 30}, {0.2: 2000, 0.3: 1000}, {p: 3000 for p in ratios})
    announce_estimate(ctx, f"muon ({2 * len(widths) * seeds * len(ratios)} runs)", 25 * 60)
    frames = []
    for p in ratios:
        frames.append(train_grid(ctx, ctx.out / f"sweep-p{p:g}", {**base, "steps": budgets[p], "train_ratio": p},
                                 {"optimizer": ["adam", "muon"], "width": list(widths), "seed": {"range": [0, seeds]}}))
        frames[-1].insert(0, "train_ratio", p)
    df = pd.concat(frames, ignore_index=True)
    write_parquet(ctx.out / "runs.parquet", df)
    summ_rows = []
    for (p, opt, k), g in df.groupby(["train_ratio", "optimizer", "width"]):
        c, t = mean_ci(g.final_coverage), mean_ci(g.final_test_acc)
        summ_rows.append({"train_ratio": p, "optimizer": opt, "width": k, "seeds": c["n"],
                          "coverage_mean": c["mean"], "coverage_std": c["std"],
                          "coverage_ci_lo": (c["ci"] or [None, None])[0], "coverage_ci_hi": (c["ci"] or [None, None])[1],
                          "test_acc_mean": t["mean"], "test_acc_std": t["std"],
                          "test_acc_ci_lo": (t["ci"] or [None, None])[0], "test_acc_ci_hi": (t["ci"] or [None, None])[1]})
    summ = pd.DataFrame(summ_rows)
    write_parquet(ctx.out / "summary.parquet", summ)
    per_ratio = {f"{p:g}": {"per_width": _per_width(g)} for p, g in df.groupby("train_ratio")}

    plt = pyplot()
    order = int(df.order.iloc[0])
    fig, axes = plt.subplots(len(per_ratio), 2, figsize=(11, 3.8 * len(per_ratio)), squeeze=False)
    for row, (p, g_p) in zip(axes, df.groupby("train_ratio")):
        s = summ[np.isclose(summ.train_ratio, p)]
        for i, opt in enumerate(["adam", "muon"]):
            g = s[s.optimizer == opt].sort_values("width")
            pts = g_p[g_p.optimizer == opt]
            for ax, col, raw in zip(row, ("coverage", "test_acc"), ("final_coverage", "final_test_acc")):
                lo = (g[f"{col}_mean"] - g[f"{col}_ci_lo"]).fillna(0)
                hi = (g[f"{col}_ci_hi"] - g[f"{col}_mean"]).fillna(0)
                ax.errorbar(g.width + (i - 0.5) * 2, g[f"{col}_mean"], yerr=[lo, hi], fmt="o-", capsize=4,
                            label=opt + (f" (muon_lr {MUON_LR:g})" if opt == "muon" else f" (lr {base['lr']:g})"))
                ax.scatter(pts.width + (i - 0.5) * 2, pts[raw], color=f"C{i}", alpha=0.35, s=12)
        row[0].axhline((order - 1) // 2, color="k", ls=":", label=f"all {(order - 1) // 2} frequencies")
        row[0].set(xlabel="hidden nodes K", ylabel="frequencies covered", title=f"coverage (mean, 95% CI), p = {p:g}")
        row[1].set(xlabel="hidden nodes K", ylabel="final test accuracy",
                   title=f"test accuracy (mean, 95% CI), p = {p:g}")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    figs = save_both(fig, ctx.out, "muon_vs_adam")

    measured = {"per_ratio": per_ratio, "muon_lr": MUON_LR, "runs": int(len(df))}
    verdict_, parts, reasons = verdict(measured)

    def txt(p, per):
        cov = ", ".join(f"K={k} {v['muon']['coverage']['mean']:.1f} vs {v['adam']['coverage']['mean']:.1f}"
                        for k, v in per.items() if v["muon"]["coverage"]["mean"] is not None)
        acc = ", ".join(f"{v['muon']['test_acc']['mean']:.2f} vs {v['adam']['test_acc']['mean']:.2f}"
                        for v in per.values() if v["muon"]["test_acc"]["mean"] is not None)
        return f"p={p}: coverage Muon vs Adam {cov}; test acc {acc}"
    headline = " | ".join(txt(p, v["per_width"]) for p, v in per_ratio.items())
    return {"claim": CLAIM,
            "expected": {"coverage": "Muon > Adam", "test_acc": "Muon > Adam"},
            "measured": measured, "headline": headline, "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE,
            "setup": {"base": base, "widths": list(widths), "seeds": seeds, "ratios": ratios,
                      "steps": {f"{p:g}": n for p, n in budgets.items()},
                      "muon_lr_choice": "0.1: middle of the 0.05–0.2 plateau of a probe at K=60, p=0.25 (see "
                                        "li2.recipe_muon.MUON_LR)"},
            "figures": figs, "tables": ["runs.parquet", "summary.parquet"]}
