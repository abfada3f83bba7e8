"""`li2 reproduce NAME` (and its --dry-run plan) and `li2 report DIR`.

The recipes and the report (and so torch and pandas) are imported inside the commands, after their
arguments are parsed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ..store import jsonable
from .common import fail, heavy_imports, user_errors


def _value(v) -> str:
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)


def plan_text(all_plans: dict, size: str) -> list[str]:
    """The dry run's lines: per recipe its runs, core-hours, settings and deviations; then the total."""
    lines = [f"li2 reproduce --{size} — dry run: the plan, nothing is trained"]
    total_runs, total_hours, unknown = 0, 0.0, []
    for name, p in all_plans.items():
        lines.append("")
        if p is None:
            lines.append(f"{name}: plan not available (this recipe is being rewritten; no estimate)")
            unknown.append(name)
            continue
        total_runs += p["runs"]
        total_hours += p["core_hours"]
        lines.append(f"{name}: {p['runs']} training runs, ≈ {p['core_hours']:.3g} core-hours")
        lines.append("  paper: " + "; ".join(f"{k} {_value(v)}" for k, v in p["paper_setting"].items()))
        lines.append("  li2:   " + "; ".join(f"{k} {_value(v)}" for k, v in p["setting"].items()))
        for d in p["deviations"]:
            lines.append(f"  deviation — {d['what']}: paper {_value(d['paper'])}, here {_value(d['here'])} "
                         f"({d['why']})")
        if not p["deviations"]:
            lines.append("  no deviation from the paper's stated settings")
    lines.append("")
    lines.append(f"total: {total_runs} training runs, ≈ {total_hours:.3g} core-hours "
                 f"(≈ {total_hours / 2:.3g} h on 2 cores)"
                 + (f"; not counted (no plan yet): {', '.join(unknown)}" if unknown else ""))
    return lines


def reproduce_command(
    name: str = typer.Argument(..., help="a recipe (dynamics, energy, phase, muon, …: an unknown name lists "
                                         "them all), or all"),
    out: Path = typer.Option(None, help="folder for figures, tables and findings.json (a sub-folder per recipe "
                                        "for all); not needed with --dry-run"),
    quick: bool = typer.Option(False, "--quick", help="the small version (reproduce all --quick: ≤ 15 min on 2 "
                                                      "cores); every deviation from the paper is recorded"),
    full: bool = typer.Option(False, "--full", help="the paper's settings (the default when --quick is not given)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (settings, deviations, runs, estimated "
                                                          "core-hours) and train nothing"),
    size: str = typer.Option("", hidden=True, help="smoke | quick | full (overrides --quick; smoke is for tests)"),
    as_json: bool = typer.Option(False, "--json", help="print findings.json (or the plan) as one JSON object"),
    quiet: bool = typer.Option(False, help="no progress lines on stderr"),
):
    """Reproduce one of the paper's experiments at its settings and judge its claim: supports / contradicts /
    inconclusive (the claims: docs/theory.md; the verdict rule: each findings.json)."""
    with heavy_imports():
        from ..recipes.registry import RECIPES, plans, reproduce
    if name not in RECIPES and name != "all":
        fail(f"unknown recipe '{name}': choose one of {', '.join(RECIPES)}, all")
    if quick and full:
        fail("give --quick or --full, not both")
    size = size or ("quick" if quick else "full")
    if dry_run:
        with user_errors():
            all_plans = plans(name, size)
        if as_json:
            typer.echo(json.dumps(jsonable({"size": size, "plans": all_plans})))
        else:
            typer.echo("\n".join(plan_text(all_plans, size)))
        return
    if out is None:
        fail("--out is required (a folder for the findings), unless --dry-run")
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with user_errors():
        findings = reproduce(name, out, progress=log, size=size)
    if as_json:
        typer.echo(json.dumps(findings))
        return
    if name == "all":
        for key, f in findings["recipes"].items():
            typer.echo(f"{key:<13} {f['verdict']:<13} {f.get('headline', '')}")
        typer.echo(f"total {findings['wall_seconds']:.0f} s; findings: {out / 'findings.json'}")
    else:
        typer.echo(f"{name}: {findings['verdict']} — {findings.get('headline', '')}")
        typer.echo(f"findings: {out / 'findings.json'}")


def report_command(
    folder: Path = typer.Argument(..., help="a run folder, a recipe folder (findings.json) or a sweep/phase folder"),
    out: Path = typer.Option(Path("report.html"), help="the HTML file to write"),
):
    """Write ONE self-contained HTML page (figures embedded, no external resources) for a folder."""
    with heavy_imports():
        from ..views.report import write_report
    with user_errors():
        path = write_report(folder, out)
    typer.echo(f"wrote {path}")
