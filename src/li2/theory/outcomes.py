"""What happened to each model of a run, in the vocabulary of docs/theory.md (what-the-hyperparameters-do),
and which knob to turn.

`annotate_outcomes(summary, metrics, config)` adds to every model of summary.json
    "outcome"   one of OUTCOMES (below)
    "hint"      one line: what the theory says to change
    "evidence"  the numbers the rule looked at
Rules, applied in this order to one model's metrics rows (sorted by step); the first that holds wins.
With θ = config.grok_threshold (0.95 by default), M the group order, "final" = last evaluated row:

  diverged             status starts with "diverged" (the trainer saw a non-finite loss).
  ungrokked            peak test acc ≥ θ at some step, and the final test acc < θ and
                       ≤ peak − UNGROK_DROP (0.05): generalisation was reached and then lost
                       (docs/theory.md, memorisation).
  grokked              final test acc ≥ θ.
  collapsed            the weights decayed away: final ‖W‖ < COLLAPSED (0.05) × ‖W₀‖ (w_norm column) and the
                       training set is not fit (final train acc < FIT). Weight decay won over the loss
                       gradient before features formed (η too large for this learning rate).
  no_feature_learning  W hardly moved and test acc stayed near chance: max over the run of
                       ‖W − W₀‖/‖W₀‖ (w_drift) < SMALL_DRIFT (0.05), and peak test acc < 1/M + NEAR_CHANCE
                       (0.1). Without a w_drift column (--diagnostics off), |‖W‖ − ‖W₀‖|/‖W₀‖ from w_norm
                       is used instead; it is a lower bound of the drift, so the call is flagged
                       "drift_estimated" in evidence. Stage I: G_F ∝ η, so η = 0 (or a tiny learning rate,
                       or a very wide layer) leaves W where it started while the top layer fits.
  memorized            final train acc ≥ FIT (0.99), test acc < θ, and either the nodes are not irrep-like
                       (mean_dominant_fraction — share of an active node's ‖w‖² in its largest isotypic
                       component — < IRREP_LIKE (0.6), or that column absent) or test accuracy has stopped
                       rising (it gained < RISING (0.02) over the last quarter of the steps). Memorisation: nodes
                       sit on memorisation maxima because the training set is below p_c (or lr / η pushed
                       them). (Small groups have few components, so their nodes can look irrep-like while
                       the model memorises: the plateau test catches that.)
  unfinished           anything else: the data is not fit yet, or it is fit, the nodes are irrep-like and
                       test accuracy is still rising — the step budget ran out mid-way.

The hint for `memorized` compares the training ratio p with p_c = 2.7482·ln M / M (docs/theory.md, the scaling law).

Stopped early: a `memorized` or `unfinished` model whose run ended (steps_trained, else its last evaluated
step) before `typical_grok_step` of its settings — the number of steps li2's runs with those settings
typically take to grok — gets evidence "stopped_early": True and "typical_grok_step", and its hint says
so first: its curve cannot tell memorisation from a grok still to come.
"""
from __future__ import annotations

import math

import pandas as pd

from ..config import resolve_group
from ..task import REFERENCE_C, critical_ratio

OUTCOMES = ("grokked", "memorized", "no_feature_learning", "ungrokked", "diverged", "collapsed", "unfinished")
UNGROK_DROP = 0.05
SMALL_DRIFT = 0.05
NEAR_CHANCE = 0.1
FIT = 0.99
IRREP_LIKE = 0.6
RISING = 0.02
COLLAPSED = 0.05

# Typical grok step of li2's runs, fitted as log t = a + Σ b_x·log x on 124 grokked runs (benchmarks/grok_time.py:
# Z_M with M ∈ {23, 41, 71}, p/p_c ∈ {1.2, 1.6, 2.4}, lr ∈ {5e-4, 2e-3, 8e-3}, η ∈ {1e-4, 5e-4, 2e-3},
# K ∈ {128, …, 2048}, Adam, σ = x², MSE, 2 seeds). Residual sd 0.45 in log t: a factor of 1.6 either way.
# It reads like the theory: a larger η or lr, more data above p_c and a wider layer (under Adam) grok sooner.
GROK_TIME_FIT = {"const": -0.577, "lr": -0.533, "weight_decay": -0.623, "ratio_over_critical": -2.957,
                 "width": -0.296, "order": 0.370}
