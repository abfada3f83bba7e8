"""The architectures recipe (issue 15; the paper's own "next check", §6): does the sample-size threshold
p_c = c·ln M / M (Thm 4, proved for the two-layer network) hold for deeper MLPs and for the one-layer
transformer in which grokking was found — with the same c or not — and which features do they learn?

Per architecture (li2's `--model`): the two-layer network (mlp2: σ = x², MSE, Adam 2e-3, η 5e-4), a
three-layer MLP (`--model mlp --depth 2`: two hidden layers and the top layer — the paper's deeper nets,
ReLU, MSE, Adam 5e-3, η 1e-4 as in Fig 17, no residual) and the transformer (Nanda et al.'s defaults:
CE, AdamW lr 1e-3, η 1, β₂ 0.98), each with its own defaults:
  p_c(M)     at M ∈ {23, 31, 41, 53, 71}: runs at ratios p = m·c_a·ln M/M for a few multiples m of an
             architecture reference c_a (placed from probes, below, so the grid straddles the transition),
             success = final test acc ≥ 0.95 within the step budget; p_c(M), its interval and the fit of
             c·ln M / M (c with its interval) by li2.studies.phase.analyse_phase, as the phase recipe.
  grok time  grok step against p/p_ref over the successful runs (Spearman ρ).
  features   the final embedding's key components (li2.theory.spectra.embedding_spectrum: the fewest
             irreps holding 80% of its non-trivial energy) of the successful runs, against (M−1)/2; for
             the MLPs also the node coverage (irreps learned by single nodes).
`--full` adds M ∈ {97, 127}, the paper-sized widths, 3× the step budgets and the peer check: the
transformer at Nanda et al.'s setting (P = 113, 30% of the data, the full 15,000-step budget without early
stop, as Nanda et al. train for a fixed budget) groks and its token embedding concentrates on a handful of
frequencies.

Probes that placed the grids (one seed, 1 thread, shared machine; grok step or final test acc, budget 3000):
  mlp3 K = 128, η 1e-4 (Fig 17's):  Z23 p 0.5/0.7/0.9 → 0.02/0.01/0.11; Z71 p 0.2/0.35/0.5 → 0.01/0.00/0.13
  mlp3 K = 256, η 1e-4:             Z23 p 0.7 → 2700, 0.9 → 2100; Z71 p 0.5 → 0.03, 0.75 → 185
  mlp3 K = 256, η 1e-3 (used):      Z23 p 0.3 → 0.00, 0.4 → 0.55, 0.6 → 525; Z71 p 0.25 → 1625, 0.5 → 125
      — η is the feature-learning rate (§7): at Fig 17's 1e-4 the ReLU MLP barely groks in the budget.
  mlp3 σ = x² (mlp2's lr and η):    does not even fit the training set (train acc 0.04 at Z23 p 0.6).
  transformer d 64, d_mlp 256:      Z23 p 0.4 → 0.13, 0.6 → 0.65, 0.8 → 2100; Z41 p 0.5 → 1100;
                                    Z71 p 0.25 → 0.02, 0.4 → 0.24, 0.55 → 825, 0.7 → 450
  mlp2 (the phase recipe's probes, K = 512, 2000 steps): Z23 fails at 0.30, succeeds at 0.375; Z71 at
  0.165 / 0.25.
So the grids are centred at c_a = 2.7482 (mlp2), 3.7 (mlp3), 6 (transformer) — where the probes put the
transition at M = 23; whether the other M's transitions sit at the same multiple is what is measured.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import StoreError, read_json, write_parquet
from ..studies.phase import analyse_phase
from ..views.figures import pyplot, save_both
from .common import (
    Findings,
    Plan,
    RecipeContext,
    combine,
    deviation,
    make_plan,
    mean_ci,
    pick,
    plan_setting,
    spearman,
    train_runs,
)
from .phase import form_verdict

CLAIM = ("Thm 4 / Fig 5, extended by §6 to deeper networks: the training ratio above which the network "
         "generalises scales as p_c = c·ln M / M — here asked of a two-layer network, a three-layer MLP and a "
         "one-layer transformer (Nanda et al.'s), with the same c or not.")
SUCCESS = 0.95
MIN_BRACKETED = 3
HANDFUL = 8            # the peer check: "a handful" of key frequencies is at most this many
MAX_RATIO = 0.9        # grid ratios are capped here: at p = 1 there is no test set, so nothing to measure
RULE = (f"per architecture, from li2.studies.phase.analyse_phase on its runs (success = final test acc >= {SUCCESS}): "
        f"needs >= {MIN_BRACKETED} bracketed M, else inconclusive; then the phase recipe's form rule on the law "
        f"comparison of analyse_phase (studies.laws: every form fitted by likelihood with each p_c weighted by its "
        f"interval): contradicts if c·ln M/M is excluded (LR test of b = 1 inside a·M^-b·ln M rejected at 5%, or "
        f"ΔAICc > 10); supports if it is not excluded (ΔAICc <= 4) while c/sqrt(M) is excluded or disfavoured; "
        f"else inconclusive. overall (\"the threshold scales as ln M/M for every architecture\"): supports if every "
        f"architecture supports, contradicts if any contradicts, else inconclusive. Same c or not is reported (the "
        f"95% intervals of c overlap or not), not judged. --full adds the part peer_nanda: supports if the "
        f"transformer at P = 113, p = 0.3 reaches test acc >= {SUCCESS} within its budget and its embedding's key "
        f"frequencies number at most {HANDFUL}; contradicts if it groks with more, or does not grok; else "
        f"inconclusive.")
PAPER = {"claim": "Thm 4 (two-layer networks); §6 extends the framework to L hidden layers", "figure": "5 (two-layer)",
         "orders": "Z_M, M up to 127", "architectures": "two-layer only (deeper: §6 analysis, Fig 9 probes)",
         "transformer": "not in the paper; Nanda et al. (2023): P = 113, 30%, d_model 128, 4 heads, d_mlp 512, "
                        "AdamW lr 1e-3, η 1, full batch", "c": "not stated (reference code: 2.7482)"}

ARCHS = {"mlp2": "two-layer", "mlp3": "three-layer MLP", "transformer": "one-layer transformer"}
ARCH_OF_MODEL = {"mlp2": "mlp2", "mlp": "mlp3", "transformer": "transformer"}
RUN_COLUMNS = ("arch", "group", "order", "train_ratio", "seed", "final_test_acc", "final_train_acc", "grok_step",
               "steps_trained", "status", "outcome", "wall_seconds", "key_count", "final_coverage", "run_id")


def _models(size: str) -> dict[str, dict]:
    """The training options of each architecture at a size (the quick ones cut the widths: budget)."""
    return {
        "mlp2": {"model": "mlp2", "width": pick(size, 32, 512, 1024)},
        "mlp3": {"model": "mlp", "depth": 2, "width": pick(size, 16, 256, 512), "weight_decay": 1e-3},
        "transformer": {"model": "transformer", "d_model": pick(size, 16, 64, 128), "heads": pick(size, 2, 4, 4),
                        "d_mlp": pick(size, 32, 256, 512)},
    }


REFERENCE = {"mlp2": 2.7482, "mlp3": 3.7, "transformer": 6.0}     # c_a: where each grid is centred (probes)
STEPS = {"mlp2": 2000, "mlp3": 3000, "transformer": 3000}


def _setting(size: str, in_all: bool = False) -> dict:
    orders = pick(size, [5, 7], [23, 41, 71] if in_all else [23, 31, 41, 53, 71], [23, 31, 41, 53, 71, 97, 127])
    quick = [0.7, 1.0, 1.4] if in_all else [0.6, 0.8, 1.0, 1.25, 1.6]    # in all: its ≈ 3 min share of 15
    return {"orders": orders, "multiples": pick(size, [0.7, 1.4], quick,
                                                [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.12, 1.25, 1.4, 1.6, 2.0]),
            "seeds": pick(size, 1, 1 if in_all else 2, 4), "models": _models(size), "reference_c": REFERENCE,
            "steps": {a: pick(size, 30, s, 3 * s) for a, s in STEPS.items()}, "success_threshold": SUCCESS,
            "peer_check": size != "quick"}


def ratio(multiple: float, c: float, order: int) -> float:
    """p = multiple·c·ln M / M, capped at MAX_RATIO, rounded to 4 digits (so equal ratios share a run)."""
    return min(MAX_RATIO, round(multiple * c * math.log(order) / order, 4))


def _configs(s: dict) -> list[dict]:
    """Every run of the grid, once (multiples capped to the same ratio are one run)."""
    out, seen = [], set()
    for arch, opts in s["models"].items():
        for m in s["orders"]:
            for mult in s["multiples"]:
                p = ratio(mult, s["reference_c"][arch], m)
                for seed in range(s["seeds"]):
                    if (arch, m, p, seed) in seen:
                        continue
                    seen.add((arch, m, p, seed))
                    out.append({**opts, "group": f"Z{m}", "train_ratio": p, "steps": s["steps"][arch],
                                "early_stop": True, "stop_margin": 100, "grok_threshold": SUCCESS,
                                "diagnostics": "off", "checkpoint_every": 0, "seed": seed})
    return out


def _peer_config(size: str) -> dict:
    """Nanda et al.'s setting (smoke: a tiny stand-in that runs the same code)."""
    if size == "smoke":
        return {"model": "transformer", "group": "Z11", "train_ratio": 0.5, "d_model": 16, "heads": 2, "d_mlp": 32,
                "steps": 30, "eval_every": 10, "seed": 0}
    return {"model": "transformer", "group": "Z113", "train_ratio": 0.3, "steps": 15000, "early_stop": False,
            "eval_every": 100, "grok_threshold": SUCCESS, "checkpoint_every": 1000, "seed": 0}


