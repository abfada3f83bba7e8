"""Recipes: one command per experiment of the paper, each judged against the paper's claim.

`reproduce(name, out_dir, size="quick")` runs one recipe (or `all`, one sub-folder per recipe) and
writes into out_dir: figures (PNG and SVG), tables (Parquet), and findings.json with every key of
li2.recipes.common.FINDINGS_KEYS (claim, paper_setting, setting, deviations, measured, rule, verdict,
verdict_parts, reasons, headline) plus "recipe", "size" and "wall_seconds". A recipe whose findings
lack one of those keys is an error (`ContractError`), never a findings.json with holes.
`plan(name, size)` says what a size would train — settings, deviations, runs, estimated core-hours —
without training anything (`li2 reproduce NAME --dry-run`).

Each recipe is a module of this package with the interface of li2.recipes.common (CLAIM, RULE,
verdict, plan, run), registered below by a plain import. A claim that does not reproduce at our
settings is a finding, reported as "contradicts" (with the settings), not hidden.

Sizes: "quick" (`--quick`; `reproduce all --quick` fits in ≈15 min on 2 CPU cores), "full" (the
paper's settings; prints its plan's core-hours first), and "smoke" (tiny, seconds; for the tests —
the same code paths and findings structure, meaningless numbers).

Recipes being rewritten elsewhere (CONTRACT_PENDING) may still lack `plan` and the setting keys:
their dry run says "plan not available", and the keys they miss are listed in findings.json under
"contract_missing" instead of failing. Every other recipe must honour the whole contract (a test
checks it); removing a name from CONTRACT_PENDING is all it takes to hold it to the contract too.

Multi-run recipes train through li2.studies (one run folder per configuration, resumable, parallel
over the machine's cores); rerunning a recipe into the same folder resumes it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

import pandas as pd
import torch

from ..store import StoreError, jsonable, read_json, write_json, write_parquet
from .common import FINDINGS_KEYS, PLAN_KEYS, VERDICTS, Findings, Plan, RecipeContext
from .pool import RunPool

# The recipe modules, by plain import (absolute: `from . import x` would name this package's face,
# which re-exports this registry).
import li2.recipes.architectures as architectures  # noqa: E402  isort: skip
import li2.recipes.dynamics as dynamics  # noqa: E402  isort: skip
import li2.recipes.energy as energy  # noqa: E402  isort: skip
import li2.recipes.learning_rate as learning_rate  # noqa: E402  isort: skip
import li2.recipes.memorization as memorization  # noqa: E402  isort: skip
import li2.recipes.multilayer as multilayer  # noqa: E402  isort: skip
import li2.recipes.muon as muon  # noqa: E402  isort: skip
import li2.recipes.nonabelian as nonabelian  # noqa: E402  isort: skip
import li2.recipes.phase as phase  # noqa: E402  isort: skip
import li2.recipes.ridge_top as ridge_top  # noqa: E402  isort: skip
import li2.recipes.ungrokking as ungrokking  # noqa: E402  isort: skip
import li2.recipes.width as width  # noqa: E402  isort: skip
import li2.recipes.zero_init as zero_init  # noqa: E402  isort: skip

MODULES: dict[str, ModuleType] = {
    "dynamics": dynamics, "energy": energy, "phase": phase, "muon": muon, "learning-rate": learning_rate,
    "zero-init": zero_init, "multilayer": multilayer, "ridge-top": ridge_top, "width": width,
    "memorization": memorization, "nonabelian": nonabelian, "ungrokking": ungrokking, "architectures": architectures}
RECIPES = tuple(MODULES)            # `reproduce all` runs these, in this order
SIZES = ("smoke", "quick", "full")
# Being rewritten on other branches: may lack `plan` and the setting keys until they land.
CONTRACT_PENDING: frozenset[str] = frozenset()


class ContractError(RuntimeError):
    """A recipe broke the recipe contract (a findings key or plan key missing): a bug, not a user error."""


def _quiet(_msg: str) -> None:
    pass


def has_plan(name: str) -> bool:
    return callable(getattr(MODULES[name], "plan", None))


def plan(name: str, size: str, in_all: bool = False) -> Plan | None:
    """What recipe `name` would train at `size` (PLAN_KEYS); None for a CONTRACT_PENDING recipe without one.
    in_all: its share of `reproduce all` (some recipes shrink there)."""
    _check_name(name, size)
    if not has_plan(name):
        if name in CONTRACT_PENDING:
            return None
        raise ContractError(f"recipe '{name}' has no plan(size)")
    p = MODULES[name].plan(size, in_all=in_all)
    missing = [k for k in PLAN_KEYS if k not in p]
    if missing:
        raise ContractError(f"recipe '{name}': plan lacks {', '.join(missing)}")
    return p


def check_findings(name: str, findings: Findings) -> list[str]:
    """The FINDINGS_KEYS a recipe's findings lack. Raises ContractError unless the recipe is CONTRACT_PENDING."""
    missing = [k for k in FINDINGS_KEYS if k not in findings]
    if missing and name not in CONTRACT_PENDING:
        raise ContractError(f"recipe '{name}' wrote findings without {', '.join(missing)}")
    return missing