GROK_TIME_RANGE = {"lr": (5e-4, 8e-3), "weight_decay": (1e-4, 2e-3), "ratio_over_critical": (1.2, 2.4),
                   "width": (128, 2048), "order": (23, 71)}
GROK_TIME_SETTINGS = {"optimizer": "adam", "activation": "sqr", "loss": "mse", "layers": 0, "top_layer": "learned",
                      "operands": 2, "init_scale": 1.0, "top_init_scale": 1.0, "model": "mlp2"}


# -- read-outs of one model's curve --------------------------------------------------------------

def grok_step(steps: list[int], test_acc: list[float], threshold: float = 0.95) -> int | None:
    """First evaluated step from which test accuracy stays ≥ threshold to the end (None if never)."""
    first = None
    for s, a in zip(steps, test_acc):
        if a is not None and not math.isnan(a) and a >= threshold:
            first = s if first is None else first
        else:
            first = None
    return first


def first_step(steps: list[int], values: list[float], threshold: float) -> int | None:
    """First evaluated step whose value is ≥ threshold (None if never)."""
    for s, v in zip(steps, values):
        if v is not None and not math.isnan(v) and v >= threshold:
            return s
    return None


def typical_grok_step(config, order: int | None) -> int | None:
    """The step at which runs with these settings typically grok (GROK_TIME_FIT), or None where the fit
    says nothing: other optimisers, activations, losses or architectures than it was measured on, a
    setting more than a factor 2 outside its range, or p < 1.1·p_c (near p_c many runs never grok)."""
    if order is None or order < 2 or any(getattr(config, k, None) != v for k, v in GROK_TIME_SETTINGS.items()):
        return None
    try:
        ratio = float(config.resolved_ratio(order)) / critical_ratio(order, REFERENCE_C)
    except (ValueError, AttributeError):
        return None
    values = {"lr": config.lr, "weight_decay": config.weight_decay, "width": config.width, "order": order,
              "ratio_over_critical": min(ratio, 2 * GROK_TIME_RANGE["ratio_over_critical"][1])}
    if ratio < 1.1 or any(not (lo / 2 <= values[k] <= 2 * hi) for k, (lo, hi) in GROK_TIME_RANGE.items()):
        return None
    log_t = GROK_TIME_FIT["const"] + sum(b * math.log(values[k]) for k, b in GROK_TIME_FIT.items() if k != "const")
    return int(float(f"{math.exp(log_t):.2g}"))


# -- outcomes ---------------------------------------------------------------------------------------

def _finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _col(m: pd.DataFrame, name: str) -> pd.Series | None:
    if name not in m or not m[name].notna().any():
        return None
    return m[name].dropna()


def _ratio(config, order: int | None) -> tuple[float | None, float | None]:
    """(p, p_c) for the hint; None where they cannot be known."""
    if order is None or order < 2:
        return None, None
    try:
        p = float(config.resolved_ratio(order))
    except (ValueError, AttributeError):
        p = None
    return p, critical_ratio(order, REFERENCE_C)


def _hint(outcome: str, config, order: int | None, evidence: dict) -> str:
    hint = _knob_hint(outcome, config, order, evidence)
    if not evidence.get("stopped_early"):
        return hint
    t, stopped = evidence["typical_grok_step"], evidence["steps_trained"]
    early = (f"the run stopped at step {stopped}, before the ≈{t} steps runs with these settings typically take "
             f"to grok (li2's calibration, ±1.6×)")
    if outcome == "unfinished":
        return f"{early}: raise --steps to {3 * t} or more"
    return f"{early}: rerun with --steps {3 * t} or more before trusting '{outcome}' (if it then still is: {hint})"


