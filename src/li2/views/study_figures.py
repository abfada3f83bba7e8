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


def _plain_log_ticks(axis) -> None:
    """0.2 rather than 2×10⁻¹, and only 1-2-3-5 labelled: the ranges span about one decade."""
    from matplotlib import ticker

    def fmt(v, _pos):
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if lead in (1, 2, 3, 5) else ""

    axis.set_major_formatter(ticker.FuncFormatter(fmt))
    axis.set_minor_formatter(ticker.FuncFormatter(fmt))


# marker, colour and label of each run outcome (a sweep's rows have only success / failure)
OUTCOME_STYLE = {"grokked": ("o", "tab:green", "grokked"), "memorized": ("x", "tab:red", "memorised"),
                 "stalled": ("x", "tab:purple", "stalled"), "diverged": ("x", "k", "diverged"),
                 "undecided": ("^", "tab:orange", "undecided at the budget cap"),
                 "failed": ("s", "0.5", "failed to train"), "failure": ("x", "tab:red", "not generalised")}


def _outcomes(results: pd.DataFrame, threshold: float) -> pd.Series:
    if "outcome" in results:
        return results["outcome"].fillna("failed").astype(str)
    acc = pd.to_numeric(results["final_test_acc"], errors="coerce")
    return pd.Series(np.where(acc.isna(), "failed", np.where(acc >= threshold, "grokked", "failure")),
                     index=results.index)


def _runs_panel(ax, results: pd.DataFrame, analysis: dict) -> None:
    """Every run at (p, M) marked by its outcome; each M's p_c with its interval; the reference law."""
    from matplotlib import patheffects
    outcome = _outcomes(results, analysis.get("success_threshold", 0.95))
    rng = np.random.default_rng(0)   # a little vertical jitter so runs at one ratio stay visible
    for name, (marker, colour, label) in OUTCOME_STYLE.items():
        sel = (outcome == name).to_numpy()
        if sel.any():
            m = results["order"].to_numpy(float)[sel]
            ax.scatter(results["train_ratio"].to_numpy(float)[sel], m * np.exp(rng.uniform(-0.02, 0.02, m.size)),
                       marker=marker, color=colour, s=18, label=label, alpha=0.8)
    for o, v in analysis["pc"].items():
        if v.get("estimate") is not None and v.get("ci"):
            lo, hi = v["ci"]
            ax.errorbar([v["estimate"]], [int(o)], xerr=[[v["estimate"] - lo], [hi - v["estimate"]]], fmt="D",
                        color="tab:blue", ms=5, capsize=3, zorder=5)
    ax.errorbar([], [], xerr=[], fmt="D", color="tab:blue", label="p_c (95% CI)")
    orders = sorted(int(o) for o in analysis["pc"])
    mm = np.geomspace(min(orders) * 0.9, max(orders) * 1.1, 200)
    halo = [patheffects.withStroke(linewidth=3, foreground="w")]
    ref_c = analysis.get("reference_c", REFERENCE_C)
    ax.plot(ref_c * np.log(mm) / mm, mm, "k--", lw=1.2, path_effects=halo, label=f"reference c = {ref_c:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter
    ax.set_yticks(orders)
    ax.set_yticklabels([str(o) for o in orders])
    ax.yaxis.set_minor_formatter(NullFormatter())
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel("train ratio p")
    ax.set_ylabel("group order M")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7)
    ax.set_title("runs over (p, M)")


def _law_curves(analysis: dict) -> list[tuple[str, dict, str]]:
    """(form, params, label) of every fitted law: the likelihood fits when present, else least squares."""
    law = analysis.get("law")
    if law:
        return [(n, f["params"], f"{n}: Δ{law['criterion'].upper()} {f['delta']:.1f}, {f['status']}"
                 + (f", b = {f['params']['b']:.2f}" if "b" in f["params"] else ""))
                for n, f in law["forms"].items()]
    return [(n, f["params"], f"{n} (least squares, R² = {f['r2']:.3f})")
            for n, f in (analysis.get("alternatives") or {}).items() if f.get("r2") is not None]


