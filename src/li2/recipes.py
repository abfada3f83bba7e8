"""Recipes: one command per experiment of SPEC §7, each judged against the paper's claim.

`reproduce(name, out_dir, quick=True)` runs one recipe (or `all`, one sub-folder per recipe) and
writes into out_dir: figures (PNG and SVG), tables (Parquet), and findings.json:

    {"recipe", "claim", "expected" (the paper's / SPEC's numbers, where there are any), "measured",
     "headline" (one line), "verdict": "supports" | "contradicts" | "inconclusive", "verdict_parts",
     "reasons" (how the rule applied to the numbers), "rule" (the rule, in words), "setup", "size",
     "wall_seconds"}

Each recipe lives in its own module `li2.recipe_<name>` (`recipe_<name>(ctx) -> findings`), next to a
pure `verdict_<name>(measured) -> (verdict, parts, reasons)` whose rule is fixed in code and stated in
findings.json ("rule"); the phase recipe is `li2.recipe_phase.reproduce_phase`. A claim that does not
reproduce at our settings is a finding, reported as "contradicts" (with the settings), not hidden.

Sizes: "quick" (`--quick`; `reproduce all --quick` fits in ≈10 min on 2 CPU cores), "full" (more
seeds, longer budgets, larger grids; prints its estimate first), and "smoke" (tiny, seconds; for the
tests — the same code paths and findings structure, meaningless numbers).

Multi-run recipes train through `li2.sweep` (one run folder per configuration, resumable, parallel
over the machine's cores); rerunning a recipe into the same folder resumes it.

Recipe settings, the probes that chose them, and the quick sizes' wall times are documented in each
`recipe_<name>` function.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .store import StoreError, read_json, read_parquet, save_figure, write_json, write_parquet
from .task import REFERENCE_C, critical_ratio

RECIPES = ("dynamics", "energy", "phase", "muon", "multilayer", "hyperparams", "ungrokking", "nonabelian")
SIZES = ("smoke", "quick", "full")
VERDICTS = ("supports", "contradicts", "inconclusive")


@dataclass
class Ctx:
    """What every recipe gets: its folder, its size, a logger and the number of parallel workers."""

    out: Path
    size: str
    log: Callable[[str], None]
    workers: int
    in_all: bool = False

    def pick(self, smoke, quick, full):
        return {"smoke": smoke, "quick": quick, "full": full}[self.size]


# -- small statistics ------------------------------------------------------------------------------------

def mean_ci(values, level: float = 0.95) -> dict:
    """{"n", "mean", "std" (ddof 1), "ci": [lo, hi]} with a Student-t interval (None when n < 2)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci": None}
    from scipy import stats
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci": [mean - half, mean + half]}


def welch_diff(a, b, level: float = 0.95) -> dict:
    """Mean of a − mean of b with a Welch 95% interval ({"diff", "ci"}; ci None when either n < 2).
    When both samples have zero spread the interval is the point itself."""
    a = np.asarray([v for v in a if v is not None and np.isfinite(v)], dtype=float)
    b = np.asarray([v for v in b if v is not None and np.isfinite(v)], dtype=float)
    if len(a) == 0 or len(b) == 0:
        return {"diff": None, "ci": None}
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": d, "ci": None}
    from scipy import stats
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": d, "ci": [d, d]}
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return {"diff": d, "ci": [d - half, d + half]}


def spearman(x, y) -> float | None:
    """Spearman rank correlation (None with fewer than 3 points or a constant axis)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    from scipy import stats
    return float(stats.spearmanr(x, y).statistic)


def combine(parts: dict[str, str]) -> str:
    """Overall verdict of several parts: contradicts if any part does, supports if all do, else inconclusive."""
    values = list(parts.values())
    if any(v == "contradicts" for v in values):
        return "contradicts"
    if values and all(v == "supports" for v in values):
        return "supports"
    return "inconclusive"


def _clean(obj):
    """JSON-safe copy: numpy scalars → Python, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


# -- figures -----------------------------------------------------------------------------------------------

def save_both(fig, folder: Path, stem: str) -> list[str]:
    """Write fig as stem.png and stem.svg (atomically) and close it."""
    import matplotlib.pyplot as plt
    save_figure(fig, folder / f"{stem}.png")
    save_figure(fig, folder / f"{stem}.svg")
    plt.close(fig)
    return [f"{stem}.png", f"{stem}.svg"]


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# -- training many runs -------------------------------------------------------------------------------------