def _knob_hint(outcome: str, config, order: int | None, evidence: dict) -> str:
    p, pc = _ratio(config, order)
    wd, lr = getattr(config, "weight_decay", None), getattr(config, "lr", None)
    model = getattr(config, "model", "mlp2")
    k = getattr(config, "width", None) if model != "transformer" else None    # the transformer has no K
    if outcome == "grokked":
        return ("generalised; to grok sooner the theory says raise the weight decay η (a stronger leaked label "
                "signal in G_F, docs/theory.md#stage-i--lazy-learning)"
                + (" or use fewer hidden nodes K (‖G_F‖ shrinks with K)" if k else ""))
    if outcome == "diverged":
        return f"the loss blew up: lower --lr (now {lr:g}) or use --optimizer adam" if lr else "lower --lr"
    if outcome == "ungrokked":
        return ("test accuracy peaked and then fell: training drifted from generalising features to memorisation "
                "maxima (docs/theory.md#memorisation--theorem-5); keep --early-stop on (stop at the peak), "
                "lower --lr, or add data (--train-ratio)")
    if outcome == "collapsed":
        return (f"the weights decayed to zero before features formed: lower --weight-decay (now {wd:g})"
                if wd is not None else "the weights decayed to zero: lower --weight-decay")
    if outcome == "no_feature_learning":
        why = "η = 0 leaks no label signal into G_F" if wd == 0 else f"G_F ∝ η is too weak at η = {wd:g}"
        return (f"W did not move ({why}): raise --weight-decay, use fewer hidden nodes (K = {k}) or a larger --lr"
                if k else f"W did not move ({why}): raise --weight-decay or --lr")
    if outcome == "memorized":
        if p is not None and pc is not None and p < pc and model == "mlp2":   # Thm 4's c is the two-layer net's
            return (f"training ratio p = {p:.3g} is below p_c ≈ 2.7482·ln M/M = {pc:.3g}: irrep maxima of E do not "
                    f"survive; raise --train-ratio above {pc:.3g}")
        return ("p is at or above p_c, so learning rate or weight decay pushed nodes into memorisation maxima "
                "(docs/theory.md#memorisation--theorem-5): lower --lr, or lower --weight-decay")
    return "the step budget ran out before the run settled: raise --steps (or --lr)"


