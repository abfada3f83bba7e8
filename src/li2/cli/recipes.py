"""`li2 reproduce NAME` and `li2 report DIR`.

The recipes and the report (and so torch and pandas) are imported inside the commands, after their
arguments are parsed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .common import fail, user_errors


def reproduce_command(
    name: str = typer.Argument(..., help="dynamics, energy, phase, muon, multilayer, hyperparams, ungrokking, "
                                         "nonabelian, or all"),
    out: Path = typer.Option(..., help="folder for figures, tables and findings.json (a sub-folder per recipe for all)"),
    quick: bool = typer.Option(False, "--quick", help="the small version (reproduce all --quick: ≈5 min, at most 10, on 2 busy cores)"),
    size: str = typer.Option("", hidden=True, help="smoke | quick | full (overrides --quick; smoke is for tests)"),
    as_json: bool = typer.Option(False, "--json", help="print findings.json as one JSON object on stdout"),
    quiet: bool = typer.Option(False, help="no progress lines on stderr"),
):
    """Reproduce one of the paper's experiments and judge its claim: supports / contradicts / inconclusive
    (the claims: docs/theory.md; the verdict rule: each findings.json)."""
    from ..recipes.registry import RECIPES, reproduce
    if name not in RECIPES and name != "all":
        fail(f"unknown recipe '{name}': choose one of {', '.join(RECIPES)}, all")
    log = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with user_errors():
        findings = reproduce(name, out, quick=quick, progress=log, size=size or None)
    if as_json:
        typer.echo(json.dumps(findings))
        return
    if name == "all":
        for key, f in findings["recipes"].items():
            typer.echo(f"{key:<12} {f['verdict']:<13} {f.get('headline', '')}")
        typer.echo(f"total {findings['wall_seconds']:.0f} s; findings: {out / 'findings.json'}")
    else:
        typer.echo(f"{name}: {findings['verdict']} — {findings.get('headline', '')}")
        typer.echo(f"findings: {out / 'findings.json'}")


def report_command(
    folder: Path = typer.Argument(..., help="a run folder, a recipe folder (findings.json) or a sweep/phase folder"),
    out: Path = typer.Option(Path("report.html"), help="the HTML file to write"),
):
    """Write ONE self-contained HTML page (figures embedded, no external resources) for a folder."""
    from ..views.report import write_report
    with user_errors():
        path = write_report(folder, out)
    typer.echo(f"wrote {path}")
