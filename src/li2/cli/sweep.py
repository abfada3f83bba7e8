"""`li2 sweep` (run a YAML grid of training runs), `li2 phase` (p_c(M) from a sweep's results) and `li2 phase-search`
(the adaptive p_c search and its laws).

The sweep machinery (and so torch) is imported inside the commands, after their arguments are parsed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import Progress, fail, heavy_imports, user_errors


def sweep_command(
    spec: Path = typer.Argument(..., help="sweep spec (YAML: base, grid, figures; see li2.studies.spec)"),
    out: Path = typer.Option(..., help="sweep folder; rerun with the same --out to resume"),
    executor: str = typer.Option("local", help="local (a process pool on this machine), ray (a Ray cluster) or "
                                               "slurm (one SLURM job per run, through submitit)"),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (default: start a local Ray instance)"),
    workers: Optional[int] = typer.Option(None, help="parallel runs (default: number of CPU cores; slurm: jobs "
                                                     "running at once, default unlimited)"),
    partition: Optional[str] = typer.Option(None, help="slurm: the partition to submit to"),
    time_limit: int = typer.Option(60, "--time-limit", min=1, help="slurm: minutes each run's job may take"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary to stdout"),
    quiet: bool = typer.Option(False, help="no progress on stderr"),
):
    """Train every run of a parameter grid (skipping finished runs, resuming started ones)."""
    with heavy_imports():
        from ..studies.spec import SweepSpec
        from ..studies.sweep import run_sweep, sweep_progress
    with user_errors():
        parsed = SweepSpec.load(spec)
        total, done = sweep_progress(parsed, out)
        bar = Progress(total, "sweep", enabled=not quiet, unit="run", initial=done)

        def finished(n: int) -> None:
            bar(n)
            if n:
                bar.note(f"{bar.done} of {total} runs finished")

        slurm = {"partition": partition, "timeout_min": time_limit}
        try:
            table = run_sweep(parsed, out, executor=executor, workers=workers, address=address, progress=finished,
                              slurm=slurm)
        finally:
            bar.close()
    failed = table[table.status == "failed"]
    summary = {
        "out_dir": str(out), "results": str(out / "results.parquet"), "runs": int(len(table)),
        "trained_now": int(total - done), "failed": int(len(failed)),
        "failures": [{"run_id": r.run_id, "error": r.error} for r in failed.itertuples()],
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"{summary['runs']} runs ({done} finished before, {total - done} run now), "
                   f"{summary['failed']} failed; results: {summary['results']}")
    for f in summary["failures"][:5]:
        typer.echo(f"warning: run {f['run_id']} failed: {f['error']}", err=True)
    if len(failed) > 5:
        typer.echo(f"warning: … and {len(failed) - 5} more failed runs (status 'failed' in results.parquet)", err=True)


def _fmt(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def print_phase(analysis: dict) -> None:
    typer.echo(f"runs used {analysis['n_runs_used']} of {analysis['n_runs_total']}; "
               f"success = final test acc >= {analysis['success_threshold']:g}")
    for order, v in analysis["pc"].items():
        ci = v.get("ci")
        where = (f"p_c = {_fmt(v.get('estimate'))}  95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else
                 f"p_c = {_fmt(v.get('estimate'))}")
        if not v.get("bracketed"):
            where = f"not bracketed ({v.get('reason')})"
        typer.echo(f"  M = {order:>4}: {where}")
    if analysis.get("c") is not None:
        lo, hi = analysis["c_ci"] or (None, None)
        typer.echo(f"fit p_c = c·ln M/M: c = {_fmt(analysis['c'], 4)}  95% CI [{_fmt(lo, 4)}, {_fmt(hi, 4)}]  "
                   f"(weighted by each p_c's likelihood, scatter between M τ = {_fmt(analysis.get('c_scatter_tau'))}); "
                   f"least squares c = {_fmt(analysis.get('c_unweighted'), 4)}, R² = {_fmt(analysis['r2'])}  "
                   f"(reference c = {analysis['reference_c']:g}, R² = {_fmt(analysis.get('reference_r2'))})")
        for name, form in (analysis.get("alternatives") or {}).items():
            typer.echo(f"  {name:<14} R² = {_fmt(form['r2'])}  adjusted R² = {_fmt(form.get('r2_adj'))}")
        typer.echo(f"preferred form by R²: {analysis.get('preferred')} (adjusted: {analysis.get('preferred_adjusted')})")
        for line in (analysis.get("law") or {}).get("evidence", []):
            typer.echo(f"  law: {line}")
    if analysis.get("note"):
        typer.echo(f"note: {analysis['note']}")


def phase_command(
    sweep_dir: Path = typer.Argument(..., help="a sweep folder (li2 sweep --out) with results.parquet"),
    threshold: float = typer.Option(0.95, help="a run succeeds when its final test accuracy is at least this"),
    as_json: bool = typer.Option(False, "--json", help="print phase.json to stdout"),
):
    """Estimate p_c(M) per group order and fit p_c = c·ln M/M (writes phase.json, phase.png, phase.svg)."""
    with heavy_imports():
        from ..studies.phase import analyse_sweep_dir
    with user_errors():
        if not 0 < threshold <= 1:
            fail(f"--threshold must be in (0, 1], got {threshold}")
        analysis = analyse_sweep_dir(sweep_dir, threshold)
    if as_json:
        typer.echo(json.dumps(analysis))
    else:
        print_phase(analysis)
        typer.echo(f"wrote {sweep_dir / 'phase.json'}, phase.png, phase.svg")


def print_search(analysis: dict) -> None:
    """The search's p_c per M at its budget, the laws with their evidence, and the grokking-time law."""
    phase = analysis["phase"]
    typer.echo(f"budget: {analysis['budget']} steps (undecided runs continued up to it); intervals tempered by "
               f"{analysis['temper']:.2f} (adaptive design)")
    check = analysis["budget_check"]["per_order"]
    for order, v in phase["pc"].items():
        ci, b = v.get("ci"), check.get(order, {})
        where = (f"p_c = {_fmt(v['estimate'])}  95% CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if v.get("bracketed")
                 else f"not bracketed ({v.get('reason')})")
        moved = "" if b.get("shift") is None else f"  at half the budget {_fmt(b['pc_half'])} " \
            f"({'inside' if b['within_ci'] else 'outside'} the CI)"
        typer.echo(f"  M = {order:>4}: {where}{moved}  [{analysis['runs'][order]['runs']} runs]")
    if phase.get("c") is not None:
        lo, hi = phase["c_ci"]
        typer.echo(f"c = {_fmt(phase['c'], 4)}  95% CI [{_fmt(lo, 4)}, {_fmt(hi, 4)}]  (reference {phase['reference_c']:g})")
    for line in (phase.get("law") or {}).get("evidence", []):
        typer.echo(f"  {line}")
    gt = analysis.get("grok_time") or {}
    for form, fit in (gt.get("joint") or {}).items():
        if fit:
            h = fit["held_out"]
            typer.echo(f"  grok time, {form}: ν = {fit['params']['nu']:.3g}, A = {fit['params']['A']:.3g}, "
                       f"α = {fit['params']['alpha']:.3g}; held-out RMS(ln T) = {_fmt(h['rms_log'])} "
                       f"(×{_fmt(h['median_factor'])} median) on {fit['n']} runs")
    if gt.get("null"):
        typer.echo(f"  grok time, no law (each M's mean): held-out RMS(ln T) = {_fmt(gt['null']['held_out']['rms_log'])}")


