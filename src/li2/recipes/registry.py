"""Recipes: one command per experiment of the paper, each judged against the paper's claim.

`reproduce(name, out_dir, quick=True)` runs one recipe (or `all`, one sub-folder per recipe) and
writes into out_dir: figures (PNG and SVG), tables (Parquet), and findings.json:

    {"recipe", "claim", "expected" (the paper's / SPEC's numbers, where there are any), "measured",
     "headline" (one line), "verdict": "supports" | "contradicts" | "inconclusive", "verdict_parts",
     "reasons" (how the rule applied to the numbers), "rule" (the rule, in words), "setup", "size",
     "wall_seconds"}

Each recipe is a module of this package with the interface of li2.recipes.common (CLAIM, RULE,
verdict, run), registered below by a plain import. A claim that does not reproduce at our settings is
a finding, reported as "contradicts" (with the settings), not hidden.

Sizes: "quick" (`--quick`; `reproduce all --quick` fits in ≈10 min on 2 CPU cores), "full" (more
seeds, longer budgets, larger grids; prints its estimate first), and "smoke" (tiny, seconds; for the
tests — the same code paths and findings structure, meaningless numbers).

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
from .common import VERDICTS, Findings, RecipeContext

# The recipe modules, by plain import (absolute: `from . import x` would name this package's face,
# which re-exports this registry).
import li2.recipes.dynamics as dynamics  # noqa: E402  isort: skip
import li2.recipes.energy as energy  # noqa: E402  isort: skip
import li2.recipes.hyperparams as hyperparams  # noqa: E402  isort: skip
import li2.recipes.multilayer as multilayer  # noqa: E402  isort: skip
import li2.recipes.muon as muon  # noqa: E402  isort: skip
import li2.recipes.nonabelian as nonabelian  # noqa: E402  isort: skip
import li2.recipes.phase as phase  # noqa: E402  isort: skip
import li2.recipes.ungrokking as ungrokking  # noqa: E402  isort: skip

MODULES: dict[str, ModuleType] = {
    "dynamics": dynamics, "energy": energy, "phase": phase, "muon": muon, "multilayer": multilayer,
    "hyperparams": hyperparams, "ungrokking": ungrokking, "nonabelian": nonabelian}
RECIPES = tuple(MODULES)            # `reproduce all` runs these, in this order
SIZES = ("smoke", "quick", "full")

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
               in_all: bool = False) -> Findings:
    """Run one recipe into `out` and write its findings.json (with recipe, size and wall_seconds)."""
    claim_folder(out, name, size)
    ctx = RecipeContext(out, size, log, workers, in_all)
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
    wall = round(time.perf_counter() - t0, 1)
    findings = jsonable({"recipe": name, **findings, "size": size, "wall_seconds": wall})
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
    findings = jsonable({"recipe": "all", "size": size, "wall_seconds": wall, "verdict_counts": counts,
                       "headline": ", ".join(f"{k} {v}" for k, v in counts.items()),
                       "recipes": {n: {"verdict": f["verdict"], "headline": f.get("headline"),
                                       "wall_seconds": f["wall_seconds"], "folder": n} for n, f in results.items()}})
    write_json(out / "findings.json", findings)
    return findings
