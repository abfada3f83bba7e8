"""The ungrokking recipe (§4.5, §7 "Early stopping"): can a grokked model drift back to memorisation?

The paper has no experiment of its own here; it states that its landscape picture "explains the ungrokking
phenomenon: a grokked model can move back to memorization when it continues to train on a smaller dataset
(Varma et al., 2023)", and (§7) that with scarce data generalising solutions have lower E than
memorisation ones, so "if trained long enough, weights will move to solutions with larger E". li2 tests
both protocols on Z23 (p_c = 0.375), K = 256, σ = x², Adam:
  long_training — p = 1.1·p_c, trained far past generalisation without early stop, two weight decays;
  less_data — generalise at p1 = 0.6 (early stop), then continue on a nested subset p2 (a multiple of p_c),
      test accuracy always on the ORIGINAL test set.
Probes before fixing this: long training at η = 5e-4 held test acc 1.0 for 8000 steps (Z23 p = 0.42,
Z31 p = 0.34); at η = 3e-3 one of two seeds fell 1.0 → 0.94; continuing on p2 = 0.25 or 0.15 sent test
accuracy from 1.0 to ≈ 0 within 1500 steps.
First quick run (2 seeds; 47 s wall on 2 busy shared cores): long training at 1.1·p_c — 1 of 4 runs
ungrokked; continued on p2 <= 0.7·p_c — 4/4 ungrokked (test acc below 0.95 within 100–300 steps); on
p2 >= 1.2·p_c — 0/2.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..config import TrainConfig, build_task
from ..engine.trainer import Trainer
from ..runs.folder import open_run
from ..store import write_parquet
from ..task import critical_ratio
from ..views.figures import pyplot, save_both
from .common import Findings, Plan, RecipeContext, deviation, grid_configs, make_plan, pick, plan_setting, train_runs

CLAIM = (
    "§4.5 and §7: a grokked model can move back to memorisation — when it continues to train on a smaller dataset "
    "(ungrokking, Varma et al. 2023), and, with scarce data, when it is trained long enough (memorisation maxima have "
    "higher E): test accuracy rises, then falls.")
PAPER = {"sections": "4.5 (ungrokking), 7 (early stopping)", "experiment": "none of its own (cites Varma et al. "
         "2023)", "protocol": "continue training a grokked model on a smaller dataset; or train long with scarce data"}
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


def _setting(size: str) -> dict:
    order = pick(size, 11, 23, 23)
    return {"group": f"Z{order}", "width": pick(size, 32, 256, 256), "activation": "sqr", "optimizer": "adam",
            "lr": 2e-3, "seeds": pick(size, 1, 2, 4), "eval_every": pick(size, 10, 100, 100),
            "long_training": {"ratio_over_pc": 1.1, "weight_decays": pick(size, [3e-3], [5e-4, 3e-3],
                                                                           [5e-4, 1e-3, 3e-3, 1e-2]),
                              "steps": pick(size, 60, 6000, 20000)},
            "less_data": {"p1": pick(size, 0.8, 0.6, 0.6), "weight_decay": 5e-4,
                          "p2_over_pc": pick(size, [0.4, 1.33], [0.4, 0.67, 1.33],
                                             [0.27, 0.4, 0.53, 0.67, 0.8, 0.93, 1.2, 1.33, 1.6]),
                          "phase1_steps": pick(size, 100, 3000, 3000), "phase2_steps": pick(size, 40, 1200, 5000),
                          "stop_margin": pick(size, 10, 100, 100), "eval_every": pick(size, 10, 50, 50)}}


def _base(s: dict) -> dict:
    return dict(group=s["group"], width=s["width"], activation=s["activation"], optimizer=s["optimizer"], lr=s["lr"],
                diagnostics="off", checkpoint_every=0, eval_every=s["eval_every"])


def _long_configs(s: dict) -> list[dict]:
    lt = s["long_training"]
    p = round(lt["ratio_over_pc"] * critical_ratio(int(s["group"][1:])), 4)
    return grid_configs({**_base(s), "train_ratio": p, "steps": lt["steps"], "early_stop": False},
                        {"weight_decay": lt["weight_decays"], "seed": list(range(s["seeds"]))})


def _less_base(s: dict) -> dict:
    ld = s["less_data"]
    return {**_base(s), "weight_decay": ld["weight_decay"], "steps": ld["phase1_steps"], "early_stop": True,
            "stop_margin": ld["stop_margin"], "eval_every": ld["eval_every"]}


def plan(size: str, in_all: bool = False) -> Plan:
    s = _setting(size)
    ld, pc = s["less_data"], critical_ratio(int(s["group"][1:]))
    less = [{**_less_base(s), "train_ratio": ld["p1"], "seed": 0}] * (len(ld["p2_over_pc"]) * s["seeds"])
    less += [{**_less_base(s), "train_ratio": round(m * pc, 4), "steps": ld["phase2_steps"], "seed": 0}
             for m in ld["p2_over_pc"] for _ in range(s["seeds"])]
    devs = [deviation("protocol", "none of the paper's own", f"{s['group']}, K = {s['width']}, σ = x², Adam lr "
                      f"{s['lr']}; long training at {s['long_training']['ratio_over_pc']}·p_c; continuation from p1 = "
                      f"{ld['p1']} onto p2 in {ld['p2_over_pc']}·p_c", "the paper only cites the phenomenon; this is "
                      "Varma et al.'s protocol (continue on a subset) in li2's setting, plus §7's long training")]
    if size != "full":
        devs.append(deviation("seeds, steps, weight decays", "—", f"{s['seeds']} seeds, "
                              f"{s['long_training']['steps']} long steps, η {s['long_training']['weight_decays']}",
                              "the quick budget"))
    return make_plan(_long_configs(s) + less, PAPER, s, devs)


def run(ctx: RecipeContext) -> Findings:
    s = _setting(ctx.size)
    order = int(s["group"][1:])
    pc = critical_ratio(order)
    seeds = s["seeds"]
    p_long = round(s["long_training"]["ratio_over_pc"] * pc, 4)
    df = train_runs(ctx, ctx.out / "sweep-long", _long_configs(s))
    write_parquet(ctx.out / "long_training.parquet", df)
    long_rows = [{"weight_decay": float(r.weight_decay), "seed": int(r.seed), "outcome": getattr(r, "outcome", None),
                  "grok_step": None if pd.isna(r.grok_step) else int(r.grok_step),
                  "peak_test_acc": r.peak_test_acc, "peak_step": r.peak_step, "final_test_acc": r.final_test_acc,
                  "steps_trained": int(r.steps_trained)} for r in df.itertuples()]

    ld = s["less_data"]
    multiples, steps2, p1 = ld["p2_over_pc"], ld["phase2_steps"], ld["p1"]
    ld_base = {k: v for k, v in _less_base(s).items()}
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

    figs = _figure(ctx, df, curves, s)

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
    return {"claim": CLAIM, **plan_setting(plan(ctx.size)),
            "expected": {"ungrokking": "possible after generalisation, when the data no longer supports irrep "
                                       "maxima (p below p_c)"},
            "measured": measured, "headline": headline, "verdict": verdict_, "verdict_parts": parts,
            "reasons": reasons, "rule": RULE, "figures": figs, "tables": ["long_training.parquet", "less_data.parquet", "less_data_curves.parquet"]}


def _figure(ctx: RecipeContext, df: pd.DataFrame, curves: pd.DataFrame, s: dict) -> list[str]:
    """Test accuracy of the long runs (left) and of the continuations on less data (right)."""
    order = int(s["group"][1:])
    pc = critical_ratio(order)
    wds, seeds = s["long_training"]["weight_decays"], s["seeds"]
    p_long = round(s["long_training"]["ratio_over_pc"] * pc, 4)
    multiples, p1 = s["less_data"]["p2_over_pc"], s["less_data"]["p1"]
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for i, r in enumerate(df.itertuples()):
        m = open_run(ctx.out / "sweep-long" / "runs" / r.run_id).metrics.sort_values("step")
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
    return save_both(fig, ctx.out, "ungrokking")
