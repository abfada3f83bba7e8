"""The dynamics recipe (paper Fig 3; docs/theory.md, stage detection): the three stages, found from the paper's definitions,
and Fig 3's own checks, over several seeds.

Stages come from li2.theory.stages (V's distance to V_ridge with W's drift, the Stage-II cosine, the
interaction signals; never test accuracy), so "grokking happens after Stage I" is a real test here.
See li2.recipes.common for the recipe interface and li2.recipes.registry for findings.json.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..store import StoreError, read_json, read_parquet, write_parquet
from ..theory.stages import STAGE_KEYS, THRESHOLDS
from ..views.figures import pyplot, save_both, shade_stages
from .common import Findings, Plan, RecipeContext, combine, deviation, mean_ci, train_grid

CLAIM = ("Grokking goes through three stages (paper Fig 1–3, §3–5): lazy learning (Stage I: the top layer fits "
         "the random features while the hidden layer barely moves), independent feature learning (Stage II: "
         "G_F ∝ ηỸỸᵀF, every node ascends E on its own) and interactive feature learning (Stage III: nodes "
         "repel, G_F turns to the missing irreps); test accuracy stays low in Stage I (memorisation) and rises "
         "later. Fig 3 (Z71, K = 2048, p = 0.4): the model groks with η = 2e-4 and not with η = 0; ‖G_F‖ "
         "rises, then decays; V moves first, then W; F̃ᵀF̃ stays diagonal within 8%.")

PAPER = {"figure": "Fig 3", "group": "Z71", "width": 2048, "train_ratio": 0.4, "n_train": 2016,
         "weight_decay": [2e-4, 0.0], "seeds": 15, "optimizer": "not stated", "lr": "not stated",
         "activation": "not stated (the theory: x²)", "loss": "½‖P⊥₁(Y − FV)‖² (summed, centred over samples)",
         "init": "not stated (Prop 1 assumes a small top layer, α ≪ 1)", "steps": "not stated",
         "V_before_W": "cosine distance between consecutive weights", "stage boundaries": "not defined numerically"}

NOTES = ["Stage I's 'W barely moves' is a gradient-flow statement (G_F, hence ∂L/∂W, is small until V fits). Adam "
         "normalises each coordinate, so W moves by about lr per step whatever the size of its gradient; the paper "
         "does not name Fig 3's optimiser, and li2 uses the reference code's Adam.",
         "V before W is read from when each drift reaches half its maximum; the paper plots the cosine distance "
         "between consecutive weights, which li2 does not record."]

# Fig 3 checks (fixed with the rule, before any run of this recipe)
GRAD_RISE = 1.25          # ‖G_F‖ rises: peak ≥ 1.25 × its value at step 0
GRAD_DECAY = 0.5          # ‖G_F‖ decays: final ≤ 0.5 × its peak
DIAG_TOLERANCE = 0.08     # "F̃ᵀF̃ diagonal up to 8% error": off-diagonal / diagonal ≤ 0.08
GENERALISED = 0.5         # a model generalised when its final test accuracy is above this

RULE = (
    "Per seed, from the η = 2e-4 arm unless said. Continuous parts use a 95% Student-t interval over seeds, binary "
    "ones a 95% Clopper–Pearson interval of the share of seeds; a part is inconclusive when its interval allows both "
    "answers. weight_decay: supports if the final test accuracy's CI lies above 0.5 with η = 2e-4 and below 0.5 with "
    "η = 0, contradicts if either lies on the wrong side. stages: supports if the share of seeds in which all three "
    "boundaries are found (li2.theory.stages; thresholds " + ", ".join(f"{k} = {v}" for k, v in THRESHOLDS.items())
    + ") has a CI above 0.5, contradicts if below. stage1_lazy: supports if the CI of ‖W − W₀‖/‖W₀‖ at the end of "
    "Stage I lies below W_STILL, contradicts if above. grok_after_stage1: supports if the CI of ln(grok step + 1) − "
    "ln(Stage I end + 1) lies above 0, contradicts if below. grad_norm: supports if the CI of ln(peak/initial ‖G_F‖) "
    f"lies above ln {GRAD_RISE} and that of ln(final/peak) below ln {GRAD_DECAY}, contradicts if either lies on the "
    "wrong side. V_before_W: with t½(X) the first step at which ‖X − X₀‖/‖X₀‖ reaches half its maximum, supports if "
    "the CI of ln(t½(W) + 1) − ln(t½(V) + 1) lies above 0, contradicts if below. gram_diagonal: supports if the CI of "
    f"the run's largest off-diagonal/diagonal ratio of F̃ᵀF̃ lies below {DIAG_TOLERANCE}, contradicts if above. "
    "overall: contradicts if a part contradicts, supports if all support, else inconclusive. Where grokking falls "
    "(Stage I, II, III or after) is reported per seed, not judged.")


# -- settings -------------------------------------------------------------------------------------------

def _settings(size: str) -> dict:
    """li2's setting at a size: Fig 3's where the paper states it; choices where it does not."""
    base = {"group": "Z71", "width": 2048, "train_ratio": 0.4, "weight_decay": [2e-4, 0.0], "optimizer": "adam",
            "lr": 5e-4, "activation": "sqr", "loss": "mse", "init_scale": 1.0, "top_init_scale": 1.0,
            "seeds": [15, 15], "steps": 3000, "diagnostics": "basic", "centring": "samples"}
    if size == "quick":
        base.update(group="Z41", width=512, lr=1e-3, seeds=[6, 3], steps=1200)
    elif size == "smoke":
        base.update(group="Z11", width=32, train_ratio=0.6, lr=5e-3, seeds=[1, 1], steps=60)
    return base


def _configs(s: dict) -> dict[str, dict]:
    """The two arms as train_grid (base, grid) pairs, keyed by arm name."""
    base = {k: s[k] for k in ("group", "width", "train_ratio", "optimizer", "lr", "activation", "loss",
                              "init_scale", "top_init_scale", "steps", "diagnostics", "centring")}
    base.update(early_stop=False, checkpoint_every=0, threads=1)
    return {f"eta_{wd:g}": ({**base, "weight_decay": wd}, {"seed": {"range": [0, n]}})
            for wd, n in zip(s["weight_decay"], s["seeds"])}


def _deviations(size: str, s: dict) -> list[dict]:
    devs = [
        deviation("optimizer", "not stated", "Adam with coupled L2 (the reference code's)",
                  "the paper does not name Fig 3's optimiser; the reference implementation uses Adam"),
        deviation("learning rate", "not stated", s["lr"],
                  "5e-4 is the only rate the paper states at K = 2048, η = 2e-4 (Fig 5)" if size == "full" else
                  "a larger rate so the quick runs grok within their short budget"),
        deviation("activation, init", "not stated", "x², uniform ±1/√fan_in (α = 1/√K·…, not ≪ 1)",
                  "x² is the theory's case; li2's default init (the reference code's)"),
        deviation("loss", "½‖P⊥₁(Y − FV)‖², summed", "class-centred MSE, mean over samples (reference code)",
                  "li2 trains the reference loss; the diagnostics use the paper's sample centring "
                  "(--centring samples)"),
        deviation("steps", "not stated", s["steps"], "long enough to see Stage III and ‖G_F‖ decay"),
        deviation("V before W", PAPER["V_before_W"], "half-times of ‖V − V₀‖/‖V₀‖ and ‖W − W₀‖/‖W₀‖",
                  "drifts are recorded at every evaluation and survive a resume; per-step weight pairs are not kept"),
        deviation("stage boundaries", "described in words", "li2.theory.stages thresholds " + str(THRESHOLDS),
                  "a measurable version of the paper's definitions, fixed before this recipe was run"),
    ]
    if size != "full":
        devs += [deviation("group", "Z71", s["group"], f"{size} size: a smaller task"),
                 deviation("width K", 2048, s["width"], f"{size} size: cheaper steps"),
                 deviation("seeds", 15, f"{s['seeds'][0]} (η = 2e-4) and {s['seeds'][1]} (η = 0)",
                           f"{size} size: fewer runs (6 is the fewest for which a unanimous share can be "
                           "conclusive at 95%)")]
    if size == "smoke":
        devs.append(deviation("train ratio", 0.4, s["train_ratio"], "smoke size (tests only)"))
    return devs


def _core_seconds(s: dict) -> float:
    """Rough single-core cost: steps·(3e-4 + 1.5e-8·n·K) + evaluations·(ridge Gram and Cholesky at 5 GFLOP/s)."""
    m = int(s["group"][1:])
    n, K = round(s["train_ratio"] * m * m), s["width"]
    per_run = s["steps"] * (3e-4 + 1.5e-8 * n * K) + 130 * (2 * n * K * K + K ** 3 / 1.5) / 5e9
    return per_run * sum(s["seeds"])


def plan(size: str, in_all: bool = False) -> Plan:
    s = _settings(size)
    return {"runs": sum(s["seeds"]), "core_hours": float(f"{_core_seconds(s) / 3600:.4g}"), "paper_setting": PAPER,
            "setting": s, "deviations": _deviations(size, s)}


# -- per-seed read-outs ------------------------------------------------------------------------------------

def _half_time(m: pd.DataFrame, col: str) -> float | None:
    """Step at which m[col] first reaches half its maximum, interpolated linearly between evaluations
    (so seeds are not all rounded to the same evaluation step); None without the column."""
    if col not in m or not m[col].notna().any() or m[col].max() <= 0:
        return None
    x, t = m[col].to_numpy(float), m.step.to_numpy(float)
    half = 0.5 * np.nanmax(x)
    i = int(np.argmax(x >= half))
    if i == 0 or x[i] == x[i - 1]:
        return float(t[i])
    return float(t[i - 1] + (half - x[i - 1]) * (t[i] - t[i - 1]) / (x[i] - x[i - 1]))


def _stage_of(step, st: dict) -> str | None:
    """Which stage a step falls in, by the detected boundaries."""
    if step is None or st.get("lazy_end") is None:
        return None
    for name, end in (("I", st["lazy_end"]), ("II", st.get("independent_end")), ("III", st.get("interactive_end"))):
        if end is None or step <= end:
            return name
    return "after III"


def seed_record(m: pd.DataFrame, model: dict) -> dict:
    """One seed's numbers from its metrics (sorted by step) and its summary entry."""
    st = model.get("stages") or {}
    g = m.grad_norm.to_numpy(float)
    grok = model.get("grok_step")
    lazy = st.get("lazy_end")
    rec = {"seed": model["seed"], **{k: st.get(k) for k in (*STAGE_KEYS, "independent_start", "lazy_w_drift",
                                                          "lazy_clean", "stage3_signal")},
           "all_stages": all(st.get(k) is not None for k in STAGE_KEYS), "grok_step": grok,
           "final_test_acc": float(m.test_acc.iloc[-1]), "grad_initial": float(g[0]), "grad_peak": float(g.max()),
           "grad_peak_step": int(m.step.iloc[int(g.argmax())]), "grad_final": float(g[-1]),
           "t_half_v": _half_time(m, "v_drift"), "t_half_w": _half_time(m, "w_drift"),
           "max_offdiag_ratio": float(m.offdiag_ratio.max()), "peak_stage2_cosine": float(m.stage2_cosine.max()),
           "grok_stage": _stage_of(grok, st), "final_coverage": float(m.coverage.iloc[-1]) if "coverage" in m else None}
    both = grok is not None and lazy is not None
    rec["grok_minus_lazy"] = (math.log(grok + 1) - math.log(lazy + 1)) if both else None
    rec["w_minus_v"] = (math.log(rec["t_half_w"] + 1) - math.log(rec["t_half_v"] + 1)
                        if rec["t_half_w"] is not None and rec["t_half_v"] is not None else None)
    return rec


