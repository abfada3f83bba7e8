"""What every recipe shares: its context, its plan, small statistics over seeds, and training a grid of runs.

A recipe module (li2.recipes.<name>) exports
    CLAIM                       the paper's claim, in words (with the figure it comes from)
    RULE                        the verdict rule, in words, fixed before any data was seen
    verdict(measured)           → (verdict, parts, reasons): the rule applied to the numbers
    plan(size, in_all=False)    → Plan: what `run` would do at that size (runs, estimated core-hours,
                                  the paper's setting, li2's setting, each deviation) — for --dry-run;
                                  in_all: as part of `reproduce all` (ctx.in_all), where some shrink
    run(ctx: RecipeContext)     → Findings: trains/measures, writes figures and tables into ctx.out
and the registry (li2.recipes.registry) checks the findings against FINDINGS_KEYS and writes findings.json.

Findings carry (FINDINGS_KEYS): claim; paper_setting (what the paper states, PAPER.md; "not stated"
where it is silent); setting (what li2 ran); deviations (one `deviation(...)` per difference, with
its reason); measured (numbers with CIs over seeds); rule; verdict, verdict_parts, reasons; headline.
A verdict is "inconclusive" whenever the interval allows both answers.

A Plan (PLAN_KEYS) is {"runs": number of training runs, "core_hours": estimated CPU core-hours (an
upper bound: runs that stop early cost less), "paper_setting", "setting", "deviations"} — the same
three setting keys the findings carry, so `run` can put `plan(size)`'s into its findings. Recipes
build it with `make_plan` from the very configs `run` trains, so the two cannot drift apart.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from ..config import TrainConfig, resolve_group
from ..store import StoreError, read_json, read_parquet
from ..studies.spec import run_id
from .pool import RunPool

VERDICTS = ("supports", "contradicts", "inconclusive")
FINDINGS_KEYS = ("claim", "paper_setting", "setting", "deviations", "measured", "rule", "verdict",
                 "verdict_parts", "reasons", "headline")
PLAN_KEYS = ("runs", "core_hours", "paper_setting", "setting", "deviations")
DEVIATION_KEYS = ("what", "paper", "here", "why")
Findings = dict[str, Any]   # findings.json's content: FINDINGS_KEYS and more (figures, tables, notes)
Plan = dict[str, Any]       # PLAN_KEYS


def deviation(what: str, paper: Any, here: Any, why: str) -> dict:
    """One way li2's setting differs from the paper's, and why: {"what", "paper", "here", "why"}."""
    return {"what": what, "paper": paper, "here": here, "why": why}


def pick(size: str, smoke, quick, full):
    """The value for this size (plan(size) and run(ctx) choose their settings the same way)."""
    return {"smoke": smoke, "quick": quick, "full": full}[size]


# -- plans: what a size would train, and what it costs ----------------------------------------------------

# Seconds per training step on ONE CPU core (torch, float32), fitted on single-threaded timings of
# li2's trainer (see estimate_seconds): a fixed part per step, and parts proportional to the work.
STEP_FIXED_S = 5e-4          # Python and optimiser overhead of one step
SAMPLE_NODE_S = 1e-8         # per training sample × hidden node (gather, σ, F·V, backward)
LAYER_S = 9e-11              # per sample × K² of each extra residual layer (two (n,K)×(K,K) products)
RIDGE_S = 1.2e-10            # per n·K·min(n, K) of --top-layer ridge's Gram and Cholesky solve
MUON_S = 4e-10               # per 2M·K·min(2M, K) of Muon's five Newton–Schulz steps
TRANSFORMER_S = 1e-10        # per sample × (d² + 2·d·d_mlp + d·M) of the transformer (its W_O, MLP and unembedding;
                             # measured 20 ms per step at Z53, p = 0.5, d = 128, d_mlp = 512 on one core)
EVAL_FRACTION = 0.35         # an evaluation's forward pass over all M² samples, relative to a step's work
DIAGNOSTICS_FRACTION = 0.7   # --diagnostics basic at an evaluation, relative to a training step's work


def estimate_seconds(config: dict) -> float:
    """Estimated single-core seconds of one training run (the whole step budget, no early stop).

    t = steps·(STEP_FIXED_S + SAMPLE_NODE_S·n·K·(1 + c_layers + c_ridge + c_muon)) + evaluations·EVAL_FRACTION·…,
    n = training samples (p·M^k), K = width (the transformer: TRANSFORMER_S per sample and unit of its size);
    refitted whenever the engine's speed changes a lot (the estimate is for planning, never a result)."""
    cfg = TrainConfig(**{k: v for k, v in config.items() if k != "seed"})
    group = resolve_group(cfg)
    m, k = group.order, cfg.operands
    total = m ** k
    n = max(1, round(cfg.resolved_ratio(m) * total))
    K = cfg.width
    layers = cfg.layers if cfg.model == "mlp2" else (cfg.depth or 1) - 1
    per_sample = SAMPLE_NODE_S * K + LAYER_S * K * K * layers
    if cfg.model == "transformer":
        per_sample = TRANSFORMER_S * (cfg.d_model ** 2 + 2 * cfg.d_model * cfg.d_mlp + cfg.d_model * m)
    work = per_sample * n
    if cfg.top_layer == "ridge":
        work += RIDGE_S * n * K * min(n, K)
    if cfg.optimizer == "muon":
        work += MUON_S * k * m * K * min(k * m, K)
    evals = len(cfg.eval_steps())
    per_eval = EVAL_FRACTION * per_sample * total
    if cfg.diagnostics != "off":
        per_eval += DIAGNOSTICS_FRACTION * work
    return cfg.steps * (STEP_FIXED_S + work) + evals * per_eval