def final_row(metrics: pd.DataFrame) -> dict:
    m = metrics.sort_values("step")
    return m.iloc[-1].to_dict() if len(m) else {}


def run_record(folder: Path) -> dict:
    """One finished run folder (single seed) → flat dict: summary fields, outcome, final diagnostics,
    peak test acc and the step of the peak."""
    summary = read_json(folder / "summary.json")["models"][0]
    metrics = read_parquet(folder / "metrics.parquet")
    last = final_row(metrics)
    rec = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    rec.update({f"stage_{k}": v for k, v in (summary.get("stages") or {}).items()})
    for col in ("coverage", "n_active", "mean_dominant_fraction", "diversity", "w_drift", "grad_norm"):
        if col in last:
            rec[f"final_{col}"] = last[col]
    if len(metrics):
        i = metrics["test_acc"].idxmax()
        rec["peak_test_acc"] = float(metrics.loc[i, "test_acc"])
        rec["peak_step"] = int(metrics.loc[i, "step"])
    return rec


def train_grid(ctx: Ctx, folder: Path, base: dict, grid: dict, in_process: bool = False) -> pd.DataFrame:
    """Train every point of base × grid (a `li2.sweep` spec) into folder; one row per run.

    With several workers the runs go through `li2.sweep.run_sweep` (a process per core); with one
    worker (smoke size), or with in_process=True (runs of a second or two, cheaper than starting a worker
    pool), they train in this process into the same layout.
    Rows: every varied key (as given), the run id, and `run_record` of the run folder.
    """
    from .run import train
    from .sweep import SweepSpec, expand, run_sweep

    spec = SweepSpec.parse({"name": folder.name, "base": base, "grid": grid})
    runs = expand(spec)
    if ctx.workers > 1 and len(runs) > 1 and not in_process:
        done = [0]

        def tick(n):
            done[0] += n
            ctx.log(f"  {folder.name}: {done[0]}/{len(runs)} runs")
        run_sweep(spec, folder, workers=ctx.workers, progress=tick)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "sweep.yaml").exists():   # same layout as run_sweep, so either may resume the other
            from .store import write_text
            write_text(folder / "sweep.yaml", spec.to_yaml())
        import torch
        threads = torch.get_num_threads()   # the sweep's runs set threads: 1; give the process its own back
        try:
            for i, r in enumerate(runs):
                d = folder / "runs" / r.run_id
                if (d / "summary.json").exists():
                    continue
                train(r.config, d, resume=(d / "config.yaml").exists(), figures=False)
                ctx.log(f"  {folder.name}: {i + 1}/{len(runs)} runs")
        finally:
            torch.set_num_threads(threads)
    rows = []
    for r in runs:
        d = folder / "runs" / r.run_id
        try:
            rec = run_record(d)
        except (StoreError, KeyError, IndexError, TypeError):
            rec = {"status": "failed"}
        cfg = r.config.model_dump(mode="json")
        point = {k: (cfg["seeds"][0] if k == "seed" else cfg.get(k)) for k in grid}
        if "train_ratio" in point:
            point["train_ratio"] = r.ratio
        rows.append({**point, "order": r.order, "run_id": r.run_id, **rec})
    return pd.DataFrame(rows)


def announce_estimate(ctx: Ctx, what: str, seconds: float) -> None:
    """Full size: say what is about to run and roughly how long (measured on 2 contended cores)."""
    if ctx.size == "full":
        ctx.log(f"{what}: estimated {seconds / 60:.0f} min on 2 CPU cores (quick version: --quick)")


# ===========================================================================================================
# phase transition (SPEC §7.2) — li2.recipe_phase
# ===========================================================================================================

# `reproduce all --quick` cannot afford recipe_phase's quick grid (165 runs, ≈15 min alone), so inside
# `all` (and for smoke) the same analysis runs on a reduced grid built from recipe_phase's own pieces.
PHASE_REDUCED = {
    "smoke": {"orders": (7, 11, 13), "multiples": (0.5, 1.0, 2.0), "seeds": 1, "training": {"width": 32, "steps": 60}},
    "quick": {"orders": (23, 31, 41, 53), "multiples": (0.5, 0.8, 0.9, 1.0, 1.12, 1.26, 2.0), "seeds": 2,
              "training": {}},
}


