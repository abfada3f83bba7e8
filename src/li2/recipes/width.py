"""The width recipe (Lemma 1, §7 "the number of hidden nodes K"): very wide layers shrink the leaked gradient
‖G_F(+∞)‖ (towards the NTK regime, no feature learning), and K must be large enough to hold every feature.

The paper claims only these two things about K — not that grok time rises steadily with K under Adam.
Three measurements:
  closed form — at initialisation, G_F(+∞) = η(F̃F̃ᵀ + ηI)⁻¹ỸỸᵀF̃(F̃ᵀF̃ + ηI)⁻¹ (Eqn 4, the paper's
      sample-centred F̃ = P⊥₁F, Ỹ = P⊥₁Y on the training rows) for K over three decades, per seed;
      its per-node norm ‖G_F‖_F/√K, and its coefficient a(K) = ⟨G_F, ỸỸᵀF̃⟩/‖ỸỸᵀF̃‖² against Lemma 1's
      η/((Kc₁ + η)(nc₂ + η)), with c₁ = c₂ = ‖F̃‖²/(nK) (the lemma's F̃F̃ᵀ ≈ Kc₁I, F̃ᵀF̃ ≈ nc₂I).
  training — grok step against K under SGD (momentum 0.9: the closest to the theory's gradient flow) and
      under Adam, and ‖G_F‖ per node at the end of Stage I (li2's detected lazy_end) from the runs.
  coverage — the smallest K of the grid at which every seed's learned nodes cover all (M−1)/2 frequencies.

Closed-form probe (Z41, p = 0.5, n = 840, seed 0): per-node ‖G_F(+∞)‖ at η = 2e-4 is 15.2, 15.7, 17.5,
1.23, 4.5e-3, 1.9e-4 for K = 16, 64, 256, 1024, 4096, 16384 — flat while K < n, then it collapses
(slope ≈ −2 to −4 in log-log beyond K ≈ n): "very large K shrinks ‖G_F‖" holds, faster than Lemma 1's
1/K, whose premise (F̃ᵀF̃ ∝ I) cannot hold once K > n (rank F̃ ≤ n). Lemma 1's coefficient is off by
0.08–92× over that range (c₁ ≈ 9e-5 at the default init). Why K⁻²: once K > n, F̃F̃ᵀ ≈ Kc₁I holds but
F̃ᵀF̃ (rank ≤ n) is not ≈ nc₂I; then F̃(F̃ᵀF̃ + ηI)⁻¹ = (F̃F̃ᵀ + ηI)⁻¹F̃ ≈ F̃/(Kc₁), so G_F(+∞) ≈
η/(Kc₁)²·ỸỸᵀF̃ — the lemma's (nc₂ + η) becomes (Kc₁ + η).
SGD probe (Z41, p = 0.5, η = 5e-4, momentum 0.9): lr 0.3 / 3 / 30 → grok 600 / 105 / diverged at K = 64,
675 / 120 / diverged at K = 512; the recipe uses lr 2.
First quick run (2 seeds; 108 s wall on 2 busy shared cores): closed-form per-node slope between
K = 4096 and 16384 −2.27 (CI ±0.01), coefficient slope −2.13; SGD mean grok step 3000 (never) / 132 /
388 / 362 at K = 8 / 64 / 512 / 4096 (ρ = 0.5: rises, then flat), Adam 3000 / 190 / 238 / 100;
per-node ‖G_F‖ at the detected end of Stage I (SGD) 2.23 / 0.94 / 0.32 for K = 64 / 512 / 4096; all 20
frequencies covered from K = 64, K = 8 covers 5–8.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..algebra.groups import get_group
from ..engine.model import init_params
from ..runs.folder import open_run
from ..store import write_parquet
from ..task import make_task, split
from ..theory.ridge import backprop_gradient_at_ridge
from ..views.figures import pyplot, save_both
from .common import (
    Findings,
    Plan,
    RecipeContext,
    combine,
    deviation,
    grid_configs,
    make_plan,
    mean_ci,
    pick,
    plan_setting,
    spearman,
    train_runs,
)

CLAIM = ("Lemma 1 and §7: very large K shrinks the leaked gradient ‖G_F(+∞)‖ ∝ η/(Kc₁ + η), slowing feature "
         "learning (the NTK limit K → ∞ learns no features); and K must be large enough to hold all the features.")
RULE = (
    "shrinks (closed form): per seed, the log-log slope of the per-node ‖G_F(+∞)‖ between the two largest K of the "
    "grid; supports if the 95% t-interval over seeds lies below 0, contradicts if above 0, else inconclusive. "
    "lemma1_form: the same slope for the coefficient a(K) between the two largest K; Lemma 1 predicts −1 there "
    "(Kc₁ ≫ η); supports if the interval contains −1, contradicts if it excludes −1, else inconclusive. "
    "slower_sgd (training, SGD): Spearman ρ(K, mean grok step, a run that never generalises counted at the budget) "
    "over the widths >= the width with the earliest mean grok step; supports if ρ >= 0.8 over >= 3 widths with the "
    "largest width's mean grok step >= 1.25× the earliest, contradicts if ρ <= −0.8, else inconclusive (Adam: the "
    "same numbers, reported, not judged — the paper claims nothing for Adam). enough_nodes: supports if the smallest "
    "width (< L features) covers fewer than L frequencies in every seed AND some width covers all L in every seed; "
    "contradicts if the smallest width covers all L; else inconclusive. overall: contradicts if a part contradicts, "
    "supports if all support, else inconclusive.")
PAPER = {"statement": "Lemma 1, §7 'The number of hidden nodes K'", "experiment": "none dedicated",
         "closed_form": "G_F(+∞) = η/((Kc₁+η)(nc₂+η)) ỸỸᵀF̃ for large K", "claims": "very large K shrinks "
         "‖G_F(+∞)‖ (slower feature learning); K must be large enough to cover the local maxima"}


def _setting(size: str) -> dict:
    return {"group": pick(size, "Z11", "Z41", "Z41"), "train_ratio": pick(size, 0.6, 0.5, 0.5),
            "weight_decay": 2e-4, "activation": "sqr", "loss": "mse",
            "closed_form_widths": pick(size, [8, 64, 512], [16, 64, 256, 1024, 4096, 16384],
                                       [16, 64, 256, 1024, 4096, 16384, 65536]),
            "closed_form_seeds": pick(size, 2, 4, 8),
            "train_widths": pick(size, [4, 16], [8, 64, 512, 4096], [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]),
            "sgd_lr": 2.0, "sgd_momentum": 0.9, "adam_lr": 2e-3,
            "seeds": pick(size, 1, 2, 4), "steps": pick(size, 40, 3000, 10000)}


def _configs(s: dict) -> list[dict]:
    base = dict(group=s["group"], train_ratio=s["train_ratio"], weight_decay=s["weight_decay"],
                activation=s["activation"], loss=s["loss"], steps=s["steps"], early_stop=True, stop_margin=50,
                diagnostics="basic", checkpoint_every=0)
    return (grid_configs({**base, "optimizer": "sgd", "lr": s["sgd_lr"], "momentum": s["sgd_momentum"]},
                         {"width": s["train_widths"], "seed": list(range(s["seeds"]))})
            + grid_configs({**base, "optimizer": "adam", "lr": s["adam_lr"]},
                           {"width": s["train_widths"], "seed": list(range(s["seeds"]))}))


def plan(size: str, in_all: bool = False) -> Plan:
    s = _setting(size)
    devs = [deviation("experiment", "none (Lemma 1 and §7 are statements)", f"{s['group']}, p = {s['train_ratio']}, "
                      f"η = {s['weight_decay']}, K {s['train_widths']}", "a setting of the paper's own kind (Fig 3's "
                      "η, σ = x², MSE); M = 41 keeps n = 840 so the grid spans K < n and K > n")]
    if size != "full":
        devs.append(deviation("widths, seeds, steps", "—", f"K {s['train_widths']}, {s['seeds']} seeds, "
                              f"{s['steps']} steps", "the quick budget"))
    n = round(s["train_ratio"] * int(s["group"][1:]) ** 2)
    cf = sum(3e-9 * n * k * min(n, k) + 2e-9 * n * n * n for k in s["closed_form_widths"]) * s["closed_form_seeds"]
    return make_plan(_configs(s), PAPER, s, devs, extra_core_seconds=cf)


def closed_form(group_name: str, ratio: float, eta: float, widths: list[int], seeds: int) -> pd.DataFrame:
    """G_F(+∞) of Eqn 4 at the default init, paper's sample centring, for every width and seed (float64)."""
    G = get_group(group_name)
    task = make_task(G, 2)
    rows = []
    for seed in range(seeds):
        tr, _ = split(task.num_samples, ratio, seed)
        x, y = task.inputs[tr], task.labels[tr]
        n = len(y)
        Y = torch.nn.functional.one_hot(y, G.order).double()
        Yt = Y - Y.mean(0)
        for K in widths:
            W = init_params(G.order, 2, K, 0, seed, 1.0, 1.0, torch.float64)["W"]
            F = (W[x[:, 0]] + W[G.order + x[:, 1]]) ** 2
            Ft = F - F.mean(0)
            Gf = backprop_gradient_at_ridge(Ft, Yt, eta)
            S = Yt @ (Yt.T @ Ft)
            c = float((Ft * Ft).sum()) / (n * K)
            rows.append({"seed": seed, "width": K, "n": n, "grad_norm": float(Gf.norm()),
                         "per_node": float(Gf.norm()) / math.sqrt(K),
                         "coefficient": float((Gf * S).sum() / (S * S).sum()),
                         "lemma1_coefficient": eta / ((K * c + eta) * (n * c + eta)), "c1": c,
                         "cosine_to_YYF": float((Gf * S).sum() / (Gf.norm() * S.norm()))})
    return pd.DataFrame(rows)