def make_plan(configs: list[dict], paper_setting: dict, setting: dict, deviations: list[dict],
              extra_core_seconds: float = 0.0) -> Plan:
    """A Plan from the training configs `run` would train (one dict per run, TrainConfig fields and `seed`)
    plus the core-seconds of any other work (energy ascents, closed forms), with the settings it records."""
    for d in deviations:
        if set(d) != set(DEVIATION_KEYS) or not str(d["why"]).strip():
            raise ValueError(f"a deviation needs {DEVIATION_KEYS} and a reason: {d}")
    seconds = sum(estimate_seconds(c) for c in configs) + extra_core_seconds
    return {"runs": len(configs), "core_hours": float(f"{seconds / 3600:.4g}"), "paper_setting": paper_setting,
            "setting": setting, "deviations": deviations}


def grid_configs(base: dict, grid: dict) -> list[dict]:
    """The cartesian product base × grid as plain config dicts (first key slowest), as `train_grid` trains it;
    a grid value {"range": [a, b]} stands for range(a, b) (seeds)."""
    keys = list(grid)
    values = [list(range(*v["range"])) if isinstance(v, dict) else list(v) for v in grid.values()]
    return [{**base, **dict(zip(keys, combo))} for combo in itertools.product(*values)]


def plan_setting(plan_: Plan) -> dict:
    """The three setting keys of a plan, for the findings of the run it describes."""
    return {k: plan_[k] for k in ("paper_setting", "setting", "deviations")}


@dataclass
class RecipeContext:
    """What every recipe gets: its folder, its size, a logger and the number of parallel workers."""

    out: Path
    size: str
    log: Callable[[str], None]
    workers: int
    in_all: bool = False
    pool: RunPool | None = None      # shared by every recipe of one reproduce call (made on first use)

    def pick(self, smoke, quick, full):
        return {"smoke": smoke, "quick": quick, "full": full}[self.size]

    def runner(self) -> RunPool:
        if self.pool is None:
            self.pool = RunPool(self.workers)
        return self.pool


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
    half = float(stats.t.ppf(0.5 + level / 2, dof) * se)
    return {"diff": d, "ci": [d - half, d + half]}