def plan(size: str, in_all: bool = False) -> Plan:
    s = _setting(size, in_all)
    devs = [deviation("architectures", "two-layer network only", ", ".join(ARCHS.values()),
                      "the question is whether Thm 4's law carries over (§6, issue 15)"),
            deviation("ratio grid", "not stated", f"multiples {s['multiples']} of c_a·ln M/M, c_a = {REFERENCE}",
                      "one grid per architecture, centred by probes on its own transition (the thresholds differ)"),
            deviation("step budget", "not stated (Nanda: 50,000 epochs)", s["steps"],
                      "success means grokking within this budget, so p_c is the budget's threshold (a longer "
                      "budget can only lower it)"),
            deviation("weight decay of the 3-layer MLP", "1e-4 (Fig 17's deeper nets)", 1e-3,
                      "probes (module doc): at 1e-4 the ReLU MLP barely groks within the budget; η sets the rate of "
                      "feature learning (§7)")]
    if size != "full":
        devs.append(deviation("widths and seeds", "K = 2048 (Fig 5), Nanda's d_model 128 / d_mlp 512, 20 seeds",
                              f"{s['models']}, {s['seeds']} seed(s)", "the quick budget of 20 min on 2 cores"))
    configs = _configs(s) + ([_peer_config(size)] if s["peer_check"] else [])
    return make_plan(configs, PAPER, s, devs)