# -- aggregation and verdict ------------------------------------------------------------------------------

def share_ci(flags, level: float = 0.95) -> dict:
    """{"n", "k", "share", "ci"}: Clopper–Pearson interval of a share of seeds."""
    flags = [bool(f) for f in flags]
    n, k = len(flags), sum(flags)
    if n == 0:
        return {"n": 0, "k": 0, "share": None, "ci": None}
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return {"n": n, "k": k, "share": k / n, "ci": [lo, hi]}


def measure(records: pd.DataFrame, zero: pd.DataFrame) -> dict:
    """Numbers with CIs over seeds: records of the η = 2e-4 arm, zero those of the η = 0 arm."""
    r = records
    log_ratio = lambda a, b: [math.log(x / y) if x > 0 and y > 0 else None for x, y in zip(a, b)]  # noqa: E731
    return {
        "n_seeds": {"eta_2e-4": len(r), "eta_0": len(zero)},
        "final_test_acc": {"eta_2e-4": mean_ci(r.final_test_acc), "eta_0": mean_ci(zero.final_test_acc)},
        "all_stages_found": share_ci(r.all_stages),
        "stage_ends": {k: mean_ci(r[k].dropna()) for k in (*STAGE_KEYS, "independent_start")},
        "lazy_w_drift": mean_ci(r.lazy_w_drift.dropna()),
        "grok_step": mean_ci(r.grok_step.dropna()),
        "grok_minus_lazy_log": mean_ci(r.grok_minus_lazy.dropna()),
        "grok_stage_counts": r.grok_stage.fillna("none").value_counts().to_dict(),
        "stage3_signal_counts": r.stage3_signal.fillna("none").value_counts().to_dict(),
        "grad_rise_log": mean_ci(log_ratio(r.grad_peak, r.grad_initial)),
        "grad_decay_log": mean_ci(log_ratio(r.grad_final, r.grad_peak)),
        "grad_peak_step": mean_ci(r.grad_peak_step),
        "grad_decay_log_eta_0": mean_ci(log_ratio(zero.grad_final, zero.grad_peak)),
        "w_minus_v_log": mean_ci(r.w_minus_v.dropna()),
        "t_half_v": mean_ci(r.t_half_v.dropna()), "t_half_w": mean_ci(r.t_half_w.dropna()),
        "max_offdiag_ratio": mean_ci(r.max_offdiag_ratio),
        "peak_stage2_cosine": mean_ci(r.peak_stage2_cosine),
        "final_coverage": mean_ci(r.final_coverage.dropna()) if "final_coverage" in r else None,
    }