def paired_diff(a: dict, b: dict, level: float = 0.95) -> dict:
    """Mean of a[s] − b[s] over the keys (seeds) both have, with a Student-t interval on the differences:
    {"n", "diff", "ci"} (ci None when n < 2; the point itself when every difference is equal). Pairing by
    seed removes what the two arms share (init, split), so the interval is much narrower than Welch's."""
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None
            and np.isfinite(a[k]) and np.isfinite(b[k])]
    st = mean_ci([a[k] - b[k] for k in keys], level)
    if st["n"] >= 2 and st["std"] == 0:
        st["ci"] = [st["mean"], st["mean"]]
    return {"n": st["n"], "diff": st["mean"], "ci": st["ci"]}


def spearman(x, y) -> float | None:
    """Spearman rank correlation (None with fewer than 3 points or a constant axis)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def speedup(slow: list, fast: list, budget: int, level: float = 0.95) -> dict:
    """Paired per-seed ratio slow/fast of the steps to generalise (grok steps), geometric mean and a
    Student-t interval on the log ratios. A run that never generalised counts at `budget`, which makes
    its pair's ratio a bound: a lower bound when the slow run is censored, an upper one when the fast
    run is; pairs where both are censored carry no information and are dropped.
    Returns {"pairs", "ratios", "geomean", "ci", "censored_slow", "censored_fast", "lower_valid",
    "upper_valid"}: ci[0] is a valid lower bound only without censored fast runs (lower_valid), ci[1] a
    valid upper bound only without censored slow runs (upper_valid)."""
    logs, ratios, cs, cf = [], [], 0, 0
    for a, b in zip(slow, fast):
        a_none, b_none = a is None or not np.isfinite(a), b is None or not np.isfinite(b)
        if a_none and b_none:
            continue
        cs, cf = cs + a_none, cf + b_none
        r = (budget if a_none else max(float(a), 1.0)) / (budget if b_none else max(float(b), 1.0))
        ratios.append(r)
        logs.append(math.log(r))
    st = mean_ci(logs, level)
    return {"pairs": len(logs), "ratios": ratios,
            "geomean": math.exp(st["mean"]) if st["mean"] is not None else None,
            "ci": [math.exp(st["ci"][0]), math.exp(st["ci"][1])] if st["ci"] else None,
            "censored_slow": cs, "censored_fast": cf, "lower_valid": cf == 0, "upper_valid": cs == 0}


def paired_speedups(df: pd.DataFrame, by: list[str], arm: str, slow, fast, budget: int) -> dict[tuple, dict]:
    """Per group of `by` (e.g. group, train_ratio): `speedup` of arm == slow over arm == fast, runs paired by
    seed (grok_step, None when never). Keys are the tuples of `by` values."""
    out = {}
    for key, g in df.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        a = g[g[arm] == slow].set_index("seed").grok_step
        b = g[g[arm] == fast].set_index("seed").grok_step
        seeds = sorted(set(a.index) & set(b.index))
        val = lambda x: None if pd.isna(x) else float(x)
        out[key] = speedup([val(a[s_]) for s_ in seeds], [val(b[s_]) for s_ in seeds], budget)
    return out


def judge_speedup(sp: dict, want_faster: bool = True) -> str:
    """supports if the speed-up's CI lies above 1 (below 1 when want_faster is False) with a valid bound on
    that side; contradicts if it lies on the other side with a valid bound there; else inconclusive."""
    ci = sp.get("ci")
    if not ci:
        return "inconclusive"
    above = ci[0] > 1 and sp["lower_valid"]
    below = ci[1] < 1 and sp["upper_valid"]
    if above:
        return "supports" if want_faster else "contradicts"
    if below:
        return "contradicts" if want_faster else "supports"
    return "inconclusive"


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
    """One finished run folder (single seed) → flat dict: summary fields, outcome, final losses and
    diagnostics, the test loss at two thirds of the steps trained (a convergence check), peak test acc
    and the step of the peak."""
    summary = read_json(folder / "summary.json")["models"][0]
    metrics = read_parquet(folder / "metrics.parquet").sort_values("step")
    last = final_row(metrics)
    rec = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    rec.update({f"stage_{k}": v for k, v in (summary.get("stages") or {}).items()})
    for col in ("train_loss", "test_loss", "coverage", "n_active", "mean_dominant_fraction", "diversity", "w_drift",
                "grad_norm"):
        if col in last:
            rec[f"final_{col}"] = last[col]
    if len(metrics):
        upto = metrics[metrics.step <= (2 * int(metrics.step.iloc[-1])) // 3]
        rec["test_loss_at_two_thirds"] = float(upto.test_loss.iloc[-1]) if len(upto) else None
    if metrics["test_acc"].notna().any():
        i = metrics["test_acc"].idxmax()
        rec["peak_test_acc"] = float(metrics.loc[i, "test_acc"])
        rec["peak_step"] = int(metrics.loc[i, "step"])
    return rec


def _config_of(config: dict) -> TrainConfig:
    """A TrainConfig from a recipe's config dict (`seed` stands for seeds = [seed]); threads 1 unless set."""
    c = dict(config)
    if "seed" in c:
        c["seeds"] = [c.pop("seed")]
    c.setdefault("threads", 1)
    return TrainConfig(**c)