def _pc_panel(ax, analysis: dict) -> None:
    """p_c(M) with CIs on log-log axes, unbracketed M at the edge they lie beyond, every fitted law."""
    for o, v in analysis["pc"].items():
        if v.get("estimate") is not None:
            lo, hi = v["ci"] if v.get("ci") else (v["estimate"], v["estimate"])
            ax.errorbar([int(o)], [v["estimate"]], yerr=[[v["estimate"] - lo], [hi - v["estimate"]]], fmt="o",
                        color="k", capsize=3, zorder=5)
        elif v.get("ratios"):
            below = v.get("reason") in ("all_success", "below_grid")
            ax.plot([int(o)], [v["ratios"][0] if below else v["ratios"][-1]], "v" if below else "^", mfc="none",
                    color="C3", ms=9)
    ax.errorbar([], [], yerr=[], fmt="o", color="k", label="p_c (95% CI)")
    orders = [int(o) for o in analysis["pc"]]
    mm = np.geomspace(min(orders) * 0.9, max(orders) * 1.1, 200)
    ref_c = analysis.get("reference_c", REFERENCE_C)
    ax.plot(mm, ref_c * np.log(mm) / mm, "k--", lw=1, label=f"reference {ref_c:g}·ln M/M")
    for i, (name, params, label) in enumerate(_law_curves(analysis)):
        ax.plot(mm, form_values(name, params, mm), ls=("-", ":", "-.", (0, (5, 2)))[i % 4], color=f"C{i}",
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        _plain_log_ticks(axis)
    ax.set_xlabel("group order M")
    ax.set_ylabel("critical ratio p_c")
    ax.legend(fontsize=7)
    ax.set_title(f"p_c(M), success = test acc ≥ {analysis.get('success_threshold', 0.95):g}")


def _time_panel(ax, results: pd.DataFrame, analysis: dict, grok_time: dict) -> None:
    """Grok step against p/p_c − 1 per M (log-log) with the joint law A·M^α·(p/p_c − 1)^−ν: the fit with p_c
    free (its divergence points p_c*) when there is one, else the one at the search's p_c."""
    free = grok_time.get("critical_free")
    fit = free or (grok_time.get("joint") or {}).get("critical")
    pcs = ({int(o): v for o, v in free["params"]["pc_star"].items()} if free else
           {int(o): v["estimate"] for o, v in analysis["pc"].items() if v.get("estimate")})
    ok = results["order"].isin(list(pcs)) & pd.to_numeric(results["grok_step"], errors="coerce").notna()
    for i, (o, g) in enumerate(sorted(results[ok].groupby("order"), key=lambda kv: kv[0])):
        x = g["train_ratio"].to_numpy(float) / pcs[int(o)] - 1.0
        keep = x > 0
        ax.plot(x[keep], g["grok_step"].to_numpy(float)[keep], "o", color=f"C{i}", ms=4, label=f"M = {int(o)}")
        if fit and keep.any():
            xx = np.geomspace(max(x[keep].min(), 1e-3), x[keep].max(), 50)
            p = fit["params"]
            ax.plot(xx, p["A"] * int(o) ** p["alpha"] * xx ** -p["nu"], "-", color=f"C{i}", lw=1)
    if fit and fit["held_out"].get("median_factor"):
        star = "*" if free else ""
        ax.set_title(f"T ∝ (p/p_c{star} − 1)^−{fit['params']['nu']:.2f}; held-out error ×"
                     f"{fit['held_out']['median_factor']:.2f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("p/p_c* − 1 (p_c*: where T diverges)" if free else "p/p_c − 1")
    ax.set_ylabel("grok step T")
    ax.legend(fontsize=7, ncol=2)


def phase_figure(results: pd.DataFrame, analysis: dict, path_png: str | Path, path_svg: str | Path | None = None,
                 grok_time: dict | None = None) -> None:
    """Runs over (p, M), p_c(M) with CIs and every fitted law on log-log axes, and (given grok_time, from
    li2.studies.grok_time) the grokking time against p/p_c − 1. `results`: one row per run with order,
    train_ratio and an `outcome` (a search) or final_test_acc (a sweep); `analysis`: analyse_phase's dict.
    A bare Figure (no pyplot state); written atomically."""
    from matplotlib.figure import Figure
    panels = 3 if grok_time else 2
    fig = Figure(figsize=(6 * panels, 5.2), layout="constrained")
    axes = fig.subplots(1, panels)
    _runs_panel(axes[0], results, analysis)
    _pc_panel(axes[1], analysis)
    if grok_time:
        _time_panel(axes[2], results, analysis, grok_time)
    save_figure(fig, path_png)
    if path_svg is not None:
        save_figure(fig, path_svg)