def _side(ci, threshold: float, want_above: bool) -> str:
    """supports / contradicts / inconclusive for an interval against a threshold."""
    if not ci:
        return "inconclusive"
    lo, hi = ci
    if (lo > threshold) if want_above else (hi < threshold):
        return "supports"
    if (hi < threshold) if want_above else (lo > threshold):
        return "contradicts"
    return "inconclusive"


def _num(x) -> str:
    return "none" if x is None else f"{x:.3g}"


def verdict(m: dict) -> tuple[str, dict, list[str]]:
    acc = m["final_test_acc"]
    wd = combine({"with": _side(acc["eta_2e-4"]["ci"], GENERALISED, True),
                  "without": _side(acc["eta_0"]["ci"], GENERALISED, False)})
    rise = _side(m["grad_rise_log"]["ci"], math.log(GRAD_RISE), True)
    decay = _side(m["grad_decay_log"]["ci"], math.log(GRAD_DECAY), False)
    parts = {"weight_decay": wd, "stages": _side(m["all_stages_found"]["ci"], 0.5, True),
             "stage1_lazy": _side(m["lazy_w_drift"]["ci"], THRESHOLDS["W_STILL"], False),
             "grok_after_stage1": _side(m["grok_minus_lazy_log"]["ci"], 0.0, True),
             "grad_norm": combine({"rise": rise, "decay": decay}),
             "V_before_W": _side(m["w_minus_v_log"]["ci"], 0.0, True),
             "gram_diagonal": _side(m["max_offdiag_ratio"]["ci"], DIAG_TOLERANCE, False)}
    fmt = lambda c: "none" if not c else f"[{c[0]:.3g}, {c[1]:.3g}]"  # noqa: E731
    reasons = [
        f"final test acc η=2e-4 {acc['eta_2e-4']['mean']:.3g} CI {fmt(acc['eta_2e-4']['ci'])}, η=0 "
        f"{acc['eta_0']['mean']:.3g} CI {fmt(acc['eta_0']['ci'])} → {parts['weight_decay']}",
        f"all three stages found in {m['all_stages_found']['k']}/{m['all_stages_found']['n']} seeds, CI "
        f"{fmt(m['all_stages_found']['ci'])} → {parts['stages']}",
        f"W drift at the end of Stage I {_num(m['lazy_w_drift']['mean'])} CI {fmt(m['lazy_w_drift']['ci'])} vs "
        f"W_STILL {THRESHOLDS['W_STILL']} → {parts['stage1_lazy']}",
        f"ln(grok+1) − ln(Stage I end+1): CI {fmt(m['grok_minus_lazy_log']['ci'])}; grokking falls in "
        f"{m['grok_stage_counts']} → {parts['grok_after_stage1']}",
        f"‖G_F‖ ln(peak/initial) CI {fmt(m['grad_rise_log']['ci'])} (rise if > ln {GRAD_RISE}: {rise}), "
        f"ln(final/peak) CI {fmt(m['grad_decay_log']['ci'])} (decay if < ln {GRAD_DECAY}: {decay})",
        f"ln t½(W) − ln t½(V): CI {fmt(m['w_minus_v_log']['ci'])} → {parts['V_before_W']}",
        f"largest off-diagonal/diagonal of F̃ᵀF̃: CI {fmt(m['max_offdiag_ratio']['ci'])} vs {DIAG_TOLERANCE} "
        f"→ {parts['gram_diagonal']}",
    ]
    return combine(parts), parts, reasons