def train_runs(ctx: RecipeContext, folder: Path, configs: list[dict], in_process: bool = False) -> pd.DataFrame:
    """Train a list of configs (one seed each; any design, not only a grid) into folder/runs/<id>.

    <id> is li2.studies' run id (a hash of the resolved config), so the same config is trained once
    even when several designs of a recipe list it, and a rerun resumes. Runs go through ctx's pool
    (a process per core, started once per reproduce call); in_process=True trains them here (runs of
    a second or two). Rows: the config's own keys as given, train_ratio resolved, order, run_id, and
    `run_record` of the run folder (status "failed" and the error when training raised).
    """
    cfgs = [_config_of(c) for c in configs]
    ids = [run_id(c) for c in cfgs]
    dirs = {i: folder / "runs" / i for i in ids}
    todo, seen = [], set()
    for c, i in zip(cfgs, ids):
        if i not in seen and not (dirs[i] / "summary.json").exists():
            todo.append((c.model_dump(mode="json"), dirs[i]))
        seen.add(i)
    errors: dict[Path, str] = {}
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        count = [0]

        def tick(n: int) -> None:
            count[0] += n
            if count[0] == len(todo) or count[0] % max(1, len(todo) // 4) == 0:
                ctx.log(f"  {folder.name}: {count[0]}/{len(todo)} runs")
        for j, outcome in ctx.runner().train(todo, tick, in_process=in_process or ctx.workers == 1):
            if "error" in outcome:
                errors[todo[j][1]] = outcome["error"]
    rows = []
    for given, c, i in zip(configs, cfgs, ids):
        try:
            rec = run_record(dirs[i])
        except (StoreError, KeyError, IndexError, TypeError):
            rec = {"status": "failed", "error": errors.get(dirs[i], "no summary.json")}
        group = resolve_group(c)
        rows.append({**{k: v for k, v in given.items()}, "train_ratio": c.resolved_ratio(group.order),
                     "order": group.order, "run_id": i, **rec})
    return pd.DataFrame(rows)


def train_grid(ctx: RecipeContext, folder: Path, base: dict, grid: dict, in_process: bool = False) -> pd.DataFrame:
    """Train every point of base × grid (first key slowest) into folder, as `train_runs`; one row per run."""
    return train_runs(ctx, folder, grid_configs(base, grid), in_process=in_process)
