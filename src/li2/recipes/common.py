"""What every recipe shares: its context, small statistics over seeds, and training a grid of runs.

A recipe module (li2.recipes.<name>) exports
    CLAIM                       the paper's claim, in words (with the figure it comes from)
    RULE                        the verdict rule, in words, fixed before any data was seen
    verdict(measured)           → (verdict, parts, reasons): the rule applied to the numbers
    plan(size)                  → Plan: what `run` would do at that size (runs, estimated core-hours,
                                  the paper's setting, li2's setting, each deviation) — for --dry-run
    run(ctx: RecipeContext)     → Findings: trains/measures, writes figures and tables into ctx.out
and the registry (li2.recipes.registry) writes findings.json.

Findings carry (FINDINGS_KEYS): claim; paper_setting (what the paper states, PAPER.md; "not stated"
where it is silent); setting (what li2 ran); deviations (one `deviation(...)` per difference, with
its reason); measured (numbers with CIs over seeds); rule; verdict, verdict_parts, reasons; headline.
A verdict is "inconclusive" whenever the interval allows both answers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..runs.training import train
from ..store import StoreError, read_json, read_parquet, write_text
from ..studies.spec import SweepSpec, expand
from ..studies.sweep import run_sweep

VERDICTS = ("supports", "contradicts", "inconclusive")
FINDINGS_KEYS = ("claim", "paper_setting", "setting", "deviations", "measured", "rule", "verdict",
                 "verdict_parts", "reasons", "headline")
Findings = dict[str, Any]   # findings.json's content: FINDINGS_KEYS and more (figures, tables, notes)
Plan = dict[str, Any]       # {"runs", "core_hours", "paper_setting", "setting", "deviations"}


def deviation(what: str, paper: Any, here: Any, why: str) -> dict:
    """One way li2's setting differs from the paper's, and why: {"what", "paper", "here", "why"}."""
    return {"what": what, "paper": paper, "here": here, "why": why}


@dataclass
class RecipeContext:
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
    std = float(x.std(ddof=1))
    from scipy import stats  # heavy (≈0.5 s): only recipes that report intervals pay it
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
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": d, "ci": [d, d]}
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0))
    from scipy import stats
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


def train_grid(ctx: RecipeContext, folder: Path, base: dict, grid: dict, in_process: bool = False) -> pd.DataFrame:
    """Train every point of base × grid (a li2.studies sweep spec) into folder; one row per run.

    With several workers the runs go through `li2.studies.run_sweep` (a process per core); with one
    worker (smoke size), or with in_process=True (runs of a second or two, cheaper than starting a worker
    pool), they train in this process into the same layout.
    Rows: every varied key (as given), the run id, and `run_record` of the run folder.
    """
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
            write_text(folder / "sweep.yaml", spec.to_yaml())
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


def announce_estimate(ctx: RecipeContext, what: str, seconds: float) -> None:
    """Full size: say what is about to run and roughly how long (measured on 2 contended cores)."""
    if ctx.size == "full":
        ctx.log(f"{what}: estimated {seconds / 60:.0f} min on 2 CPU cores (quick version: --quick)")