# -- the verdict ---------------------------------------------------------------------------------------------

def judge_form(analysis: dict) -> tuple[str, str]:
    """(verdict, reason) of one architecture's phase analysis under RULE."""
    inside = analysis.get("bracketed_orders") or []
    if len(inside) < MIN_BRACKETED or not analysis.get("law"):
        return "inconclusive", f"{len(inside)} bracketed M (need {MIN_BRACKETED}) → inconclusive"
    return form_verdict(analysis["law"])


def judge_peer(peer: dict | None) -> str | None:
    if not peer:
        return None
    if not peer.get("grokked"):
        return "contradicts" if peer.get("finished") else "inconclusive"
    return "supports" if peer["key_count"] <= HANDFUL else "contradicts"


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    """m = {"architectures": {arch: {"analysis": analyse_phase's dict, …}}, "peer": {…} or None}."""
    parts, reasons = {}, []
    for arch, a in m["architectures"].items():
        parts[arch], why = judge_form(a["analysis"])
        reasons.append(f"{arch}: {why}")
    peer = judge_peer(m.get("peer"))
    if peer is not None:
        parts["peer_nanda"] = peer
        p = m["peer"]
        reasons.append(f"peer check (Z113, p = 0.3): grok step {p.get('grok_step')}, {p.get('key_count')} key "
                       f"frequencies {p.get('key')} → {peer}")
    return combine(parts), parts, reasons