# -- running --------------------------------------------------------------------------------------------

def _read_arm(folder, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one seed_record per run, all runs' metrics) of an arm trained by train_grid into folder."""
    records, metrics = [], []
    for run_id in rows.run_id:
        d = folder / "runs" / run_id
        try:
            model = read_json(d / "summary.json")["models"][0]
            m = read_parquet(d / "metrics.parquet").sort_values("step")
        except StoreError:    # a failed run: counted out (n_seeds says how many remain)
            continue
        records.append(seed_record(m, model))
        metrics.append(m)
    if not records:
        raise RuntimeError(f"dynamics: no run of {folder.name} finished; see {folder}/runs")
    return pd.DataFrame(records), pd.concat(metrics, ignore_index=True)


def _figure(main: pd.DataFrame, zero: pd.DataFrame, first_stages: dict, title: str):
    """Fig 3's panels over seeds (thin lines), η = 2e-4 in blue and η = 0 in red; stages of seed 0 shaded."""
    plt = pyplot()
    panels = [("test_acc", "test accuracy", "linear"), ("grad_norm", "‖G_F‖_F", "log"),
              ("drift", "‖X − X₀‖/‖X₀‖ (W solid, V dashed)", "linear"),
              ("ridge_distance", "‖V − V_ridge‖/‖V_ridge‖", "log"), ("stage2_cosine", "cos(G_F, ηỸỸᵀF)", "linear"),
              ("offdiag_ratio", "off-diag/diag of F̃ᵀF̃", "linear")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (col, label, yscale) in zip(axes.flat, panels):
        shade_stages(ax, first_stages)
        for frame, colour in ((main, "C0"), (zero, "C3")):
            for _, m in frame.groupby("seed"):
                x = m.step + 1
                if col == "drift":
                    ax.plot(x, m.w_drift, color=colour, alpha=0.5, lw=0.8)
                    ax.plot(x, m.v_drift, color=colour, alpha=0.5, lw=0.8, ls="--")
                elif col in m and m[col].notna().any():
                    ax.plot(x, m[col], color=colour, alpha=0.5, lw=0.8)
        ax.set(xscale="log", yscale=yscale, xlabel="step + 1", title=label)
        ax.grid(alpha=0.3)
    axes[1, 2].axhline(DIAG_TOLERANCE, color="k", ls=":", lw=0.8)
    axes[0, 0].plot([], [], color="C0", label="η = 2e-4")
    axes[0, 0].plot([], [], color="C3", label="η = 0")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _headline(m: dict, parts: dict) -> str:
    st = m["stage_ends"]
    mean = lambda d: "—" if d["mean"] is None else f"{d['mean']:.0f}"  # noqa: E731
    drift = m["lazy_w_drift"]["mean"]
    return (f"stages found in {m['all_stages_found']['k']}/{m['all_stages_found']['n']} seeds (I ends ≈ "
            f"{mean(st['lazy_end'])}, III begins ≈ {mean(st['independent_end'])}); W drift at the end of Stage I "
            f"{drift if drift is None else round(drift, 2)}; "
            f"test acc {m['final_test_acc']['eta_2e-4']['mean']:.2f} (η=2e-4) vs "
            f"{m['final_test_acc']['eta_0']['mean']:.2f} (η=0); grokking in {m['grok_stage_counts']}; "
            + ", ".join(f"{k} {v}" for k, v in parts.items()))


def run(ctx: RecipeContext) -> Findings:
    """Fig 3 at li2's settings for ctx.size (plan(size) lists them and every deviation): two arms, η = 2e-4
    and η = 0, several seeds each, basic diagnostics with the paper's sample centring; stages per seed."""
    s = _settings(ctx.size)
    p = plan(ctx.size)
    if ctx.size == "full":
        ctx.log(f"dynamics: {p['runs']} runs, ≈ {p['core_hours']:.1f} core-hours (quick version: --quick)")
    frames = {}
    for name, (base, grid) in _configs(s).items():
        ctx.log(f"dynamics: arm {name}, {grid['seed']['range'][1]} seeds, {s['group']} K={s['width']}")
        rows = train_grid(ctx, ctx.out / name, base, grid)
        frames[name] = _read_arm(ctx.out / name, rows)
    (rec_main, met_main), (rec_zero, met_zero) = frames.values()
    measured = measure(rec_main, rec_zero)
    verdict_, parts, reasons = verdict(measured)
    tables = {"seeds.parquet": pd.concat([rec_main.assign(arm="eta_2e-4"), rec_zero.assign(arm="eta_0")]),
              "metrics.parquet": pd.concat([met_main.assign(arm="eta_2e-4"), met_zero.assign(arm="eta_0")])}
    for name, df in tables.items():
        write_parquet(ctx.out / name, df)
    first = rec_main.iloc[0].to_dict()
    title = (f"{s['group']}  K={s['width']}  p={s['train_ratio']}  Adam lr={s['lr']:g}  σ=x²  "
             f"({len(rec_main)} + {len(rec_zero)} seeds; stages of seed {first['seed']} shaded)")
    figs = save_both(_figure(met_main, met_zero, {k: first.get(k) for k in STAGE_KEYS}, title), ctx.out, "dynamics")
    return {"claim": CLAIM,
            "expected": {"weight_decay": "groks with η = 2e-4, not with η = 0", "grad_norm": "rises, then decays",
                         "order": "V moves before W; Stage I < II < III; test accuracy low in Stage I",
                         "gram": f"F̃ᵀF̃ diagonal within {DIAG_TOLERANCE:.0%}"},
            "setup": p["setting"], "paper_setting": p["paper_setting"], "setting": p["setting"],
            "deviations": p["deviations"], "measured": measured, "rule": RULE, "verdict": verdict_,
            "verdict_parts": parts, "reasons": reasons, "headline": _headline(measured, parts),
            "figures": figs, "tables": list(tables), "stage_thresholds": THRESHOLDS, "notes": NOTES,
            "seeds": rec_main.to_dict("records")}
