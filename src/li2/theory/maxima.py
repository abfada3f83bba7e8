"""The maxima of E, read: irrep-like, memorisation-like or other, and the landscape of a task
(ascent from many starts on a training split, classified; docs/theory.md, Stage II).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..algebra.representations import isotypic_components
from ..task import DEFAULT_CENTRING, make_task, split
from .landscape import activation_fns, ascend_energy, few_threads
from .spectra import node_spectrum

IRREP, MEMORIZATION, OTHER = "irrep", "memorization", "other"


def participation_ratio(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(Σ a)² / Σ a² along `dim` for a ≥ 0: the effective number of nonzero entries (0 if a ≡ 0)."""
    return a.sum(dim) ** 2 / (a * a).sum(dim).clamp_min(1e-300)


def activation_spread(w: torch.Tensor, inputs: torch.Tensor, order: int, activation="sqr") -> torch.Tensor:
    """How many operand values carry a feature's activation: w (R, kM) → (R,), in [1, M].

    a_i = (s_i − mean s)², s = σ(Xw) on the training rows (centred because Ỹᵀ cannot see a constant).
    For each operand position j the mass is summed per value, m_j(x) = Σ_{i: x_ij = x} a_i, and its
    participation ratio PR_j = (Σ m_j)² / Σ m_j² counts the values holding it; the result is
    min_j PR_j. A feature that fires on one row (or column) of the table scores ≈ 1; a frequency
    feature ≈ 0.7 M at full data. Measuring per operand value rather than per sample keeps the scale
    independent of n: a row of the table has ≈ n/M training samples at any ratio.
    """
    sigma, _ = activation_fns(activation)
    wt = w.movedim(-1, 0)                                  # (kM, R): samples first, as in energy_and_grad
    k = inputs.shape[1]
    h = wt[inputs[:, 0]]
    for j in range(1, k):
        h = h + wt[j * order + inputs[:, j]]
    c = sigma(h)
    c = c - c.mean(0, keepdim=True)
    a = c * c                                              # (n, R)
    spread = None
    for j in range(k):
        m = torch.zeros((order,) + a.shape[1:], dtype=a.dtype, device=a.device).index_add_(0, inputs[:, j], a)
        pr = participation_ratio(m, dim=0)
        spread = pr if spread is None else torch.minimum(spread, pr)
    return spread


def classify_maxima(w: torch.Tensor, components, inputs: torch.Tensor, order: int, activation="sqr",
                    irrep_threshold: float = 0.9, memo_threshold: float = 2.0) -> dict:
    """Label maxima w (R, kM) as "irrep", "memorization" or "other".

    * irrep-like: one NON-trivial isotypic component holds ≥ irrep_threshold of EACH operand block's
      ‖·‖² (the same component for all blocks). The trivial component is excluded: a constant feature
      is invisible through Ỹ (Ỹᵀ1 = 0) and cannot be a maximum with E > 0.
    * memorisation-like (only if not irrep-like): the activation is concentrated on few training
      samples, namely those of fewer than memo_threshold values of one operand (a row or column of
      the table): `activation_spread` < memo_threshold (default 2).
      Measured (σ = x², Z23/Z41/Z71, p = 0.2–0.9): maxima with w on one or two coordinates (the
      memorisation maxima ascent finds at small p) score 1.0–1.6; maxima ≥ 70% one frequency score
      ≥ 2.3 (≈ 0.7 M at full data). The two-element point (e_a0 + e_b0)/√2 scores 2.7 at full data
      (it is not a maximum there).
    * otherwise "other".
    components: an IsotypicComponents or None (non-groups: irrep test skipped).
    Returns {"labels": list[str], "dominant": (R,) long (−1 without components), "fraction": (R,)
    the dominant component's SMALLEST per-block fraction (NaN without components), "spectrum":
    (R, C) block-averaged fractions or None, "spread": (R,) activation_spread}.
    """
    R = w.shape[0]
    k = inputs.shape[1]
    spread = activation_spread(w, inputs, order, activation)
    if components is not None:
        frac = node_spectrum(w.mT, components, operands=k)     # (k, R, C)
        mean = frac.mean(0)                                    # (R, C)
        dom = mean.argmax(-1)
        dom_frac = frac.gather(-1, dom.view(1, R, 1).expand(k, R, 1)).squeeze(-1).min(0).values
        irrep = (dom_frac >= irrep_threshold) & (dom != 0)
    else:
        mean, dom = None, torch.full((R,), -1, dtype=torch.long)
        dom_frac = torch.full((R,), float("nan"), dtype=w.dtype)
        irrep = torch.zeros(R, dtype=torch.bool)
    memo = ~irrep & (spread < memo_threshold)
    labels = [IRREP if i else (MEMORIZATION if m else OTHER) for i, m in zip(irrep.tolist(), memo.tolist())]
    return {"labels": labels, "dominant": dom, "fraction": dom_frac, "spectrum": mean, "spread": spread}


