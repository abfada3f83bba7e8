"""Theorem 4 as stated: do the irrep maxima of the full-data energy survive on a random subsample?

Start at each irrep maximum of the full-data E (σ = x²), ascend the EMPIRICAL E of a p-subsample of
the M² pairs (li2.theory.landscape, sample-centred Ỹ by default — the paper's), and read where the
ascent ends. A maximum *stays* when the share of ‖w‖² in its own isotypic component is at least
STAY_SHARE in each operand block after the ascent; otherwise it has *moved away* (to a mixture or a
memorisation maximum). The theorem says this is the case with high probability once
n ≳ d_k²·M·log(M/δ), i.e. p ≳ d_k²·ln M / M, and gives no constant.

The starting maxima (`irrep_maxima`):
  * Z_M in li2's labelling (a∘b = a + b mod M): the closed form w = [u; v], u_a = cos(ωa + φ_u)/√M,
    v_b = cos(ωb + φ_v)/√M, ω = 2πk/M, random phases (k = M/2 of even M: u_a = (−1)^a/√(2M) — the
    phases only scale it), E* = M/4 (M/2 for k = M/2);
  * any other group: projected ascent of the full-data E from a random start inside the isotypic
    component (both operand blocks projected on it). It converges to E* = M/(2d_k) for a real irrep
    and M/(4d_k) for a complex pair, and stays in the component (checked in tests). The printed form
    [u; ±Pu] with u ∈ H_k is a maximum for d_k = 1 only for suitable u: a random u ∈ H_k with d_k > 1
    is not even stationary (measured: S4, d = 3, E = 1.9 against E* = 4), so the starts are found by
    ascent rather than written down.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..algebra.representations import isotypic_components
from ..task import DEFAULT_CENTRING, make_task, split
from .landscape import ascend_energy, energy_and_grad, few_threads, tangent
from .spectra import node_spectrum

STAY_SHARE = 0.9          # a maximum stays when ≥ 90% of each block's ‖·‖² remains in its component


def is_standard_cyclic(group) -> bool:
    """True when the table is addition mod M (li2's Z_M), where frequency k is a closed form."""
    m = group.order
    a = np.arange(m)
    return group.is_group and np.array_equal(group.table, (a[:, None] + a[None, :]) % m)


def energy_constants(order: int, degree: int, kind: str) -> dict:
    """E* of an irrep maximum, σ = x², full data: {"measured_formula", "printed"} (docs/theory.md (a)).

    measured: M/(2d) for a real irrep, M/(4d) for a complex pair (and quaternionic, measured the same);
    printed (Thm 2 / Cor 2): M/(8d) and M/(16d) — a quarter, from the dropped 2 of the cross term.
    """
    real = kind == "real"
    return {"measured_formula": order / ((2 if real else 4) * degree),
            "printed": order / ((8 if real else 16) * degree)}


def _cyclic_maxima(group, components, per_component: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, list[int]]:
    m = group.order
    a = torch.arange(m, dtype=torch.float64)
    P = torch.tensor(np.array(components.projectors))
    ws, comp = [], []
    for k in range(1, m // 2 + 1):
        for _ in range(per_component):
            ph = torch.rand(2, generator=gen, dtype=torch.float64) * 2 * math.pi
            if 2 * k == m:   # the real sign character: the phases would only rescale u and v unequally
                ph = torch.tensor([0.0, math.pi * float(torch.randint(2, (1,), generator=gen))], dtype=torch.float64)
            w = torch.cat([torch.cos(2 * math.pi * k * a / m + ph[0]), torch.cos(2 * math.pi * k * a / m + ph[1])])
            w = w / w.norm()
            ws.append(w)
            comp.append(int(torch.stack([(P[c] @ w[:m]).norm() for c in range(len(P))]).argmax()))
    return torch.stack(ws), comp


def _ascended_maxima(group, components, per_component: int, gen: torch.Generator,
                     task) -> tuple[torch.Tensor, list[int]]:
    m = group.order
    P = torch.tensor(np.array(components.projectors))
    starts, comp = [], []
    for c in range(1, len(P)):
        for _ in range(per_component):
            starts.append(torch.cat([P[c] @ torch.randn(m, generator=gen, dtype=torch.float64),
                                     P[c] @ torch.randn(m, generator=gen, dtype=torch.float64)]))
            comp.append(c)
    res = ascend_energy(task.inputs, task.labels, m, w0=torch.stack(starts), max_iter=20000, tol=1e-9)
    return res.w, comp


def irrep_maxima(group, per_component: int = 1, seed: int = 0, components=None) -> dict:
    """Maxima of the full-data E (σ = x², two operands), per_component of each non-trivial component.

    Returns {"w": (R, 2M) unit vectors, "component": (R,) component index, "energy": (R,),
    "rel_grad": (R,) ‖tangent ∇E‖/‖∇E‖ (≈ 0 at a stationary point), "share": (R,) smallest per-block
    share of ‖w‖² in its component, "components": the IsotypicComponents}.
    """
    comps = components if components is not None else isotypic_components(group)
    task = make_task(group, 2)
    gen = torch.Generator().manual_seed(int(seed))
    with few_threads(10**9):   # tiny problems: one thread
        if is_standard_cyclic(group):
            w, comp = _cyclic_maxima(group, comps, per_component, gen)
        else:
            w, comp = _ascended_maxima(group, comps, per_component, gen, task)
        E, g = energy_and_grad(w, task.inputs, task.labels, group.order)
        rel = tangent(w, g).norm(dim=-1) / g.norm(dim=-1).clamp_min(1e-300)
    comp_t = torch.tensor(comp)
    return {"w": w, "component": comp_t, "energy": E, "rel_grad": rel,
            "share": component_share(w, comps, comp_t), "components": comps}


def component_share(w: torch.Tensor, components, component: torch.Tensor) -> torch.Tensor:
    """Smallest per-block share of ‖w‖² in the given component: w (R, 2M), component (R,) → (R,)."""
    frac = node_spectrum(w.mT, components, operands=2)                  # (2, R, C)
    idx = component.view(1, -1, 1).expand(2, -1, 1)
    return frac.gather(-1, idx).squeeze(-1).min(0).values


def subsample_ascent(group, maxima: dict, ratio: float, split_seed: int, centring: str = DEFAULT_CENTRING,
                     max_iter: int = 3000) -> dict:
    """Ascend the empirical E of split(M², ratio, split_seed)'s training rows from every maximum.

    Returns {"share": (R,) share left in the starting component, "stayed": (R,) bool (share ≥ STAY_SHARE),
    "energy": (R,) empirical E at the end, "start_energy": (R,) empirical E at the start,
    "converged": (R,) bool, "n_train": int}.
    """
    task = make_task(group, 2)
    idx, _ = split(task.num_samples, ratio, split_seed)
    inputs, labels = task.inputs[idx], task.labels[idx]
    w0 = maxima["w"]
    E0, _ = energy_and_grad(w0, inputs, labels, group.order, need_grad=False, centring=centring)
    res = ascend_energy(inputs, labels, group.order, w0=w0, max_iter=max_iter, centring=centring)
    share = component_share(res.w, maxima["components"], maxima["component"])
    return {"share": share, "stayed": share >= STAY_SHARE, "energy": res.energy, "start_energy": E0,
            "converged": res.converged, "n_train": int(idx.numel())}