def top_slopes(df: pd.DataFrame, col: str) -> list[float]:
    """Per seed, d log(col) / d log K between the two largest widths."""
    out = []
    for _, g in df.groupby("seed"):
        g = g.sort_values("width").tail(2)
        out.append(math.log(g[col].iloc[1] / g[col].iloc[0]) / math.log(g.width.iloc[1] / g.width.iloc[0]))
    return out


def grok_trend(df: pd.DataFrame, budget: int) -> dict:
    """Mean grok step per width (never → budget) and Spearman ρ over widths from the fastest one up."""
    means = df.assign(g=df.grok_step.astype(float).fillna(budget)).groupby("width").g.mean()
    fastest = means.idxmin()
    tail = means[means.index >= fastest]
    rho = spearman(tail.index.values, tail.values) if len(tail) >= 3 else None
    return {"mean_grok_step": {str(int(k)): float(v) for k, v in means.items()}, "from_width": int(fastest),
            "spearman": rho, "growth": float(tail.iloc[-1] / max(tail.iloc[0], 1.0)),
            "never": {str(int(k)): int(g.grok_step.isna().sum()) for k, g in df.groupby("width")}}


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    parts, reasons = {}, []
    cf = m.get("closed_form") or {}
    s = cf.get("per_node_slope") or {}
    ci = s.get("ci")
    parts["shrinks"] = "inconclusive" if not ci else "supports" if ci[1] < 0 else "contradicts" if ci[0] > 0 else "inconclusive"
    reasons.append(f"per-node ‖G_F(+∞)‖ slope between the two largest K: {s.get('mean')} CI {ci} → {parts['shrinks']}")
    a = cf.get("coefficient_slope") or {}
    ci = a.get("ci")
    parts["lemma1_form"] = ("inconclusive" if not ci else "supports" if ci[0] <= -1 <= ci[1] else "contradicts")
    reasons.append(f"coefficient a(K) slope between the two largest K: {a.get('mean')} CI {ci} (Lemma 1: −1) → "
                   f"{parts['lemma1_form']}")
    t = (m.get("training") or {}).get("sgd") or {}
    rho = t.get("spearman")
    if rho is None:
        parts["slower_sgd"] = "inconclusive"
    elif rho >= 0.8 and t.get("growth", 0) >= 1.25:
        parts["slower_sgd"] = "supports"
    elif rho <= -0.8:
        parts["slower_sgd"] = "contradicts"
    else:
        parts["slower_sgd"] = "inconclusive"
    reasons.append(f"SGD grok step vs K {t.get('mean_grok_step')} (ρ = {rho} from K = {t.get('from_width')}, growth "
                   f"{t.get('growth')}) → {parts['slower_sgd']}")
    cov = m.get("coverage") or {}
    smallest, full_at, L = cov.get("smallest_width_min_coverage"), cov.get("smallest_width_covering_all"), cov.get("L")
    if smallest is None:
        parts["enough_nodes"] = "inconclusive"
    elif smallest >= L:
        parts["enough_nodes"] = "contradicts"
    elif full_at is not None:
        parts["enough_nodes"] = "supports"
    else:
        parts["enough_nodes"] = "inconclusive"
    reasons.append(f"coverage: smallest width covers at most {cov.get('smallest_width_max_coverage')} of L = {L}; every "
                   f"seed covers all L from K = {full_at} → {parts['enough_nodes']}")
    return combine(parts), parts, reasons


