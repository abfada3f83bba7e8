"""Stage boundaries from the paper's own definitions (docs/theory.md, stage detection).

Read per model from the evaluated steps of metrics.parquet. Test accuracy is NEVER read: grokking
is the observation the stages are meant to explain, so using it would make "grokking happens in
Stage III" true by construction. Only training-set and weight diagnostics enter
(li2.engine.diagnostics): ridge_distance, w_drift, stage2_cosine, offdiag_ratio,
grad_missing_share / missing_share, coverage.

  lazy_end          Stage I ends: the first evaluation at which the top layer has fitted the current
                    features, ridge_distance = ‖V − V_ridge(F)‖/‖V_ridge(F)‖ ≤ RIDGE_CLOSE (V_ridge
                    of the run's own objective, λ = nη/2). The paper's Stage I also has W barely
                    moving; that half is reported, not assumed: lazy_w_drift = w_drift there and
                    lazy_clean = (lazy_w_drift ≤ W_STILL).
  independent_start Stage II in effect: the first evaluation ≥ lazy_end at which the gradient
                    follows the independent energy ascent, stage2_cosine = cos(G_F, ηỸỸᵀF) ≥
                    STAGE2_COSINE (Thm 1: g_j ∝ ηỸỸᵀf_j, each node sees only its own activation).
  independent_end   Stage III begins: the first evaluation after independent_start at which an
                    interaction signal rises (stage3_signal names the first that does):
                      cosine_drop  stage2_cosine < INDEPENDENT_DROP × its running maximum since
                                   independent_start — the node-wise form stops explaining G_F;
                      repulsion    offdiag_ratio (mean |off-diagonal| / mean |diagonal| of F̃ᵀF̃)
                                   ≥ (1 + REPULSION_RISE) × its value at independent_start (Thm 6);
                      modulation   grad_missing_share ≥ MODULATION × missing_share: ∂L/∂W holds at
                                   least MODULATION times the share of the not-yet-covered irreps
                                   that a gradient spread by dimension would give (Thm 7).
  interactive_end   Stage III ends: the first evaluation ≥ independent_end from which the coverage
                    (irreps held by learned nodes) stays at its final value to the end of the run
                    (None without spectra or when no irrep is ever covered).
Each boundary is None when its condition never holds (or the previous one is None), so a reported
triple is always ordered lazy_end ≤ independent_end ≤ interactive_end.

The thresholds were fixed before the `dynamics` recipe was run (they were looked at only on Z41
exploratory runs, K = 512/1024, which the recipe does not use; THRESHOLDS lists them).
"""
from __future__ import annotations

import math

import pandas as pd

RIDGE_CLOSE = 0.3        # V within 30% of V_ridge (relative Frobenius distance)
W_STILL = 0.1            # W moved less than 10% of its initial norm: "barely moved"
STAGE2_COSINE = 0.5      # the independent form explains G_F: cosine at least 0.5
INDEPENDENT_DROP = 0.8   # Stage III: the cosine fell below 80% of its Stage-II peak
REPULSION_RISE = 0.25    # Stage III: off-diagonal ratio of F̃ᵀF̃ up by 25% from the start of Stage II
MODULATION = 1.5         # Stage III: gradient share on missing irreps ≥ 1.5 × their dimension share
THRESHOLDS = {"RIDGE_CLOSE": RIDGE_CLOSE, "W_STILL": W_STILL, "STAGE2_COSINE": STAGE2_COSINE,
              "INDEPENDENT_DROP": INDEPENDENT_DROP, "REPULSION_RISE": REPULSION_RISE, "MODULATION": MODULATION}
STAGE_KEYS = ("lazy_end", "independent_end", "interactive_end")
SPECTRUM_COLUMNS = ("n_active", "coverage", "mean_dominant_fraction", "concentrated_fraction", "diversity")


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _value(row: dict, col: str):
    v = row.get(col)
    return float(v) if _ok(v) else None


def _stage3_signal(row: dict, peak: float, start: dict) -> str | None:
    """The first interaction signal that holds at this row (module docstring), or None."""
    c = _value(row, "stage2_cosine")
    if c is not None and c < INDEPENDENT_DROP * peak:
        return "cosine_drop"
    off, off0 = _value(row, "offdiag_ratio"), _value(start, "offdiag_ratio")
    if off is not None and off0 is not None and off0 > 0 and off >= (1 + REPULSION_RISE) * off0:
        return "repulsion"
    g, base = _value(row, "grad_missing_share"), _value(row, "missing_share")
    if g is not None and base is not None and base > 0 and g >= MODULATION * base:
        return "modulation"
    return None


def detect_stages(m: pd.DataFrame, grok_threshold: float | None = None) -> dict:
    """m: one model's metrics rows sorted by step → {"lazy_end", "independent_end", "interactive_end",
    "independent_start", "lazy_w_drift", "lazy_clean", "stage3_signal"} (module docstring).

    grok_threshold is accepted for the old call signature and ignored: no boundary reads test accuracy.
    """
    rows = m.to_dict("records")
    steps = [int(r["step"]) for r in rows]
    out = {k: None for k in (*STAGE_KEYS, "independent_start", "lazy_w_drift", "lazy_clean", "stage3_signal")}
    lazy = next((i for i, r in enumerate(rows)
                 if _value(r, "ridge_distance") is not None and r["ridge_distance"] <= RIDGE_CLOSE), None)
    if lazy is None:
        return out
    out["lazy_end"] = steps[lazy]
    drift = _value(rows[lazy], "w_drift")
    out["lazy_w_drift"] = drift
    out["lazy_clean"] = None if drift is None else drift <= W_STILL
    start = next((i for i in range(lazy, len(rows))
                  if _value(rows[i], "stage2_cosine") is not None and rows[i]["stage2_cosine"] >= STAGE2_COSINE), None)
    if start is None:
        return out
    out["independent_start"] = steps[start]
    peak, third = rows[start]["stage2_cosine"], None
    for i in range(start + 1, len(rows)):
        signal = _stage3_signal(rows[i], peak, rows[start])
        if signal is not None:
            third, out["stage3_signal"] = i, signal
            break
        c = _value(rows[i], "stage2_cosine")
        peak = max(peak, c) if c is not None else peak
    if third is None:
        return out
    out["independent_end"] = steps[third]
    out["interactive_end"] = _coverage_settled(rows, steps, third)
    return out


def _coverage_settled(rows: list[dict], steps: list[int], first: int) -> int | None:
    """First step ≥ steps[first] from which coverage stays at its final (non-zero) value."""
    final = _value(rows[-1], "coverage")
    if final is None or final <= 0:
        return None
    for i in range(first, len(rows)):
        if all(_value(r, "coverage") is not None and r["coverage"] >= final for r in rows[i:]):
            return steps[i]
    return None


def annotate_summary(summary: dict, metrics: pd.DataFrame, config) -> dict:
    """Add "stages" (and "spectrum": the last evaluation's node-spectrum read-out) to every model of
    summary.json (in place; also returned)."""
    for model in summary["models"]:
        m = metrics[metrics.seed == model["seed"]].sort_values("step")
        model["stages"] = detect_stages(m) if len(m) else None
        last = m.iloc[-1] if len(m) else None
        cols = [c for c in SPECTRUM_COLUMNS if last is not None and c in m and _ok(last[c])]
        if cols:   # the features at the end of training (docs/theory.md, reading features)
            model["spectrum"] = {c: (int(last[c]) if c in ("n_active", "coverage") else float(last[c])) for c in cols}
    return summary