def claim_folder(out: Path, name: str, size: str) -> None:
    """Make `out` this recipe's folder: empty or new (then marked with recipe.json), or already marked
    for the same recipe and size (a rerun resumes). Anything else is refused before a byte is written."""
    marker = out / "recipe.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
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
               in_all: bool = False, pool: RunPool | None = None) -> Findings:
    """Run one recipe into `out` and write its findings.json (with recipe, size and wall_seconds).
    pool: training processes shared with other recipes (one is made, and closed, when None)."""
    claim_folder(out, name, size)
    own = pool is None
    ctx = RecipeContext(out, size, log, workers, in_all, pool or RunPool(workers))
    log(f"{name}: starting ({size})")
    t0 = time.perf_counter()
    # One torch thread in this process: the multi-run recipes already use a worker per core, and on a
    # shared 2-core machine two intra-op threads wait on each other (measured: the dynamics run took
    # 132 s with 2 threads and 14 s with 1 while another process kept the cores busy).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        findings = MODULES[name].run(ctx)
    finally:
        torch.set_num_threads(threads)
        if own:
            ctx.pool.close()
    wall = round(time.perf_counter() - t0, 1)
    missing = check_findings(name, findings)
    findings = jsonable({"recipe": name, **findings, "size": size, "wall_seconds": wall})
    if missing:
        findings["contract_missing"] = missing
    if findings.get("verdict") not in VERDICTS:
        findings["verdict"] = "inconclusive"
    write_json(out / "findings.json", findings)
    log(f"{name}: {findings['verdict']} ({wall:.0f} s) — {findings.get('headline', '')}")
    return findings


def _check_name(name: str, size: str) -> None:
    if size not in SIZES:
        raise ValueError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    if name not in RECIPES and name != "all":
        raise ValueError(f"unknown recipe '{name}': choose one of {', '.join(RECIPES)}, all")


def plans(name: str, size: str) -> dict[str, Plan | None]:
    """plan(n, size) for recipe `name` or for every recipe ("all")."""
    _check_name(name, size)
    if name == "all":
        return {n: plan(n, size, in_all=True) for n in RECIPES}
    return {name: plan(name, size)}


def reproduce(name: str, out_dir: str | Path, quick: bool = True, progress: Callable[[str], None] | None = None,
              size: str | None = None, workers: int | None = None) -> dict:
    """Run recipe `name` (or "all") into out_dir and return its findings (also written as findings.json).

    quick: the small version (ignored when `size` is given: "smoke", "quick" or "full").
    progress: called with one line of text per step (recipe started, runs finished, verdict).
    workers: parallel training processes for multi-run recipes (default: the machine's cores; smoke: 1).
    """
    size = size or ("quick" if quick else "full")
    _check_name(name, size)
    out = Path(out_dir)
    claim_folder(out, name, size)
    log = progress or _quiet
    workers = workers or (1 if size == "smoke" else max(1, os.cpu_count() or 1))
    names = list(RECIPES) if name == "all" else [name]
    if size == "full":
        ps = {n: plan(n, size, in_all=name == "all") for n in names}
        hours = sum(p["core_hours"] for p in ps.values() if p)
        unknown = [n for n, p in ps.items() if p is None]
        log(f"full size (the paper's settings): {', '.join(names)} — estimated {hours:.1f} core-hours "
            f"(≈ {hours / workers:.1f} h on {workers} cores)"
            + (f"; no estimate for {', '.join(unknown)}" if unknown else "") + "; the quick version is --quick")
    if name != "all":
        return run_recipe(name, out, size, log, workers)   # claim_folder again: a no-op now
    t0 = time.perf_counter()
    results = {}
    pool = RunPool(workers)
    try:
        for n in names:
            results[n] = run_recipe(n, out / n, size, log, workers, in_all=True, pool=pool)
    finally:
        pool.close()
    wall = round(time.perf_counter() - t0, 1)
    table = pd.DataFrame([{"recipe": n, "verdict": f["verdict"], "headline": f.get("headline"),
                           "wall_seconds": f["wall_seconds"]} for n, f in results.items()])
    write_parquet(out / "verdicts.parquet", table)
    counts = {v: int((table.verdict == v).sum()) for v in VERDICTS}
    findings = jsonable({"recipe": "all", "size": size, "wall_seconds": wall, "verdict_counts": counts,
                       "headline": ", ".join(f"{k} {v}" for k, v in counts.items()),
                       "recipes": {n: {"verdict": f["verdict"], "headline": f.get("headline"),
                                       "wall_seconds": f["wall_seconds"], "folder": n} for n, f in results.items()}})
    write_json(out / "findings.json", findings)
    return findings
