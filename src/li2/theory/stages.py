"""Stage detection: where lazy learning, independent and interactive feature learning end (SPEC §2–§4).

Rules, applied per model to the evaluated steps of metrics.parquet (thresholds below):
  lazy_end         first step where the top layer has fit the random features: train accuracy
                   ≥ LAZY_TRAIN_ACC, or the backpropagated gradient has taken its Stage-II form
                   (stage2_cosine = cos(G_F, ηỸỸᵀF) ≥ LAZY_COSINE; SPEC §2: at V ≈ V_ridge,
                   g_j ∝ ηỸỸᵀf_j).
  independent_end  first step after lazy_end where the Stage-II form stops explaining G_F:
                   stage2_cosine falls below INDEPENDENT_DROP × its running maximum since lazy_end.
                   That happens when F is no longer random, i.e. when the nodes' features start to
                   interact through (FᵀF + ηI)⁻¹ (SPEC §4). Without that column: first step where
                   mean_dominant_fraction ≥ CONCENTRATED (nodes concentrated on single components).
  interactive_end  first step ≥ independent_end from which test accuracy stays ≥ the grok threshold
                   to the end and (when spectra were recorded) coverage is at its final value,
                   i.e. every irrep the model will use is covered: generalisation is complete.
Each boundary is None when its condition never holds (or the previous one is None), so a
reported triple is always ordered lazy_end ≤ independent_end ≤ interactive_end.
"""
from __future__ import annotations

import math

import pandas as pd

LAZY_TRAIN_ACC = 0.9
LAZY_COSINE = 0.8
INDEPENDENT_DROP = 0.9
CONCENTRATED = 0.5
SPECTRUM_COLUMNS = ("n_active", "coverage", "mean_dominant_fraction", "concentrated_fraction", "diversity")


def _ok(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def detect_stages(m: pd.DataFrame, grok_threshold: float = 0.95) -> dict:
    """m: one model's metrics rows sorted by step → {"lazy_end", "independent_end", "interactive_end"}."""
    rows = m.to_dict("records")
    steps = [int(r["step"]) for r in rows]
    lazy = next((i for i, r in enumerate(rows)
                 if r["train_acc"] >= LAZY_TRAIN_ACC or (_ok(r.get("stage2_cosine")) and r["stage2_cosine"] >= LAZY_COSINE)),
                None)
    independent = None
    if lazy is not None:
        if "stage2_cosine" in m and m["stage2_cosine"].notna().any():
            peak = -math.inf
            for i in range(lazy, len(rows)):
                c = rows[i]["stage2_cosine"]
                if not _ok(c):
                    continue
                if c < INDEPENDENT_DROP * peak:
                    independent = i
                    break
                peak = max(peak, c)
        elif "mean_dominant_fraction" in m:
            independent = next((i for i in range(lazy, len(rows))
                                if _ok(rows[i].get("mean_dominant_fraction"))
                                and rows[i]["mean_dominant_fraction"] >= CONCENTRATED), None)
    interactive = None
    if independent is not None:
        final_cov = rows[-1].get("coverage") if "coverage" in m else None
        for i in range(independent, len(rows)):
            held = all(_ok(r["test_acc"]) and r["test_acc"] >= grok_threshold for r in rows[i:])
            covered = not _ok(final_cov) or (_ok(rows[i].get("coverage")) and rows[i]["coverage"] >= final_cov)
            if held and covered:
                interactive = i
                break
    pick = lambda i: steps[i] if i is not None else None
    return {"lazy_end": pick(lazy), "independent_end": pick(independent), "interactive_end": pick(interactive)}


def annotate_summary(summary: dict, metrics: pd.DataFrame, config) -> dict:
    """Add "stages" (and "spectrum": the last evaluation's node-spectrum read-out) to every model of
    summary.json (in place; also returned)."""
    for model in summary["models"]:
        m = metrics[metrics.seed == model["seed"]].sort_values("step")
        model["stages"] = detect_stages(m, config.grok_threshold) if len(m) else None
        last = m.iloc[-1] if len(m) else None
        cols = [c for c in SPECTRUM_COLUMNS if last is not None and c in m and _ok(last[c])]
        if cols:   # the features at the end of training (SPEC §8)
            model["spectrum"] = {c: (int(last[c]) if c in ("n_active", "coverage") else float(last[c])) for c in cols}
    return summary
