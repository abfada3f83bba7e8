"""`li2 groups ...`: list accepted group names and show a group's representation theory.

Mounted by li2.cli.root as `li2 groups`.
Errors print one line `error: ...` to stderr and exit with status 2.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..algebra.groups import MAX_ORDER, NAME_FORMS, GroupError, get_group
from ..algebra.representations import component_layout, group_info
from ..algebra.tables import load_group_table
from .common import fail

groups_app = typer.Typer(
    help="Finite groups: accepted names and their irreps.",
    no_args_is_help=True,
    add_completion=False,
)


@groups_app.command("list")
def list_groups(as_json: bool = typer.Option(False, "--json", help="Print the forms as JSON.")) -> None:
    """Accepted group names, with examples and orders."""
    if as_json:
        keys = ("form", "order", "example", "description")
        typer.echo(json.dumps([dict(zip(keys, row)) for row in NAME_FORMS], indent=2, ensure_ascii=False))
        return
    widths = [max(len(row[i]) for row in NAME_FORMS + (("NAME", "ORDER", "EXAMPLE", ""),)) for i in range(3)]
    typer.echo(f"{'NAME':<{widths[0]}}  {'ORDER':<{widths[1]}}  {'EXAMPLE':<{widths[2]}}  DESCRIPTION")
    for form, order, example, description in NAME_FORMS:
        typer.echo(f"{form:<{widths[0]}}  {order:<{widths[1]}}  {example:<{widths[2]}}  {description}")
    typer.echo("")
    typer.echo(f"Names are case-insensitive; orders up to {MAX_ORDER}. Element 0 is the identity.")
    typer.echo("Any group as a table: --group-table FILE (JSON {\"name\", \"table\", \"labels\"} or CSV rows,")
    typer.echo("0-based, table[a][b] = a∘b; a CSV header row of labels is allowed).")


@groups_app.command("show")
def show(
    name: Optional[str] = typer.Argument(None, help="Group name, e.g. S4, Z7:Z3, Z3xS3."),
    group_table: Optional[Path] = typer.Option(None, "--group-table", help="JSON or CSV table file."),
    as_json: bool = typer.Option(False, "--json", help="Print group_info as JSON."),
) -> None:
    """Order, conjugacy classes, irrep degrees, Frobenius–Schur indicators, real components."""
    if (name is None) == (group_table is None):
        fail("give exactly one of NAME or --group-table FILE")
    try:
        group = load_group_table(group_table) if group_table is not None else get_group(name)
        info = group_info(group)
        components = component_layout(group)
    except (GroupError, OSError, MemoryError) as exc:
        fail(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        return
    if as_json:
        typer.echo(json.dumps(info, ensure_ascii=False))
        return

    def signed(v: int) -> str:
        return f"{v:+d}" if v else "0"

    rows = [
        ("group", info["name"]),
        ("order", str(info["order"])),
        ("abelian", "yes" if info["abelian"] else "no"),
        ("classes", str(info["num_classes"])),
        ("class sizes", " ".join(map(str, info["class_sizes"]))),
        ("irrep degrees", " ".join(map(str, info["irrep_degrees"]))),
        ("FS indicators", " ".join(signed(v) for v in info["indicators"])),
        ("real components", str(info["num_real_components"])),
    ]
    for key, value in rows:
        typer.echo(f"{key:<16} {value}")
    typer.echo("")
    typer.echo(f"{'component':<16} {'d':>3}  kind")
    for cname, d, kind in zip(components.names, components.degrees, components.kinds):
        typer.echo(f"{cname:<16} {d:>3}  {kind}")