def _lazy_grad_per_node(ctx: RecipeContext, df: pd.DataFrame) -> list:
    """‖G_F‖_F/√K at the evaluation nearest each run's detected end of Stage I (None without one)."""
    out = []
    for r in df.itertuples():
        lazy = getattr(r, "stage_lazy_end", None)
        if lazy is None or pd.isna(lazy):
            out.append(None)
            continue
        m = open_run(ctx.out / "runs" / "runs" / r.run_id).metrics
        i = (m.step - lazy).abs().idxmin()
        out.append(float(m.grad_norm[i]) / math.sqrt(r.width))
    return out


def run(ctx: RecipeContext) -> Findings:
    s = _setting(ctx.size)
    cf = closed_form(s["group"], s["train_ratio"], s["weight_decay"], s["closed_form_widths"], s["closed_form_seeds"])
    write_parquet(ctx.out / "closed_form.parquet", cf)
    df = train_runs(ctx, ctx.out / "runs", _configs(s))
    df["lazy_end_grad_per_node"] = _lazy_grad_per_node(ctx, df)
    write_parquet(ctx.out / "runs.parquet", df)
    L = (int(s["group"][1:]) - 1) // 2
    adam = df[df.optimizer == "adam"]
    cov_min = adam.groupby("width").final_coverage.min()
    full = cov_min[cov_min >= L]
    smallest = int(min(s["train_widths"]))
    measured = {
        "closed_form": {"per_node_slope": mean_ci(top_slopes(cf, "per_node")),
                        "coefficient_slope": mean_ci(top_slopes(cf, "coefficient")),
                        "per_node_by_width": {str(k): mean_ci(g.per_node) for k, g in cf.groupby("width")},
                        "coefficient_over_lemma1": {str(k): float((g.coefficient / g.lemma1_coefficient).mean())
                                                    for k, g in cf.groupby("width")},
                        "n": int(cf.n.iloc[0])},
        "training": {opt: {**grok_trend(g, s["steps"]),
                           "lazy_end_grad_per_node": {str(int(k)): mean_ci(x.lazy_end_grad_per_node.dropna())
                                                      for k, x in g.groupby("width")}}
                     for opt, g in df.groupby("optimizer")},
        "coverage": {"L": L, "by_width_adam": {str(int(k)): mean_ci(g.final_coverage) for k, g in adam.groupby("width")},
                     "smallest_width_min_coverage": float(cov_min.get(smallest, np.nan)),
                     "smallest_width_max_coverage": float(adam[adam.width == smallest].final_coverage.max()),
                     "smallest_width_covering_all": int(full.index.min()) if len(full) else None}}
    verdict_, parts, reasons = verdict(measured)
    figs = _figure(ctx, cf, df, s["steps"])
    pn = measured["closed_form"]["per_node_by_width"]
    slope = measured["closed_form"]["coefficient_slope"]["mean"]
    headline = ("per-node ‖G_F(+∞)‖ " + ", ".join(f"K={k}: {v['mean']:.2g}" for k, v in pn.items())
                + f" (n = {measured['closed_form']['n']}; coefficient ∝ K^{slope:.2f} at the top, Lemma 1: K^-1)"
                + "; SGD mean grok step "
                + ", ".join(f"K={k}: {v:.0f}" for k, v in measured["training"].get("sgd", {}).get("mean_grok_step", {}).items())
                + f"; all {L} frequencies covered from K = {measured['coverage']['smallest_width_covering_all']}")
    return {"claim": CLAIM, **plan_setting(plan(ctx.size)), "measured": measured, "rule": RULE,
            "verdict": verdict_, "verdict_parts": parts, "reasons": reasons, "headline": headline,
            "expected": {"closed_form": "per-node ‖G_F(+∞)‖ falls at large K (Lemma 1: coefficient ∝ 1/K)",
                         "sgd": "grok step rises at large K", "coverage": f"K >= L = {L} needed"},
            "figures": figs, "tables": ["closed_form.parquet", "runs.parquet"]}


