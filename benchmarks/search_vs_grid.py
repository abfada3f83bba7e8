"""The adaptive search against a fixed grid at one M (issue 12's acceptance: the same p_c within the grid's
CI for at most half its runs).

    python benchmarks/search_vs_grid.py [--order 71] [--out DIR] [--workers 2] [--max-runs 16]

Both use the phase recipe's quick training settings (li2.recipes.phase) and the same definition of success,
"test acc >= 0.95 within the budget cap": the grid trains every run with steps = cap (early stop once it
grokked), 11 ratios (the multiples of p_ref the grid study used) × 3 seeds = 33 runs, analysed by
li2.studies.phase.analyse_phase (a fixed design: untempered intervals); the search starts at the base
budget, continues undecided runs to the cap and stops at --max-runs. Prints JSON with both p_c, their
intervals, runs, trainings and core-seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from li2.recipes.phase import search_spec
from li2.studies.phase import analyse_phase
from li2.studies.search import run_search
from li2.studies.search_analysis import analyse_search
from li2.studies.sweep import run_sweep

MULTIPLES = (0.5, 0.8, 0.86, 0.9, 0.94, 0.97, 1.0, 1.06, 1.12, 1.26, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", type=int, default=71)
    ap.add_argument("--out", type=Path, default=Path("search-vs-grid"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-runs", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    spec = search_spec("quick", orders=[args.order]).model_copy(update={"max_runs": args.max_runs})
    base = spec.config(args.order, 0.5, 0).model_dump(mode="json")
    base = {k: v for k, v in base.items() if k not in ("group", "train_ratio", "seeds")} | {"steps": spec.cap}
    t0 = time.perf_counter()
    grid = run_sweep({"name": "grid", "base": base,
                      "grid": {"group": [f"Z{args.order}"], "train_ratio": {"critical_multiple": list(MULTIPLES)},
                               "seed": {"range": [0, args.seeds]}}}, args.out / "grid", workers=args.workers)
    grid_wall = time.perf_counter() - t0
    g = analyse_phase(grid, n_boot=20, laws=False)["pc"][str(args.order)]
    t0 = time.perf_counter()
    table = run_search(spec, args.out / "search", workers=args.workers)
    search_wall = time.perf_counter() - t0
    s = analyse_search(table, spec, n_boot=20)["phase"]["pc"][str(args.order)]
    inside = bool(g.get("ci") and s.get("estimate") and g["ci"][0] <= s["estimate"] <= g["ci"][1])
    print(json.dumps({
        "order": args.order, "budget": spec.cap,
        "grid": {"pc": g.get("estimate"), "ci": g.get("ci"), "runs": int(len(grid)),
                 "core_seconds": round(float(grid["wall_seconds"].sum()), 1), "wall_seconds": round(grid_wall, 1)},
        "search": {"pc": s.get("estimate"), "ci": s.get("ci"), "runs": int(len(table)),
                   "continued": int((table["budget"] > spec.steps).sum()),
                   "core_seconds": round(float(table["wall_seconds"].sum()), 1), "wall_seconds": round(search_wall, 1)},
        "search_pc_inside_grid_ci": inside, "run_ratio": round(len(table) / len(grid), 3)}, indent=1))


if __name__ == "__main__":
    main()
