"""Which layer of a deep network moved first, and which hidden layer took up the label first, read from a
run's layer-wise metrics (li2.engine.readouts). The paper's §6: after the top layer has fitted, "the lowest
layer receives meaningful backpropagated gradient … the learning starts from there", each layer above
starting once the one below has learned.

    half step of a curve   the first evaluated step at which it has covered HALF of its whole rise: the
                           value reaches v₀ + HALF·(max − v₀), v₀ its value at the first evaluation
    drift_half_step        per weight layer, of drift_<layer> (v₀ = 0 at step 0): when it moved
    first_moved            the layer with the smallest drift half step (the lowest one on a tie)
    energy_half_step       per hidden layer, of energy_share_h<l>: when its activations took up the label
    first_learned          the hidden layer with the smallest energy half step
Scale-free by construction: under Adam every entry moves by about the learning rate per step whatever its
gradient, so the size of a drift mostly reflects the layer's init scale, its timing much less.
"""
from __future__ import annotations

import math

import pandas as pd

HALF = 0.5


def half_step(steps: list[int], values: list[float]) -> int | None:
    """First step at which values reach v₀ + HALF·(max − v₀) (None without a finite rise)."""
    pairs = [(s, float(v)) for s, v in zip(steps, values) if v is not None and math.isfinite(float(v))]
    if len(pairs) < 2:
        return None
    v0 = pairs[0][1]
    top = max(v for _, v in pairs)
    if not top > v0:
        return None
    level = v0 + HALF * (top - v0)
    return next(s for s, v in pairs if v >= level)


def _timing(m: pd.DataFrame, prefix: str) -> dict[str, int | None]:
    steps = m["step"].astype(int).tolist()
    return {c[len(prefix):]: half_step(steps, m[c].tolist()) for c in m.columns
            if c.startswith(prefix) and m[c].notna().any()}


def _first(timing: dict[str, int | None]) -> str | None:
    known = [(s, i, name) for i, (name, s) in enumerate(timing.items()) if s is not None]
    return min(known)[2] if known else None


def layer_timing(m: pd.DataFrame) -> dict | None:
    """One model's metrics rows → {"drift_half_step", "drift_final", "first_moved", "energy_half_step",
    "first_learned"} (module docstring), or None when the run has no layer-wise columns."""
    m = m.sort_values("step")
    drift = _timing(m, "drift_")
    if not drift:
        return None
    last = m.iloc[-1]
    out = {"drift_half_step": drift, "first_moved": _first(drift),
           "drift_final": {k: (float(last[f"drift_{k}"]) if pd.notna(last[f"drift_{k}"]) else None) for k in drift}}
    energy = _timing(m, "energy_share_")
    if energy:
        out["energy_half_step"] = energy
        out["first_learned"] = _first(energy)
    return out