def _figure(ctx: RecipeContext, cf: pd.DataFrame, df: pd.DataFrame, budget: int) -> list[str]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    m = cf.groupby("width")[["per_node", "coefficient", "lemma1_coefficient"]].mean()
    axes[0].loglog(m.index, m.per_node, "o-", label="per-node ‖G_F(+∞)‖ (Eqn 4)")
    axes[0].loglog(m.index, m.coefficient, "s-", label="coefficient a(K)")
    axes[0].loglog(m.index, m.lemma1_coefficient, "k--", label="Lemma 1: η/((Kc₁+η)(nc₂+η))")
    axes[0].axvline(int(cf.n.iloc[0]), color="gray", ls=":", label="K = n")
    axes[0].set(xlabel="hidden nodes K", title="closed form at initialisation")
    axes[0].legend(fontsize=7)
    for i, (opt, g) in enumerate(df.groupby("optimizer")):
        y = g.assign(y=g.grok_step.astype(float).fillna(budget)).groupby("width").y.mean()
        axes[1].loglog(y.index, y.values, "o-", color=f"C{i}", label=opt)
        c = g.groupby("width").final_coverage.mean()
        axes[2].semilogx(c.index, c.values, "o-", color=f"C{i}", label=opt)
    axes[1].set(xlabel="hidden nodes K", ylabel="grok step (budget if never)", title="training")
    L = (int(df.order.iloc[0]) - 1) // 2
    axes[2].axhline(L, color="k", ls=":", label=f"all {L} frequencies")
    axes[2].set(xlabel="hidden nodes K", ylabel="frequencies covered", title="coverage")
    for ax in axes[1:]:
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_both(fig, ctx.out, "width")