def phase_search_command(
    spec: Path = typer.Argument(..., help="search spec (YAML: base, orders, kappa, budget_cap, start, batch, "
                                          "tolerance, max_runs; see li2.studies.search)"),
    out: Path = typer.Option(..., help="search folder; rerun with the same --out to resume"),
    executor: str = typer.Option("local", help="local (a process pool on this machine) or ray"),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (default: start a local Ray instance)"),
    workers: Optional[int] = typer.Option(None, help="parallel runs (default: number of CPU cores)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the estimated cost and stop"),
    as_json: bool = typer.Option(False, "--json", help="print analysis.json to stdout"),
    quiet: bool = typer.Option(False, help="no progress on stderr"),
):
    """Search p_c(M) adaptively (bisection on ln p over seeds, undecided runs continued), then fit every law
    (writes results.parquet, analysis.json, phase.png, phase.svg)."""
    import os

    from ..store import jsonable, write_json
    with heavy_imports():
        from ..studies.search import SearchSpec, estimate_cost, run_search
        from ..studies.search_analysis import analyse_search
        from ..views.study_figures import phase_figure
    with user_errors():
        parsed = SearchSpec.load(spec)
        cost = estimate_cost(parsed)
        n = workers or os.cpu_count() or 1
        typer.echo(f"estimated cost: {cost['typical_core_seconds'] / 3600:.3g} core-hours (upper bound "
                   f"{cost['upper_core_seconds'] / 3600:.3g}), ≈ {cost['typical_core_seconds'] / n / 60:.0f} min on "
                   f"{n} workers; at most {cost['runs']} runs", err=True)
        if dry_run:
            return
        say = (lambda line: typer.echo(line, err=True)) if not quiet else None
        table = run_search(parsed, out, executor, workers, address, say)
        analysis = jsonable(analyse_search(table, parsed))
        write_json(out / "analysis.json", analysis)
        phase_figure(table, analysis["phase"], out / "phase.png", out / "phase.svg", analysis.get("grok_time"))
    if as_json:
        typer.echo(json.dumps(analysis))
    else:
        print_search(analysis)
        typer.echo(f"wrote {out / 'results.parquet'}, analysis.json, phase.png, phase.svg")
