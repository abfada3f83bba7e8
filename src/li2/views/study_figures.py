"""Figures of studies: the energy landscape of a task (maxima of E) and the phase diagram p_c(M)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import save_figure
from ..task import REFERENCE_C
from ..theory.scaling import form_values
from .figures import plain_text, plt


def energy_figure(result: dict, path) -> None:
    """Two panels from an `energy_landscape` result: (left) maxima × components heat map of the
    block-averaged spectral fractions, rows sorted by energy (highest on top), with each row's label;
    (right) histogram of the maxima's energies with E* (predicted_max_energy) marked if known.
    Written atomically to `path` (PNG or SVG by its suffix)."""
    E = np.asarray(result["energies"])
    order = np.argsort(-E)
    spectra = result.get("spectra")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [1.4, 1]})
    ax = axes[0]
    if spectra is not None:
        S = np.asarray(spectra)[order]
        im = ax.imshow(S, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        names = result["component_names"]
        step = max(1, len(names) // 16)
        ax.set_xticks(range(0, len(names), step))
        ax.set_xticklabels(names[::step], rotation=60, fontsize=7)
        tags = [result["labels"][i][0].upper() for i in order]  # I / M / O per row
        step_r = max(1, len(tags) // 32)
        ax.set_yticks(range(0, len(tags), step_r))
        ax.set_yticklabels([f"{tags[i]} {E[order[i]]:.3g}" for i in range(0, len(tags), step_r)], fontsize=6)
        ax.set_xlabel("isotypic component")
        ax.set_ylabel("maximum (label, energy), sorted by E")
        fig.colorbar(im, ax=ax, label="fraction of ‖w‖² (block mean)")
    else:
        ax.text(0.5, 0.5, result.get("note") or "no spectra", ha="center", va="center", wrap=True)
        ax.set_axis_off()
    ax.set_title(f"{plain_text(result['group'])}  p={result['train_ratio']:g}  irrep {result['irrep_fraction']:.0%}")
    ax = axes[1]
    E_star = result.get("predicted_max_energy")
    # range padded by 5% of the scale, so energies equal to 1e-12 do not blow up into an offset axis
    lo, hi = float(E.min()), float(E.max())
    if E_star is not None:
        lo, hi = min(lo, E_star), max(hi, E_star)
    pad = 0.05 * max(hi - lo, abs(hi), 1e-12)
    ax.hist(E, bins=min(30, max(5, len(E) // 2)), range=(lo - pad, hi + pad), color="tab:blue", alpha=0.8)
    ax.ticklabel_format(axis="x", useOffset=False)
    if E_star is not None:
        ax.axvline(E_star, color="tab:red", ls="--", label=f"E* = {E_star:g} (theory)")
        ax.legend()
    ax.set_xlabel("energy E at maximum")
    ax.set_ylabel("count")
    ax.set_title(f"{result['restarts']} restarts, {result['n_train']} training samples")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def phase_figure(results: pd.DataFrame, analysis: dict, path_png: str | Path, path_svg: str | Path | None = None) -> None:
    """Left: mean test accuracy over (p, M), fitted and reference p_c curves. Right: p_c(M) with CIs.

    Uses a bare Figure, not pyplot, so no global figure state changes; files are written atomically.
    """
    from matplotlib import patheffects, ticker
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    def plain_log_ticks(axis):
        # 0.2 rather than 2×10⁻¹, and only 1-2-3-5 labelled: the ranges span about one decade
        def fmt(v, _pos):
            if v <= 0:
                return ""
            lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
            return f"{v:g}" if lead in (1, 2, 3, 5) else ""

        axis.set_major_formatter(ticker.FuncFormatter(fmt))
        axis.set_minor_formatter(ticker.FuncFormatter(fmt))

    acc = pd.to_numeric(results["final_test_acc"], errors="coerce")
    df = results.loc[acc.notna()].assign(final_test_acc=acc[acc.notna()])
    cell = df.groupby(["order", "train_ratio"])["final_test_acc"].mean()
    orders = sorted(int(o) for o in cell.index.get_level_values(0).unique())
    ref_c = analysis.get("reference_c", REFERENCE_C)
    c = analysis.get("c")

    def edges(v: np.ndarray, log: bool) -> np.ndarray:
        # cell boundaries halfway between neighbours (geometric for p), so irregular grids tile
        w = np.log(v) if log else v.astype(float)
        if len(w) == 1:
            e = np.array([w[0] - 0.1, w[0] + 0.1]) if log else np.array([w[0] - 5, w[0] + 5])
        else:
            mid = (w[1:] + w[:-1]) / 2
            e = np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])
        return np.exp(e) if log else e

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_h, ax_p = fig.subplots(1, 2)

    # Left: one rectangle per (M, p) cell; each M row has its own p edges.
    y_edges = edges(np.array(orders), log=False)
    polys, vals = [], []
    for i, o in enumerate(orders):
        row = cell.loc[o]
        ps = row.index.to_numpy(float)
        xe = edges(ps, log=True)
        for j, v in enumerate(row.to_numpy(float)):
            x0, x1, y0, y1 = xe[j], xe[j + 1], y_edges[i], y_edges[i + 1]
            polys.append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            vals.append(v)
    coll = PolyCollection(polys, array=np.array(vals), cmap="viridis", edgecolors="face")
    coll.set_clim(0.0, 1.0)
    ax_h.add_collection(coll)
    ax_h.set_xscale("log")
    xs = [pt[0] for poly in polys for pt in poly]
    ax_h.set_xlim(min(xs), max(xs))
    ax_h.set_ylim(y_edges[0], y_edges[-1])
    mm = np.linspace(y_edges[0], y_edges[-1], 200)
    mm = mm[mm > 1]
    halo = [patheffects.withStroke(linewidth=3.5, foreground="w")]  # readable over dark and bright cells
    ax_h.plot(ref_c * np.log(mm) / mm, mm, "k--", lw=1.5, path_effects=halo, label=f"reference c = {ref_c:g}")
    if c is not None:
        ax_h.plot(c * np.log(mm) / mm, mm, "r-", lw=1.5, path_effects=halo, label=f"fit c = {c:.3g}")
    est = [(v["estimate"], int(o)) for o, v in analysis["pc"].items() if v["estimate"] is not None]
    if est:
        ax_h.plot(*zip(*est), "wo", ms=5, mec="k", label="p_c(M)")
    fig.colorbar(coll, ax=ax_h, label="mean final test accuracy")
    ax_h.set_xlabel("train ratio p")
    ax_h.set_ylabel("group order M")
    ax_h.set_yticks(orders)
    plain_log_ticks(ax_h.xaxis)
    # below the axes: every corner of the map can hold data
    ax_h.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8)
    ax_h.set_title("test accuracy over (M, p)")

    # Right: p_c with CIs; unbracketed M's as open triangles at the grid edge they lie beyond.
    for o_str, v in analysis["pc"].items():
        o = int(o_str)
        if v["estimate"] is not None:
            lo, hi = v["ci"] if v["ci"] else (v["estimate"], v["estimate"])
            ax_p.errorbar([o], [v["estimate"]], yerr=[[v["estimate"] - lo], [hi - v["estimate"]]],
                          fmt="o", color="C0", capsize=3)
        elif v["ratios"]:
            below = v["reason"] in ("all_success", "below_grid")
            edge = v["ratios"][0] if below else v["ratios"][-1]
            ax_p.plot([o], [edge], "v" if below else "^", mfc="none", color="C3", ms=9)
    ax_p.plot([], [], "o", color="C0", label="p_c (95% profile-likelihood CI)")
    ax_p.plot([], [], "v", mfc="none", color="C3", label="unbracketed: p_c below ▽ / above △ this grid edge")
    mm = np.geomspace(min(orders) * 0.9, max(orders) * 1.1, 200)
    ax_p.plot(mm, ref_c * np.log(mm) / mm, "k--", label=f"reference {ref_c:g}·ln M/M")
    if c is not None:
        ax_p.plot(mm, c * np.log(mm) / mm, "r-", label=f"fit {c:.3g}·ln M/M (weighted; least-squares R²={analysis['r2']:.3f})")
        pref = analysis.get("preferred")
        if pref and pref != "c*ln(M)/M":
            alt = analysis["alternatives"][pref]
            ax_p.plot(mm, form_values(pref, alt["params"], mm), "g:", label=f"{pref} (R²={alt['r2']:.3f})")
    ax_p.set_xscale("log")
    ax_p.set_yscale("log")
    plain_log_ticks(ax_p.xaxis)
    plain_log_ticks(ax_p.yaxis)
    ax_p.set_xlabel("group order M")
    ax_p.set_ylabel("critical ratio p_c")
    ax_p.legend(fontsize=8)
    ax_p.set_title(f"p_c(M), success = test acc ≥ {analysis.get('success_threshold', 0.95):g}")

    save_figure(fig, path_png)
    if path_svg is not None:
        save_figure(fig, path_svg)