def predicted_max_energy(group, train_ratio: float, activation: str, operands: int):
    """E* for cyclic groups, σ = x², full data, 2 operands *(derived)*; None otherwise.

    Odd M: every frequency gives M/4 (SPEC §3). Even M: the real sign character (k = M/2) is a
    1-dim REAL irrep, and w = [(−1)^a; (−1)^b]/√(2M) reaches M/2, so E* = M/2 there.
    """
    if activation != "sqr" or operands != 2 or train_ratio < 1.0 or not group.is_group:
        return None
    m = group.order
    # cyclic ⇔ some element has order M: walk powers of each element (O(M²), M is small)
    table = group.table
    e = next((a for a in range(m) if np.array_equal(table[a], np.arange(m))), None)
    if e is None:
        return None
    for g in range(m):
        x, n = g, 1
        while x != e:
            x, n = int(table[x, g]), n + 1
        if n == m:
            return m / 4.0 if m % 2 else m / 2.0
    return None


def energy_landscape(group, train_ratio: float, activation: str = "sqr", restarts: int = 64, seed: int = 0,
                     operands: int = 2, tol: float = 1e-6, max_iter: int = 5000, radius: float = 1.0,
                     irrep_threshold: float = 0.9, memo_threshold: float = 2.0, components=None,
                     return_maxima: bool = False, centring: str = DEFAULT_CENTRING) -> dict:
    """Find maxima of E by ascent from `restarts` random starts on the training rows
    split(N, train_ratio, seed) and classify them. Returns a JSON-ready dict.
    E uses Ỹ centred by `centring` ("samples": the paper's P⊥₁Y, default; "classes": Y − 1/M).

    Keys: group, order, operands, activation, centring, train_ratio, n_train, restarts, iterations (max over
    restarts), converged (count), max_energy, mean_energy, predicted_max_energy, irrep_fraction,
    memorization_fraction, other_fraction, component_histogram (name → count among irrep-like maxima),
    component_names, and per maximum: energies, labels, dominant_fraction (smallest per-block fraction
    of the dominant component), activation_spread, spectra (R × C block-averaged fractions, or None);
    note (set for non-groups). Starts are seeded by seed + 1 (the split by seed).
    With return_maxima the maxima vectors are added as "maxima" (R × kM lists).
    """
    task = make_task(group, operands)
    train_idx, _ = split(task.num_samples, train_ratio, seed)
    inputs, labels = task.inputs[train_idx], task.labels[train_idx]
    note = None
    if components is None and group.is_group:
        components = isotypic_components(group)
    if not group.is_group:
        components = None
        note = "not a group: maxima are not classified by irreps (only memorisation vs other)"
    with few_threads(restarts * inputs.numel()):
        res = ascend_energy(inputs, labels, group.order, activation, restarts, seed=seed + 1, radius=radius,
                            tol=tol, max_iter=max_iter, centring=centring)
        cls = classify_maxima(res.w, components, inputs, group.order, activation, irrep_threshold, memo_threshold)
    labs = cls["labels"]
    hist: dict[str, int] = {}
    if components is not None:
        for lab, d in zip(labs, cls["dominant"].tolist()):
            if lab == IRREP:
                name = components.names[d]
                hist[name] = hist.get(name, 0) + 1
    R = len(labs)
    out = {
        "group": group.name,
        "order": group.order,
        "operands": operands,
        "activation": activation,
        "centring": centring,
        "train_ratio": train_ratio,
        "n_train": int(labels.shape[0]),
        "restarts": R,
        "iterations": int(res.iterations.max()),
        "converged": int(res.converged.sum()),
        "max_energy": float(res.energy.max()),
        "mean_energy": float(res.energy.mean()),
        "predicted_max_energy": predicted_max_energy(group, train_ratio, activation, operands),
        "irrep_fraction": labs.count(IRREP) / R,
        "memorization_fraction": labs.count(MEMORIZATION) / R,
        "other_fraction": labs.count(OTHER) / R,
        "component_histogram": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        "component_names": list(components.names) if components is not None else None,
        "energies": res.energy.tolist(),
        "labels": labs,
        "dominant_fraction": [None if math.isnan(x) else x for x in cls["fraction"].tolist()],
        "activation_spread": cls["spread"].tolist(),
        "spectra": cls["spectrum"].tolist() if cls["spectrum"] is not None else None,
        "note": note,
    }
    if return_maxima:
        out["maxima"] = res.w.tolist()
    return out
