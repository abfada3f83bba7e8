"""The ungrokking recipe (SPEC §6, §9): does test accuracy fall after generalisation?

See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json and the sizes."""
from __future__ import annotations

import pandas as pd
import torch

from ..config import TrainConfig, build_task
from ..engine.trainer import Trainer
from ..runs.folder import open_run
from ..store import write_parquet
from ..task import critical_ratio
from ..views.figures import pyplot, save_both
from .common import Findings, RecipeContext, announce_estimate, train_grid

CLAIM = (
    'Training past generalisation can drift from generalising features into higher-energy memorisation: '
    'test accuracy rises, then falls (ungrokking; docs/theory.md#memorisation--theorem-5).')
RULE = (
    "A model 'ungrokked' when its test accuracy reached >= 0.95 and later ended below 0.95 and at least 0.05 "
    "under its peak (li2.theory.outcomes). long_training: supports if any run ungrokked; contradicts if every run "
    "generalised and held >= 0.95 to the end of a budget >= 10× its grok step; else inconclusive. less_data: "
    "supports if every run continued on p2 <= 0.7·p_c ungrokked and no run continued on p2 >= 1.2·p_c did; "
    "contradicts if no run at p2 <= 0.7·p_c ungrokked; else inconclusive. overall (the claim is that drift CAN "
    "happen): supports if a part supports, contradicts if both parts contradict, else inconclusive.")


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    reasons = []
    long_runs = m.get("long_training") or []
    ung = [r for r in long_runs if r.get("outcome") == "ungrokked"]
    held = [r for r in long_runs if r.get("outcome") == "grokked" and r.get("grok_step") is not None
            and r.get("steps_trained", 0) >= 10 * max(r["grok_step"], 1)]
    if ung:
        a = "supports"
    elif long_runs and len(held) == len(long_runs):
        a = "contradicts"
    else:
        a = "inconclusive"
    reasons.append(f"long training: {len(ung)} of {len(long_runs)} runs ungrokked, {len(held)} held "
                   f"generalisation for >= 10× their grok step → {a}")
    less = m.get("less_data") or []
    low = [r for r in less if r["p2_over_pc"] <= 0.7 and r.get("grokked_before")]
    high = [r for r in less if r["p2_over_pc"] >= 1.2 and r.get("grokked_before")]
    low_u = [r for r in low if r["ungrokked"]]
    high_u = [r for r in high if r["ungrokked"]]
    if not low:
        b = "inconclusive"
    elif len(low_u) == len(low) and not high_u:
        b = "supports"
    elif not low_u:
        b = "contradicts"
    else:
        b = "inconclusive"
    reasons.append(f"less data: {len(low_u)}/{len(low)} runs continued below 0.7·p_c ungrokked, "
                   f"{len(high_u)}/{len(high)} above 1.2·p_c did → {b}")
    parts = {"long_training": a, "less_data": b}
    if "supports" in parts.values():
        v = "supports"
    elif all(x == "contradicts" for x in parts.values()):
        v = "contradicts"
    else:
        v = "inconclusive"
    return v, parts, reasons


def continue_on_less_data(base: dict, p1: float, p2: float, seed: int, steps2: int) -> pd.DataFrame:
    """Train to generalisation on a split of ratio p1, then keep training the same weights (fresh optimiser
    state) on the nested sub-split of ratio p2 < p1 (same seed ⇒ the first p2·N samples of the same
    permutation), evaluating test accuracy on the ORIGINAL test set throughout.

    Returns metrics rows: phase (1, 2), step (global), train_acc (current training set), test_acc, test_loss.
    """


    cfg1 = TrainConfig(**{**base, "train_ratio": p1, "seeds": [seed]})
    task, r1 = build_task(cfg1)
    dev = torch.device("cpu")
    # one thread: these models are small, and two threads on two busy cores wait on each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t1 = Trainer(cfg1, task, [seed], r1, dev)
        u1 = t1.run()
        t2, u2 = _continue(t1, base, p2, seed, steps2, task, dev)
    finally:
        torch.set_num_threads(threads)
    rows = [{"phase": 1, **r} for r in u1.rows]
    offset = t1.step
    rows += [{"phase": 2, **r, "step": r["step"] + offset} for r in u2.rows]
    df = pd.DataFrame(rows)
    return df[["phase", "step", "seed", "train_acc", "test_acc", "test_loss", "w_norm"]]