def recipe_phase(ctx: Ctx) -> dict:
    """The sample-size phase transition: `li2.recipe_phase.reproduce_phase` (quick: 165 runs; full: its
    full grid with a cost estimate). In `reproduce all --quick` and at smoke size: a reduced grid
    (PHASE_REDUCED: 4 orders × 7 ratios × 2 seeds = 56 runs, ≈ 1 min), analysed and judged by
    recipe_phase's own rule. recipe_phase has no size parameter; when it gains one, pass it instead."""
    from . import recipe_phase as rp

    reduced = ctx.size == "smoke" or (ctx.in_all and ctx.size == "quick")
    if not reduced:
        f = rp.reproduce_phase(ctx.out, quick=ctx.size != "full", workers=ctx.workers, log=ctx.log)
        f.setdefault("headline", _phase_headline(f))
        return f
    red = PHASE_REDUCED[ctx.size]
    from .phase import analyse_phase
    from .sweep import SweepSpec, run_sweep
    training = {**rp.TRAINING, **red["training"]}
    spec = SweepSpec.parse({"name": f"phase-{ctx.size}-reduced", "base": training,
                            "grid": {"group": [f"Z{m}" for m in red["orders"]],
                                     "train_ratio": {"critical_multiple": list(red["multiples"])},
                                     "seed": {"range": [0, red["seeds"]]}}})
    ctx.log(f"phase: reduced grid, {len(red['orders']) * len(red['multiples']) * red['seeds']} runs")
    t0 = time.perf_counter()
    results = run_sweep(spec, ctx.out, workers=ctx.workers)
    wall = time.perf_counter() - t0
    analysis = analyse_phase(results, success_threshold=rp.SUCCESS_THRESHOLD)
    write_json(ctx.out / "phase.json", analysis)
    write_parquet(ctx.out / "pc.parquet", rp.pc_table(analysis))
    write_parquet(ctx.out / "fits.parquet", rp.fits_table(analysis))
    rp.write_phase_figure(results, analysis, ctx.out / "phase.png", ctx.out / "phase.svg")
    verdict, parts, reasons = rp.verdict_rule(analysis)
    f = {"claim": rp.CLAIM,
         "expected": {"c": REFERENCE_C, "form": "c*ln(M)/M", "c_band": list(rp.C_BAND),
                      "pc_reference": {str(m): critical_ratio(m) for m in red["orders"]}},
         "measured": {"c": analysis.get("c"), "c_ci": analysis.get("c_ci"), "r2": analysis.get("r2"),
                      "preferred": analysis.get("preferred"), "bracketed_orders": analysis.get("bracketed_orders"),
                      "unbracketed_orders": analysis.get("unbracketed_orders"),
                      "pc": {o: {"estimate": v.get("estimate"), "ci": v.get("ci"), "reason": v.get("reason")}
                             for o, v in analysis["pc"].items()},
                      "runs": int(len(results)), "failed_runs": int((results["status"] == "failed").sum()),
                      "sweep_wall_seconds": round(wall, 1)},
         "setup": {"reduced_grid": True, "why": "reproduce all --quick budget; `li2 reproduce phase --quick` runs "
                                               "recipe_phase's quick grid (165 runs)",
                   "orders": list(red["orders"]), "ratio_multiples_of_pref": list(red["multiples"]),
                   "seeds": red["seeds"], "training": training},
         "verdict": verdict, "verdict_parts": parts, "reasons": reasons, "rule": rp.RULE}
    f["headline"] = _phase_headline(f)
    return f


def _phase_headline(f: dict) -> str:
    m = f.get("measured") or {}
    c, ci = m.get("c"), m.get("c_ci")
    if c is None:
        return f"p_c bracketed for {len(m.get('bracketed_orders') or [])} orders; no fit of c"
    ci_txt = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"fit p_c = c·ln M/M gives c = {c:.2f}{ci_txt} (reference 2.7482), R² = {m.get('r2') or float('nan'):.2f}"


# ===========================================================================================================
# running recipes
# ===========================================================================================================

def runner(name: str) -> Callable[[Ctx], dict]:
    """The function behind a recipe name (each recipe lives in li2.recipe_<name>, imported when used)."""
    if name == "phase":
        return recipe_phase
    import importlib
    return getattr(importlib.import_module(f".recipe_{name}", __package__), f"recipe_{name}")

# Rough wall time of the full sizes on 2 busy CPU cores (minutes), printed before a full run starts.
FULL_MINUTES = {"dynamics": 8, "energy": 5, "phase": 60, "muon": 25, "multilayer": 4, "hyperparams": 30,
                "ungrokking": 10, "nonabelian": 10}


