"""The hyperparams recipe (SPEC §6, §7.6): grokking time against weight decay, width and learning rate.

See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json and the sizes."""
from __future__ import annotations

import pandas as pd

from ..store import write_parquet
from ..task import critical_ratio
from ..views.figures import pyplot, save_both
from .common import Findings, RecipeContext, announce_estimate, combine, mean_ci, spearman, train_grid

# Effect floors: a rank correlation over 3–6 grid means is ±1 for differences of noise size, so a
# trend only counts when it is also large: grok steps must differ by a factor MIN_STEP_RATIO between
# the grid's extremes, test accuracies by MIN_ACC_RANGE.
MIN_STEP_RATIO = 1.25
MIN_ACC_RANGE = 0.05

CLAIM = (
    'Weight decay sets the strength of the leaked label signal (larger η → faster grokking, too large → '
    'memorisation); larger width K makes ‖G_F‖ smaller (slower feature learning); a small learning rate '
    'keeps nodes in generalising basins when data is scarce (paper §7, Fig 6; '
    'docs/theory.md#what-the-hyperparameters-do).')
RULE = (
    "Per knob, the mean over seeds at each grid value; a trend needs >= 3 values and an effect: grok steps "
    f"differing by >= {MIN_STEP_RATIO}× (max/min), test accuracies by >= {MIN_ACC_RANGE}; otherwise the part is "
    "inconclusive. weight_decay: Spearman ρ(η, grok step) over the values where every seed generalised: supports "
    "if ρ <= −0.8, contradicts if ρ >= +0.5. width: ρ(K, grok step) over generalising values: supports if "
    "ρ >= +0.8, contradicts if ρ <= −0.5. learning_rate (scarce data, p = p_c): ρ(lr, final test acc): supports if "
    "ρ <= −0.8, contradicts if ρ >= +0.5. overall: contradicts if a part contradicts, supports if all parts "
    "support, else inconclusive. The outcome of the largest η is reported "
    "(docs/theory.md#what-the-hyperparameters-do: too large → memorisation), not judged.")


def _trend(values, ys, want: int, name: str, ylabel: str, kind: str) -> tuple[str, str, float | None]:
    """Verdict of one monotone claim: want = −1 (ys falls with values) or +1 (rises); kind "steps" | "acc"."""
    ys_ok = [y for y in ys if y is not None]
    rho = spearman(values, ys)
    if rho is None:
        return "inconclusive", f"{name}: {ylabel} does not vary over ≥ 3 values (ρ undefined)", None
    effect = (max(ys_ok) / max(min(ys_ok), 1e-12)) if kind == "steps" else (max(ys_ok) - min(ys_ok))
    floor = MIN_STEP_RATIO if kind == "steps" else MIN_ACC_RANGE
    if effect < floor:
        return ("inconclusive", f"{name}: Spearman ρ = {rho:+.2f} but the effect ({effect:.3g}) is below "
                f"{floor:g} → inconclusive", rho)
    if want * rho >= 0.8:
        v = "supports"
    elif want * rho <= -0.5:
        v = "contradicts"
    else:
        v = "inconclusive"
    return v, f"{name}: Spearman ρ = {rho:+.2f} between {name} and {ylabel} (effect {effect:.3g}) → {v}", rho


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    parts, reasons = {}, []
    wd = [r for r in m.get("weight_decay", []) if r.get("all_grokked")]
    parts["weight_decay"], why, _ = _trend([r["value"] for r in wd], [r["grok_step_mean"] for r in wd], -1,
                                            "weight decay", "grok step", "steps")
    reasons.append(why)
    k = [r for r in m.get("width", []) if r.get("all_grokked")]
    parts["width"], why, _ = _trend([r["value"] for r in k], [r["grok_step_mean"] for r in k], +1, "width",
                                     "grok step", "steps")
    reasons.append(why)
    lr = m.get("learning_rate", [])
    parts["learning_rate"], why, _ = _trend([r["value"] for r in lr], [r["test_acc_mean"] for r in lr], -1,
                                             "learning rate", "final test acc (scarce data)", "acc")
    reasons.append(why)
    return combine(parts), parts, reasons


def _knob_rows(df: pd.DataFrame, key: str) -> list[dict]:
    rows = []
    for v, g in df.groupby(key):
        grok = g.grok_step.astype("float64")
        rows.append({"value": float(v), "seeds": int(len(g)), "all_grokked": bool(grok.notna().all()),
                     "grok_step_mean": float(grok.mean()) if grok.notna().any() else None,
                     "grok_step_ci": mean_ci(grok.dropna())["ci"],
                     "test_acc_mean": float(g.final_test_acc.mean()), "test_acc_ci": mean_ci(g.final_test_acc)["ci"],
                     "outcomes": sorted(g.outcome.dropna().unique().tolist()) if "outcome" in g else []})
    return rows


