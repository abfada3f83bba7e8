"""The multilayer recipe (SPEC §6, §7.5): zero-initialised top layer vs default init.

See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json and the sizes."""
from __future__ import annotations

import math

import pandas as pd

from ..store import write_parquet
from ..views.figures import pyplot, save_both
from .common import Findings, RecipeContext, announce_estimate, mean_ci, train_grid

CLAIM = (
    'In multi-layer networks a zero-initialised top layer gives ≈10× faster feature learning ('
    'paper Fig 17; docs/theory.md#what-the-hyperparameters-do).')
RULE = (
    "ratio = grok step (default init) / grok step (zero-initialised top layer), per seed; a default-init run that "
    "never generalises counts as a lower bound (budget / zero-init grok step). supports if the geometric mean "
    "ratio is >= 5 (≈10× within a factor 2); contradicts if zero-init never generalises while default init does, "
    "or if every run generalised and the geometric mean ratio is < 2; inconclusive otherwise (including when "
    "fewer than 2 seeds have both runs).")


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    pairs = m.get("pairs") or []
    zero_ok = [p for p in pairs if p.get("grok_zero") is not None]
    default_ok = [p for p in pairs if p.get("grok_default") is not None]
    reasons = []
    if not zero_ok and default_ok:
        v = "contradicts"
        reasons.append("zero-initialised top layer never generalised; default init did")
    elif len(zero_ok) < 2:
        v = "inconclusive"
        reasons.append(f"only {len(zero_ok)} seeds with a generalising zero-init run")
    else:
        gm, censored = m.get("ratio_geomean"), m.get("censored", 0)
        if gm is None:
            v = "inconclusive"
        elif gm >= 5:
            v = "supports"
        elif gm < 2 and censored == 0:
            v = "contradicts"
        else:
            v = "inconclusive"
        reasons.append(f"geometric-mean speed-up {gm if gm is None else f'{gm:.2f}'}× over {len(zero_ok)} seeds "
                       f"({censored} lower bounds from default-init runs that never generalised) → {v}")
    return v, {"speedup": v}, reasons