def classify_model(m: pd.DataFrame, model: dict, config, order: int | None = None) -> tuple[str, dict]:
    """One model: its metrics rows m (any order) and its summary entry → (outcome, evidence)."""
    theta = float(getattr(config, "grok_threshold", 0.95))
    m = m.sort_values("step")
    status = str(model.get("status") or "")
    test = m["test_acc"].dropna()
    train = m["train_acc"].dropna()
    final_test = float(test.iloc[-1]) if len(test) else float("nan")
    final_train = float(train.iloc[-1]) if len(train) else float("nan")
    peak = float(test.max()) if len(test) else float("nan")
    peak_step = int(m.loc[test.idxmax(), "step"]) if len(test) else None
    ev: dict = {"final_train_acc": final_train, "final_test_acc": final_test, "peak_test_acc": peak,
                "peak_step": peak_step, "threshold": theta}
    drift = _col(m, "w_drift")
    if drift is not None:
        ev["max_w_drift"] = float(drift.max())
    elif "w_norm" in m and len(m):
        w = m["w_norm"].astype(float)
        ev["max_w_drift"] = float(((w - w.iloc[0]).abs() / max(abs(w.iloc[0]), 1e-30)).max())
        ev["drift_estimated"] = True
    w = m["w_norm"].astype(float) if "w_norm" in m else pd.Series(dtype=float)
    w = w[w.map(math.isfinite)]
    if len(w):
        ev["final_w_norm_ratio"] = float(w.iloc[-1] / max(abs(w.iloc[0]), 1e-30))
    if len(test) >= 2:
        steps = m.loc[test.index, "step"].astype(float)
        earlier = test[steps <= 0.75 * float(steps.iloc[-1])]
        ev["test_gain_last_quarter"] = float(test.iloc[-1] - (earlier.iloc[-1] if len(earlier) else test.iloc[0]))
    dom = _col(m, "mean_dominant_fraction")
    if dom is not None:
        ev["final_mean_dominant_fraction"] = float(dom.iloc[-1])
    cov = _col(m, "coverage")
    if cov is not None:
        ev["final_coverage"] = float(cov.iloc[-1])
    chance = 1.0 / order if order else 0.0
    ev = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in ev.items()}

    if status.startswith("diverged"):
        return "diverged", ev
    if _finite(peak) and peak >= theta and _finite(final_test) and final_test < theta \
            and final_test <= peak - UNGROK_DROP:
        return "ungrokked", ev
    if _finite(final_test) and final_test >= theta:
        return "grokked", ev
    if _finite(ev.get("final_w_norm_ratio")) and ev["final_w_norm_ratio"] < COLLAPSED \
            and not (_finite(final_train) and final_train >= FIT):
        return "collapsed", ev
    if _finite(ev.get("max_w_drift")) and ev["max_w_drift"] < SMALL_DRIFT and _finite(peak) \
            and peak < chance + NEAR_CHANCE:
        return "no_feature_learning", ev
    irrep_like = _finite(ev.get("final_mean_dominant_fraction")) and ev["final_mean_dominant_fraction"] >= IRREP_LIKE
    rising = _finite(ev.get("test_gain_last_quarter")) and ev["test_gain_last_quarter"] >= RISING
    outcome = "memorized" if _finite(final_train) and final_train >= FIT and not (irrep_like and rising) \
        else "unfinished"
    typical = typical_grok_step(config, order)
    stopped = model.get("steps_trained")
    stopped = int(stopped) if isinstance(stopped, (int, float)) and math.isfinite(stopped) else int(m["step"].max())
    if typical is not None:
        ev.update(typical_grok_step=typical, steps_trained=stopped, stopped_early=stopped < typical)
    return outcome, ev


def _order_of(config) -> int | None:
    try:
        return resolve_group(config).order
    except (ValueError, OSError):
        return None


def annotate_outcomes(summary: dict, metrics: pd.DataFrame, config, order: int | None = None) -> dict:
    """Add "outcome", "hint" and "evidence" to every model of summary (in place; also returned)."""
    if order is None:
        order = _order_of(config)
    for model in summary["models"]:
        m = metrics[metrics.seed == model["seed"]]
        if len(m) == 0:
            outcome, ev = ("diverged" if str(model.get("status", "")).startswith("diverged") else "unfinished"), {}
        else:
            outcome, ev = classify_model(m, model, config, order)
        model["outcome"] = outcome
        model["hint"] = _hint(outcome, config, order, ev)
        model["evidence"] = ev
    return summary


# -- outcomes at a step budget (the phase study) ----------------------------------------------------
#
# A run that has not grokked when its step budget runs out is not necessarily a failure: near p_c the
# grokking time grows steeply. `budget_outcome` says whether the budget decided the run:
#   grokked    final test acc ≥ θ.
#   diverged   the trainer stopped the model on a non-finite loss (decided: it will not grok).
#   memorized  final train acc ≥ FIT and, over the last SETTLE_WINDOW of the steps trained, test accuracy
#              gained < TEST_RISE, test loss fell by < TEST_LOSS_DROP (relative) and ‖W‖ changed by
#              < W_SETTLED (relative): the training set is fit, nothing moves towards generalising and the
#              weights have settled in size. (Measured on the rows before the last: the last evaluates the
#              whole test set, the others a fixed subset of it.)
#   stalled    the same flatness without fitting the training set (no feature learning), or collapsed: final
#              ‖W‖ < COLLAPSED·‖W₀‖ with the training set not fit — W ≈ 0 is absorbing when σ′(0) = 0 (x², ReLU),
#              and there the relative changes of ‖W‖ are noise. (Z127, K = 1016, Adam lr 2e-3: at p ≥ 1.3·p_ref
#              ‖W‖ fell from 18 to ≈ 0 within 100 steps and stayed there for 4000.)
#   undecided  anything else: the budget ran out while the run was still changing.
# Why these signals (measured on Z41, K = 256, Adam lr 2e-3, η 5e-4, 6000 steps): runs at 0.95·p_ref that
# grokked at steps 4000–5700 had, at step 2000, test loss falling (1.32 → 1.26 over steps 1500–2000) and
# test accuracy rising slowly (0.02 → 0.06); runs at ≤ 0.85·p_ref that never grokked had test accuracy 0
# and test loss rising (1.54 → 1.59). The direction of W is no criterion: under Adam at a constant
# learning rate it still turned by ≈ 0.2–0.6 (‖ΔW‖/‖W‖ per 1000 steps) in memorised runs at step 6000.