def _continue(t1, base: dict, p2: float, seed: int, steps2: int, task, dev):
    """Phase 2 of `continue_on_less_data`: a fresh trainer on the nested sub-split, t1's weights."""


    cfg2 = TrainConfig(**{**base, "train_ratio": p2, "seeds": [seed], "steps": steps2, "early_stop": False})
    t2 = Trainer(cfg2, task, [seed], p2, dev)
    with torch.no_grad():
        for k in t2.params:
            t2.params[k].copy_(t1.params[k])
        t2.W0.copy_(t1.params["W"])
        for k in t2.last_good:
            t2.last_good[k].copy_(t1.params[k])
    t2.test = t1.test            # judge both phases on the samples phase 1 never trained on
    return t2, t2.run()


def run(ctx: RecipeContext) -> Findings:
    """Does test accuracy fall after generalisation? Two protocols on Z23 (p_c = 0.375), K = 256, σ = x², Adam:

    long_training: p = 0.42 (1.1 p_c), trained far past generalisation without early stop, η ∈ {5e-4, 3e-3}
      (quick: 2 seeds, 6000 steps ≈ 1 min on 2 contended cores; full: 4 seeds, 20000 steps, more η).
    less_data: generalise at p1 = 0.6 (early stop), then continue on a nested subset p2 ∈ {0.4, 0.67, 1.33}·p_c,
      test accuracy always on the original test set (quick: 2 seeds, 1200 more steps ≈ 30 s).
    Probes before fixing this: long training at η = 5e-4 held test acc 1.0 for 8000 steps (Z23 p = 0.42,
    Z31 p = 0.34); at η = 3e-3 one of two seeds fell 1.0 → 0.94; continuing on p2 = 0.25 or 0.15 sent test
    accuracy from 1.0 to ≈ 0 within 1500 steps.
    """
    order = ctx.pick(11, 23, 23)
    pc = critical_ratio(order)
    seeds = ctx.pick(1, 2, 4)
    base = dict(group=f"Z{order}", width=256, activation="sqr", optimizer="adam", lr=2e-3, weight_decay=5e-4,
                diagnostics="off", checkpoint_every=0, eval_every=100)
    if ctx.size == "smoke":
        base.update(width=32, eval_every=10)
    wds = ctx.pick([3e-3], [5e-4, 3e-3], [5e-4, 1e-3, 3e-3, 1e-2])
    long_steps = ctx.pick(60, 6000, 20000)
    announce_estimate(ctx, "ungrokking", 10 * 60)
    p_long = round(1.1 * pc, 4)
    long_base = {k: v for k, v in base.items() if k != "weight_decay"}
    df = train_grid(ctx, ctx.out / "sweep-long", {**long_base, "train_ratio": p_long, "steps": long_steps,
                                                  "early_stop": False},
                    {"weight_decay": wds, "seed": {"range": [0, seeds]}})
    write_parquet(ctx.out / "long_training.parquet", df)
    long_rows = [{"weight_decay": float(r.weight_decay), "seed": int(r.seed), "outcome": getattr(r, "outcome", None),
                  "grok_step": None if pd.isna(r.grok_step) else int(r.grok_step),
                  "peak_test_acc": r.peak_test_acc, "peak_step": r.peak_step, "final_test_acc": r.final_test_acc,
                  "steps_trained": int(r.steps_trained)} for r in df.itertuples()]

    multiples = ctx.pick([0.4, 1.33], [0.4, 0.67, 1.33], [0.27, 0.4, 0.53, 0.67, 0.8, 0.93, 1.2, 1.33, 1.6])
    steps2 = ctx.pick(40, 1200, 5000)
    p1 = ctx.pick(0.8, 0.6, 0.6)
    ld_base = {**base, "steps": ctx.pick(100, 3000, 3000), "early_stop": True, "stop_margin": ctx.pick(10, 100, 100),
               "eval_every": ctx.pick(10, 50, 50)}
    frames, less_rows = [], []
    for mult in multiples:
        p2 = round(mult * pc, 4)
        for seed in range(seeds):
            d = continue_on_less_data(ld_base, p1, p2, seed, steps2)
            d.insert(0, "p2", p2)
            frames.append(d)
            ph1, ph2 = d[d.phase == 1], d[d.phase == 2]
            peak = float(ph1.test_acc.max())
            final = float(ph2.test_acc.iloc[-1])
            below = ph2[ph2.test_acc < 0.95]
            ung = peak >= 0.95 and final < 0.95 and final <= peak - 0.05
            less_rows.append({"p2": p2, "p2_over_pc": mult, "seed": seed, "switch_step": int(ph2.step.iloc[0]),
                              "test_acc_at_switch": float(ph2.test_acc.iloc[0]), "grokked_before": peak >= 0.95,
                              "final_test_acc": final, "ungrokked": bool(ung),
                              "steps_after_switch_to_below_0_95": (int(below.step.iloc[0] - ph2.step.iloc[0])
                                                                   if len(below) else None)})
        ctx.log(f"  ungrokking: p2 = {p2} done")
    curves = pd.concat(frames, ignore_index=True)
    write_parquet(ctx.out / "less_data_curves.parquet", curves)
    write_parquet(ctx.out / "less_data.parquet", pd.DataFrame(less_rows))

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for i, r in enumerate(df.itertuples()):
        m = open_run(ctx.out / "sweep-long" / "runs" / r.run_id).metrics
        a.plot(m.step + 1, m.test_acc, color=f"C{wds.index(r.weight_decay) % 10}", alpha=0.8,
               label=f"η={r.weight_decay:g}" if r.seed == 0 else None)
    a.axhline(0.95, color="k", ls=":")
    a.set(xscale="log", xlabel="step + 1", ylabel="test accuracy", ylim=(-0.02, 1.02),
          title=f"long training, Z{order}, p = {p_long} (1.1 p_c)")
    a.legend(fontsize=8)
    for i, mult in enumerate(multiples):
        p2 = round(mult * pc, 4)
        for seed in range(seeds):
            c = curves[(curves.p2 == p2) & (curves.seed == seed)]
            b.plot(c.step, c.test_acc, color=f"C{i}", alpha=0.8, label=f"p2 = {p2} ({mult:g} p_c)" if seed == 0 else None)
            sw = c[c.phase == 2].step.iloc[0]
            b.axvline(sw, color=f"C{i}", ls=":", alpha=0.4)
    b.axhline(0.95, color="k", ls=":")
    b.set(xlabel="step (dotted: switch to the smaller training set)", ylabel="test accuracy (original test set)",
          ylim=(-0.02, 1.02), title=f"generalise at p1 = {p1}, then continue on less data")
    b.legend(fontsize=8)
    fig.tight_layout()
    figs = save_both(fig, ctx.out, "ungrokking")

    measured = {"long_training": long_rows, "less_data": less_rows, "p_c": pc, "long_train_ratio": p_long, "p1": p1}
    verdict_, parts, reasons = verdict(measured)
    n_ung = sum(r["outcome"] == "ungrokked" for r in long_rows)
    low = [r for r in less_rows if r["p2_over_pc"] <= 0.7]
    falls = [r["steps_after_switch_to_below_0_95"] for r in low if r["steps_after_switch_to_below_0_95"] is not None]
    headline = (f"long training at 1.1 p_c: {n_ung}/{len(long_rows)} runs ungrokked; continued on p2 <= 0.7 p_c: "
                f"{sum(r['ungrokked'] for r in low)}/{len(low)} ungrokked"
                + (f", test acc below 0.95 after {min(falls)}–{max(falls)} steps" if falls else "")
                + f"; on p2 >= 1.2 p_c: {sum(r['ungrokked'] for r in less_rows if r['p2_over_pc'] >= 1.2)}/"
                  f"{sum(r['p2_over_pc'] >= 1.2 for r in less_rows)}")
    return {"claim": CLAIM,
            "expected": {"ungrokking": "possible after generalisation, when the data no longer supports irrep "
                                       "maxima (p below p_c)"},
            "measured": measured, "headline": headline, "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE,
            "setup": {"base": base, "long_training": {"train_ratio": p_long, "steps": long_steps, "weight_decays": wds},
                      "less_data": {"p1": p1, "p2_over_pc": multiples, "steps_after_switch": steps2}, "seeds": seeds},
            "figures": figs, "tables": ["long_training.parquet", "less_data.parquet", "less_data_curves.parquet"]}