def run(ctx: RecipeContext) -> Findings:
    """One extra residual hidden layer (x ← σ(x + x U)), default init vs zero-initialised top layer (V = 0):
    steps to generalise (grok step) and their ratio, per seed.

    Setting (Z23, p = 0.8, K = 128, σ = x², AdamW lr 2e-3 with decoupled η = 0.01, evaluated every 10
    steps). Why AdamW: with the reference's coupled L2 under Adam, a zero top layer gives W and U an
    exactly zero loss gradient, so Adam's normalised step is pure weight decay (lr per step towards 0):
    W collapses before V grows and the run never learns (probed: Z23, p = 0.5 and 0.8); default init
    with coupled L2 did not generalise in 1500 steps at p = 0.8 either.
    quick: 6 seeds, 3000-step budget (≈ 20–40 s on 2 contended cores); full: 10 seeds, also 2 layers;
    smoke: Z7, 2 seeds, 40 steps.
    Probe (3 seeds): grok steps default vs zero-init 160/390/280 vs 140/210/140 (AdamW, 1 layer);
    330/420/490 vs 370/360/330 (2 layers); with relu + Adam coupled L2: 1660/1250/2320 vs 730/1280/940.
    """
    base = dict(group="Z23", train_ratio=0.8, width=128, activation="sqr", optimizer="adamw", lr=2e-3,
                weight_decay=0.01, steps=3000, eval_every=10, early_stop=True, stop_margin=30,
                diagnostics="off", checkpoint_every=0)
    base.update(ctx.pick(dict(group="Z7", width=16, steps=40, eval_every=5, stop_margin=5), {}, {}))
    seeds = ctx.pick(2, 6, 10)
    layers = ctx.pick([1], [1], [1, 2])
    announce_estimate(ctx, f"multilayer ({2 * seeds * len(layers)} runs)", 4 * 60)
    df = train_grid(ctx, ctx.out / "sweep", base, {"layers": layers, "top_init_scale": [1.0, 0.0],
                                                    "seed": {"range": [0, seeds]}})
    write_parquet(ctx.out / "runs.parquet", df)
    budget = base["steps"]
    pairs, per_layers = [], {}
    for (nl, seed), g in df.groupby(["layers", "seed"]):
        d = g[g.top_init_scale == 1.0]
        z = g[g.top_init_scale == 0.0]
        gd = d.grok_step.iloc[0] if len(d) else None
        gz = z.grok_step.iloc[0] if len(z) else None
        gd = None if gd is None or pd.isna(gd) else int(gd)
        gz = None if gz is None or pd.isna(gz) else int(gz)
        ratio, censored = None, False
        if gz is not None:
            if gd is not None:
                ratio = gd / max(gz, 1)
            else:
                ratio, censored = budget / max(gz, 1), True
        pairs.append({"layers": int(nl), "seed": int(seed), "grok_default": gd, "grok_zero": gz,
                      "ratio": ratio, "lower_bound": censored})
    pairs_df = pd.DataFrame(pairs)
    write_parquet(ctx.out / "pairs.parquet", pairs_df)
    main_layers = layers[0]
    main = [p for p in pairs if p["layers"] == main_layers]
    logs = [math.log(p["ratio"]) for p in main if p["ratio"]]
    stats = mean_ci(logs)
    gm = math.exp(stats["mean"]) if stats["mean"] is not None else None
    gm_ci = [math.exp(stats["ci"][0]), math.exp(stats["ci"][1])] if stats["ci"] else None
    for nl in layers:
        sub = [p for p in pairs if p["layers"] == nl and p["ratio"]]
        lg = mean_ci([math.log(p["ratio"]) for p in sub])
        per_layers[str(nl)] = {"ratio_geomean": math.exp(lg["mean"]) if lg["mean"] is not None else None,
                               "grok_default_mean": mean_ci([p["grok_default"] for p in pairs if p["layers"] == nl
                                                             and p["grok_default"] is not None])["mean"],
                               "grok_zero_mean": mean_ci([p["grok_zero"] for p in pairs if p["layers"] == nl
                                                          and p["grok_zero"] is not None])["mean"]}
    measured = {"layers": main_layers, "pairs": main, "ratio_geomean": gm, "ratio_geomean_ci": gm_ci,
                "censored": sum(p["lower_bound"] for p in main), "per_layers": per_layers, "budget": budget}
    verdict_, parts, reasons = verdict(measured)

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, p in enumerate(main):
        a.plot([0, 1], [p["grok_default"] or budget, p["grok_zero"] or budget], "o-", color=f"C{i % 10}",
               alpha=0.8, label=f"seed {p['seed']}")
    a.set(xticks=[0, 1], xticklabels=["default init", "zero top init"], ylabel="grok step (budget if never)",
          yscale="log", title=f"steps to generalise, {main_layers} extra layer(s)")
    a.legend(fontsize=7)
    r = [p["ratio"] for p in main if p["ratio"]]
    b.bar(range(len(r)), r, color="C2")
    b.axhline(10, color="C3", ls="--", label="claimed ≈10×")
    b.axhline(1, color="k", ls=":")
    if gm:
        b.axhline(gm, color="C0", label=f"geometric mean {gm:.2f}×")
    b.set(xlabel="seed", ylabel="default / zero-init grok step", yscale="log", title="speed-up of zero top init")
    b.legend(fontsize=8)
    fig.tight_layout()
    figs = save_both(fig, ctx.out, "multilayer")
    never_d = sum(p["grok_default"] is None for p in main)
    never_z = sum(p["grok_zero"] is None for p in main)
    headline = (f"zero-initialised top layer generalises {gm:.2f}× sooner (geometric mean over {len(r)} seeds, "
                f"claimed ≈10×); never generalised within {budget} steps: default init {never_d}/{len(main)}, "
                f"zero init {never_z}/{len(main)}" if gm else "no seed generalised with both inits")
    return {"claim": CLAIM,
            "expected": {"speedup": 10.0},
            "measured": measured, "headline": headline, "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE, "setup": {"base": base, "seeds": seeds, "layers": layers},
            "figures": figs, "tables": ["runs.parquet", "pairs.parquet"]}


