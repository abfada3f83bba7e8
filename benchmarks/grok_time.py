"""Calibration of li2.theory.outcomes.GROK_TIME_FIT: how many steps li2's runs take to grok.

Trains Z_M runs over a grid of (M, p/p_c, lr, η) at K = 512 plus a width series, and fits
log(grok step) = a + b_lr·log lr + b_η·log η + b_p·log(p/p_c) + b_K·log K + b_M·log M
by least squares on the runs that grokked (`li2 diagnose` uses the fit to say when a run stopped
before it could have grokked). One process, one thread; the full grid takes about an hour on a busy
2-core machine. Prints the table (--json: as JSON) and the fitted coefficients.

    python benchmarks/grok_time.py [--quick] [--json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np

import li2
from li2.task import critical_ratio


def grid(quick: bool) -> list[tuple]:
    ms, mults, lrs, wds, seeds = (((23, 41), (1.2, 2.4), (2e-3, 8e-3), (1e-4, 5e-4), (0,)) if quick else
                                  ((23, 41, 71), (1.2, 1.6, 2.4), (5e-4, 2e-3, 8e-3), (1e-4, 5e-4, 2e-3), (0, 1)))
    jobs = [(m, mult, lr, wd, 512, s) for m, mult, lr, wd, s in itertools.product(ms, mults, lrs, wds, seeds)]
    jobs += [(m, 1.6, 2e-3, 5e-4, k, s) for m in ms[:2] for k in (128, 2048) for s in seeds]
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (minutes)")
    parser.add_argument("--json", action="store_true", help="print the rows and the fit as JSON")
    args = parser.parse_args()
    rows = []
    for m, mult, lr, wd, k, seed in grid(args.quick):
        r = li2.train(group=f"Z{m}", train_ratio=min(1.0, mult * critical_ratio(m)), lr=lr, weight_decay=wd,
                      width=k, seeds=[seed], steps=6000, diagnostics="off", threads=1, write=False)
        model = r.summary["models"][0]
        rows.append({"M": m, "ratio_over_critical": mult, "lr": lr, "weight_decay": wd, "width": k, "seed": seed,
                     "grok_step": model["grok_step"], "outcome": model["outcome"]})
        if not args.json:
            print(json.dumps(rows[-1]), flush=True)
    grokked = [r for r in rows if r["grok_step"]]
    names = ["lr", "weight_decay", "ratio_over_critical", "width", "M"]
    x = np.array([[1.0] + [math.log(r[n]) for n in names] for r in grokked])
    y = np.array([math.log(r["grok_step"]) for r in grokked])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fit = {"const": round(float(coef[0]), 3), **{n: round(float(c), 3) for n, c in zip(names, coef[1:])},
           "residual_sd": round(float((y - x @ coef).std()), 3), "runs": len(grokked)}
    print(json.dumps({"rows": rows, "fit": fit}) if args.json else f"fit: {json.dumps(fit)}")


if __name__ == "__main__":
    main()