def _quiet(_msg: str) -> None:
    pass


def claim_folder(out: Path, name: str, size: str) -> None:
    """Make `out` this recipe's folder: empty or new (then marked with recipe.json), or already marked
    for the same recipe and size (a rerun resumes). Anything else is refused before a byte is written."""
    marker = out / "recipe.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if name == "phase":   # a sweep folder: run_sweep's own sweep.yaml marks it (and must be alone there)
        if out.exists() and any(out.iterdir()) and not (out / "sweep.yaml").exists():
            raise ValueError(f"--out {out} is not empty and holds no phase sweep; choose an empty or new folder")
        return
    if out.exists() and any(out.iterdir()):
        try:
            mine = read_json(marker)
        except StoreError:
            mine = None
        if mine != {"recipe": name, "size": size}:
            raise ValueError(f"--out {out} is not empty and holds no '{name}' recipe of size {size}; "
                             f"choose an empty or new folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"recipe": name, "size": size})


def run_recipe(name: str, out: Path, size: str, log: Callable[[str], None], workers: int,
               in_all: bool = False) -> dict:
    """Run one recipe into `out` and write its findings.json (with recipe, size and wall_seconds)."""
    import torch

    claim_folder(out, name, size)
    ctx = Ctx(out, size, log, workers, in_all)
    log(f"{name}: starting ({size})")
    t0 = time.perf_counter()
    # One torch thread in this process: the multi-run recipes already use a worker per core, and on a
    # shared 2-core machine two intra-op threads wait on each other (measured: the dynamics run took
    # 132 s with 2 threads and 14 s with 1 while another process kept the cores busy).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        findings = runner(name)(ctx)
    finally:
        torch.set_num_threads(threads)
    wall = round(time.perf_counter() - t0, 1)
    findings = _clean({"recipe": name, **findings, "size": size, "wall_seconds": wall})
    if findings.get("verdict") not in VERDICTS:
        findings["verdict"] = "inconclusive"
    write_json(out / "findings.json", findings)
    log(f"{name}: {findings['verdict']} ({wall:.0f} s) — {findings.get('headline', '')}")
    return findings


def reproduce(name: str, out_dir: str | Path, quick: bool = True, progress: Callable[[str], None] | None = None,
              size: str | None = None, workers: int | None = None) -> dict:
    """Run recipe `name` (or "all") into out_dir and return its findings (also written as findings.json).

    quick: the small version (ignored when `size` is given: "smoke", "quick" or "full").
    progress: called with one line of text per step (recipe started, runs finished, verdict).
    workers: parallel training processes for multi-run recipes (default: the machine's cores; smoke: 1).
    """
    size = size or ("quick" if quick else "full")
    if size not in SIZES:
        raise ValueError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    if name not in RECIPES and name != "all":
        raise ValueError(f"unknown recipe '{name}': choose one of {', '.join(RECIPES)}, all")
    out = Path(out_dir)
    claim_folder(out, name, size)
    log = progress or _quiet
    workers = workers or (1 if size == "smoke" else max(1, os.cpu_count() or 1))
    names = list(RECIPES) if name == "all" else [name]
    if size == "full":
        minutes = sum(FULL_MINUTES[n] for n in names)
        log(f"full size: {', '.join(names)} — estimated {minutes} min on 2 busy CPU cores "
            f"({minutes / 60:.1f} h); the quick version is --quick")
    if name != "all":
        return run_recipe(name, out, size, log, workers)   # claim_folder again: a no-op now
    t0 = time.perf_counter()
    results = {}
    for n in names:
        results[n] = run_recipe(n, out / n, size, log, workers, in_all=True)
    wall = round(time.perf_counter() - t0, 1)
    table = pd.DataFrame([{"recipe": n, "verdict": f["verdict"], "headline": f.get("headline"),
                           "wall_seconds": f["wall_seconds"]} for n, f in results.items()])
    write_parquet(out / "verdicts.parquet", table)
    counts = {v: int((table.verdict == v).sum()) for v in VERDICTS}
    findings = _clean({"recipe": "all", "size": size, "wall_seconds": wall, "verdict_counts": counts,
                       "headline": ", ".join(f"{k} {v}" for k, v in counts.items()),
                       "recipes": {n: {"verdict": f["verdict"], "headline": f.get("headline"),
                                       "wall_seconds": f["wall_seconds"], "folder": n} for n, f in results.items()}})
    write_json(out / "findings.json", findings)
    return findings