# -- measuring -------------------------------------------------------------------------------------------

def _embedding_record(study: Path, run_id: str) -> dict:
    """The embedding read-out (key frequencies) of run `run_id` of the study folder `study`; {} if none."""
    try:
        return read_json(study / "runs" / run_id / "summary.json")["models"][0].get("embedding") or {}
    except (StoreError, KeyError, IndexError):
        return {}


def _per_architecture(ctx: RecipeContext, df: pd.DataFrame, arch: str, c_ref: float) -> dict:
    runs = df[df.arch == arch]
    analysis = analyse_phase(runs, success_threshold=SUCCESS)
    ok = runs[runs.final_test_acc >= SUCCESS]
    rel = ok.train_ratio / (c_ref * np.log(ok.order) / ok.order)
    keys = {str(m): mean_ci(g.key_count) for m, g in ok.groupby("order")}
    out = {"analysis": analysis,
           "pc": {m: {k: v.get(k) for k in ("estimate", "ci", "bracketed", "reason")} for m, v in analysis["pc"].items()},
           "c": analysis.get("c"), "c_ci": analysis.get("c_ci"), "r2": analysis.get("r2"),
           "grok_time": {"spearman_vs_p_over_pref": spearman(rel, ok.grok_step.astype(float)),
                         "mean_grok_step": {f"{m}@{mult:.3g}": float(g.grok_step.mean())
                                            for (m, mult), g in ok.assign(mult=rel.round(3)).groupby(["order", "mult"])}},
           "key_count": keys, "half_of_frequencies": {str(m): (m - 1) // 2 for m in sorted(runs.order.unique())}}
    if "final_coverage" in ok:
        out["node_coverage"] = {str(m): mean_ci(g.final_coverage) for m, g in ok.groupby("order")}
    return out


def _lr_text(analysis: dict) -> str:
    """", LR p(b = 1) = …" from the law comparison, or "" without one."""
    test = ((analysis.get("law") or {}).get("lr_tests") or {}).get("c*ln(M)/M") or {}
    return "" if test.get("p_value") is None else f", LR p(b = 1) = {test['p_value']:.2g}"


def _same_c(per_arch: dict) -> dict:
    """Pairwise: do the 95% intervals of c overlap?"""
    out = {}
    names = list(per_arch)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ca, cb = per_arch[a].get("c_ci"), per_arch[b].get("c_ci")
            out[f"{a} vs {b}"] = (None if not ca or not cb else "overlap" if ca[0] <= cb[1] and cb[0] <= ca[1]
                                  else "differ")
    return out


def _peer(ctx: RecipeContext, size: str) -> dict:
    cfg = _peer_config(size)
    row = train_runs(ctx, ctx.out / "peer", [{**cfg, "diagnostics": "basic"}]).iloc[0]
    emb = _embedding_record(ctx.out / "peer", row.run_id)
    grokked = bool(row.get("final_test_acc") is not None and row.final_test_acc >= SUCCESS)
    return {"setting": cfg, "grokked": grokked, "finished": row.get("status") in ("completed", "early_stop"),
            "grok_step": None if pd.isna(row.get("grok_step")) else int(row.grok_step),
            "final_test_acc": row.get("final_test_acc"), "key": emb.get("key"), "key_shares": emb.get("key_shares"),
            "key_count": emb.get("count"), "held": emb.get("held"), "wall_seconds": row.get("wall_seconds")}


def run(ctx: RecipeContext) -> Findings:
    s = _setting(ctx.size, ctx.in_all)
    configs = _configs(s)
    df = train_runs(ctx, ctx.out / "runs", configs)
    df["arch"] = df.model.map(ARCH_OF_MODEL)
    df["key_count"] = [_embedding_record(ctx.out / "runs", r).get("count") for r in df.run_id]
    df["key_count"] = df["key_count"].astype(float)
    write_parquet(ctx.out / "runs.parquet", df[[c for c in RUN_COLUMNS if c in df]])
    per_arch = {a: _per_architecture(ctx, df, a, REFERENCE[a]) for a in s["models"]}
    peer = _peer(ctx, ctx.size) if s["peer_check"] else None
    measured = {"architectures": per_arch, "same_c": _same_c(per_arch), "peer": peer,
                "budgets": s["steps"], "reference_c": REFERENCE}
    verdict_, parts, reasons = verdict(measured)
    rows = [{"arch": a, "order": int(m), **v} for a, x in per_arch.items() for m, v in x["pc"].items()]
    write_parquet(ctx.out / "pc.parquet", pd.DataFrame([{**r, "ci": None if r["ci"] is None else str(r["ci"])}
                                                        for r in rows]))
    figs = _figure(ctx, df, per_arch)
    headline = "; ".join(
        f"{a}: c = {x['c']:.2f} [{x['c_ci'][0]:.2f}, {x['c_ci'][1]:.2f}]{_lr_text(x['analysis'])}"
        if x["c"] and x["c_ci"] else f"{a}: {len(x['analysis'].get('bracketed_orders') or [])} bracketed M"
        for a, x in per_arch.items())
    if peer:
        headline += f"; Nanda's setting: grok step {peer['grok_step']}, key frequencies {peer['key']}"
    return {"claim": CLAIM, **plan_setting(plan(ctx.size, ctx.in_all)), "measured": measured, "rule": RULE,
            "verdict": verdict_, "verdict_parts": parts, "reasons": reasons, "headline": headline,
            "expected": {"form": "p_c ∝ ln M / M for every architecture", "c": "may differ by architecture"},
            "figures": figs, "tables": ["runs.parquet", "pc.parquet"]}


def _figure(ctx: RecipeContext, df: pd.DataFrame, per_arch: dict) -> list[str]:
    """p_c(M) with the fitted c·ln M/M per architecture; grok step against p/p_ref; key frequencies."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (arch, x) in enumerate(per_arch.items()):
        pts = [(int(m), v["estimate"], v["ci"]) for m, v in x["pc"].items() if v["estimate"] is not None]
        if pts:
            ms, est, ci = zip(*pts)
            err = np.array([[e - c[0], c[1] - e] for e, c in zip(est, ci)]).T
            axes[0].errorbar(ms, est, yerr=err, fmt="o", color=f"C{i}", capsize=3, label=ARCHS[arch])
        if x["c"]:
            grid = np.linspace(min(df.order), max(df.order), 50)
            axes[0].plot(grid, x["c"] * np.log(grid) / grid, "--", color=f"C{i}", label=f"{x['c']:.2f}·ln M/M")
        runs = df[(df.arch == arch) & (df.final_test_acc >= SUCCESS)]
        rel = runs.train_ratio / (REFERENCE[arch] * np.log(runs.order) / runs.order)
        axes[1].scatter(rel, runs.grok_step, color=f"C{i}", s=14, label=ARCHS[arch])
        k = runs.groupby("order").key_count.mean()
        axes[2].plot(k.index, k.values, "o-", color=f"C{i}", label=ARCHS[arch])
    orders = sorted(df.order.unique())
    axes[2].plot(orders, [(m - 1) // 2 for m in orders], "k:", label="(M−1)/2: every frequency")
    axes[0].set(xlabel="group order M", ylabel="p_c", title="threshold p_c(M)")
    grokked = df.grok_step.dropna()
    axes[1].set(xlabel="p / (c_a·ln M/M)", ylabel="grok step", title="grok time (successful runs)",
                yscale="log" if (grokked > 0).any() else "linear")
    axes[2].set(xlabel="group order M", ylabel="key frequencies of the embedding", title="features learned")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save_both(fig, ctx.out, "architectures")
