"""The width check behind the phase recipe's K = κ·M: p_c at one M for several κ, by the adaptive search.

    python benchmarks/phase_width.py [--order 41] [--kappas 4 8 16] [--out DIR] [--workers 1]

Each κ is a search of the phase recipe's quick settings (li2.recipes.phase.search_spec) at that M; the
result is p_c(κ) with its tempered 95% interval, and for each κ whether p_c(2κ) lies inside p_c(κ)'s
interval (then p_c no longer depends on K at that κ, to the precision of the search). Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from li2.recipes.phase import search_spec
from li2.studies.search import run_search
from li2.studies.search_analysis import analyse_search


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", type=int, default=41)
    ap.add_argument("--kappas", type=float, nargs="+", default=[4, 8, 16])
    ap.add_argument("--size", default="quick")
    ap.add_argument("--max-runs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=Path("phase-width"))
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for kappa in args.kappas:
        spec = search_spec(args.size, kappa, [args.order])
        spec = spec.model_copy(update={"max_runs": args.max_runs})
        t0 = time.perf_counter()
        table = run_search(spec, args.out / f"kappa{kappa:g}", workers=args.workers)
        pc = analyse_search(table, spec, n_boot=20)["phase"]["pc"][str(args.order)]
        rows.append({"kappa": kappa, "width": round(kappa * args.order), "pc": pc.get("estimate"), "ci": pc.get("ci"),
                     "runs": len(table), "wall_seconds": round(time.perf_counter() - t0, 1),
                     "core_seconds": round(float(table["wall_seconds"].sum()), 1)})
    for a, b in zip(rows, rows[1:]):
        a["next_inside_ci"] = bool(a["ci"] and b["pc"] and a["ci"][0] <= b["pc"] <= a["ci"][1])
    print(json.dumps({"order": args.order, "budget": spec.cap, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