def run(ctx: RecipeContext) -> Findings:
    """Grok step against weight decay η, width K and learning rate (three one-knob grids around a base).

    Base (quick): Z41, p = 0.4 (1.6 p_c), K = 512, σ = x², Adam lr 2e-3, η = 5e-4, early stop 50 steps
    after generalising, 2000-step budget, 2 seeds. Grids: η ∈ {1e-4, 3e-4, 1e-3, 1e-2}; K ∈ {128, 512,
    2048}; lr ∈ {1e-3, 4e-3, 1.6e-2} at scarce data p = p_c(41) = 0.249 with a 3000-step budget.
    Probes: η ≥ 3e-3 makes the weights decay to zero (outcome "collapsed"), so the η grid keeps one such
    point; at p = p_c, lr 5e-4 had not generalised in 2000 steps (slowness, not memorisation), 2e-3 to
    3e-2 all generalised. quick ≈ 1.5 min on 2 contended cores; full: Z71, K = 1024, 4 seeds, wider
    grids; smoke: Z11, 1 seed, 40 steps.
    """
    base = dict(group="Z41", train_ratio=0.4, width=512, activation="sqr", optimizer="adam", lr=2e-3,
                weight_decay=5e-4, steps=2000, early_stop=True, stop_margin=50, diagnostics="off", checkpoint_every=0)
    grids = {"weight_decay": [1e-4, 3e-4, 1e-3, 1e-2], "width": [128, 512, 2048], "lr": [1e-3, 4e-3, 1.6e-2]}
    seeds = ctx.pick(1, 2, 4)
    if ctx.size == "smoke":
        base.update(group="Z11", width=32, steps=40, train_ratio=0.6, stop_margin=5)
        grids = {"weight_decay": [1e-4, 1e-3, 1e-2], "width": [16, 32, 64], "lr": [1e-3, 4e-3, 1.6e-2]}
    elif ctx.size == "full":
        base.update(group="Z71", width=1024, steps=3000)
        grids = {"weight_decay": [0.0, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
                 "width": [128, 256, 512, 1024, 2048, 4096], "lr": [5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2]}
    announce_estimate(ctx, f"hyperparams ({sum(len(v) for v in grids.values()) * seeds} runs)", 30 * 60)
    order = int(base["group"][1:])
    scarce = round(critical_ratio(order), 4)
    tables, measured = [], {}
    for key, values in grids.items():
        b = dict(base)
        b.pop(key, None)
        if key == "lr":
            b["train_ratio"] = scarce
            b["steps"] = int(b["steps"] * 1.5)   # lower rates at scarce data: give slowness no say
        df = train_grid(ctx, ctx.out / f"sweep-{key.replace('_', '-')}", b, {key: values, "seed": {"range": [0, seeds]}})
        df.insert(0, "knob", key)
        tables.append(df)
        measured["learning_rate" if key == "lr" else key] = _knob_rows(df, key)
    runs = pd.concat(tables, ignore_index=True)
    write_parquet(ctx.out / "runs.parquet", runs)
    flat = [{"knob": k, **{kk: vv for kk, vv in r.items() if not isinstance(vv, list)}} for k, rows in measured.items()
            for r in rows]
    write_parquet(ctx.out / "knobs.parquet", pd.DataFrame(flat))
    wd_rows = measured["weight_decay"]
    measured["largest_weight_decay_outcomes"] = wd_rows[-1]["outcomes"] if wd_rows else None
    measured["scarce_train_ratio"] = scarce
    verdict_, parts, reasons = verdict(measured)

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    budget = base["steps"]
    names = ("weight decay η", "hidden nodes K", "learning rate")
    for ax, key, name in zip(axes, ("weight_decay", "width", "lr"), names):
        df = runs[runs.knob == key]
        y = df.grok_step.astype("float64").fillna(budget)
        never = df.grok_step.isna()
        ax.scatter(df[key][~never], y[~never], color="C0", label="grok step")
        ax.scatter(df[key][never], y[never], marker="x", color="C3", label="never (at budget)")
        m = df.assign(y=y).groupby(key).y.mean()
        ax.plot(m.index, m.values, "-", color="C0", alpha=0.6)
        ax.set(xscale="log", yscale="log", xlabel=name, ylabel="grok step",
               title=f"{name}" + (f" (p = {scarce})" if key == "lr" else f" (p = {base['train_ratio']})"))
        if key == "lr":
            t = ax.twinx()
            mt = df.groupby(key).final_test_acc.mean()
            t.plot(mt.index, mt.values, "s--", color="C2", label="final test acc")
            t.set(ylabel="final test acc", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    figs = save_both(fig, ctx.out, "hyperparams")
    def grok_txt(r):
        return "never" if r["grok_step_mean"] is None else f"{r['grok_step_mean']:.0f}"
    txt = [f"grok step vs {k}: " + ", ".join(f"{r['value']:g}→{grok_txt(r)}" for r in rows)
           for k, rows in (("η", measured["weight_decay"]), ("K", measured["width"]))]
    big = wd_rows[-1] if wd_rows else None
    if big is not None:
        txt.append(f"largest η {big['value']:g}: {', '.join(big['outcomes'])}")
    txt.append("test acc vs lr (p=%g): " % scarce + ", ".join(f"{r['value']:g}→{r['test_acc_mean']:.2f}"
                                                               for r in measured["learning_rate"]))
    return {"claim": CLAIM,
            "expected": {"weight_decay": "grok step decreases with η; very large η memorises",
                         "width": "grok step increases with K",
                         "learning_rate": "at scarce data, smaller lr → higher test acc"},
            "measured": measured, "headline": "; ".join(txt), "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE, "setup": {"base": base, "grids": grids, "seeds": seeds},
            "notes": ["Adam (as the reference) normalises each parameter's step, so the argument 'larger K → smaller "
                      "‖G_F‖ → slower' (paper Lemma 1; docs/theory.md#what-the-hyperparameters-do), which is "
                      "about gradient magnitude, need not carry over to Adam; an SGD width grid would test it "
                      "directly (not run here).",
                      "'collapsed' = the weights decayed to ~0 without fitting the training set (li2.theory.outcomes)."],
            "figures": figs, "tables": ["runs.parquet", "knobs.parquet"]}