BUDGET_OUTCOMES = ("grokked", "memorized", "stalled", "diverged", "undecided")
SETTLE_WINDOW = 0.25
TEST_RISE = 0.02
TEST_LOSS_DROP = 0.01
W_SETTLED = 0.05


def _window_change(m: pd.DataFrame, column: str) -> tuple[float, float] | None:
    """value at the last row − value at the last row at or before (1 − SETTLE_WINDOW)·last step."""
    if column not in m or not m[column].notna().any():
        return None
    rows = m[["step", column]].dropna()
    last = float(rows["step"].iloc[-1])
    before = rows[rows["step"] <= (1.0 - SETTLE_WINDOW) * last]
    start = before.iloc[-1] if len(before) else rows.iloc[0]
    return float(rows[column].iloc[-1]) - float(start[column]), float(start[column])


def budget_outcome(m: pd.DataFrame, status: str = "", threshold: float = 0.95) -> tuple[str, dict]:
    """One model's metrics rows (columns step, train_acc, test_acc, test_loss, w_norm; any order) and its
    summary status → (one of BUDGET_OUTCOMES, evidence). Rules in the comment above this function."""
    m = m.sort_values("step")
    test, train = m["test_acc"].dropna(), m["train_acc"].dropna()
    final_test = float(test.iloc[-1]) if len(test) else math.nan
    final_train = float(train.iloc[-1]) if len(train) else math.nan
    ev: dict = {"final_test_acc": final_test, "final_train_acc": final_train,
                "steps": int(m["step"].max()) if len(m) else 0}
    if _finite(final_test) and final_test >= threshold:
        return "grokked", ev
    if str(status).startswith("diverged"):
        return "diverged", ev
    w = m["w_norm"].dropna() if "w_norm" in m else pd.Series(dtype=float)
    if len(w) >= 2 and w.iloc[-1] < COLLAPSED * w.iloc[0] and not (_finite(final_train) and final_train >= FIT):
        ev["final_w_norm_ratio"] = float(w.iloc[-1] / w.iloc[0])
        return "stalled", ev
    # the last row evaluates the whole test set, the rows before it a fixed subset (TrainConfig.test_subset):
    # changes are measured on the rows before it, so subset is compared with subset
    during = m.iloc[:-1] if len(m) > 2 else m
    acc = _window_change(during, "test_acc")
    loss = _window_change(during, "test_loss")
    norm = _window_change(during, "w_norm")
    if acc is None or loss is None or norm is None:
        return "undecided", ev
    ev.update(test_acc_gain=acc[0], test_loss_change=loss[0] / max(abs(loss[1]), 1e-30),
              w_norm_change=norm[0] / max(abs(norm[1]), 1e-30))
    flat = (ev["test_acc_gain"] < TEST_RISE and ev["test_loss_change"] > -TEST_LOSS_DROP
            and abs(ev["w_norm_change"]) < W_SETTLED)
    ev = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in ev.items()}
    if not flat:
        return "undecided", ev
    return ("memorized" if _finite(final_train) and final_train >= FIT else "stalled"), ev
