"""The `li2` command line: the typer app, every command mounted on it, and the console entry point.

Command modules only define functions; this module registers them, so nothing imports the app back.
Every user error ends as one line `error: …` on stderr and exit code 2 — never a traceback.
"""
from __future__ import annotations

import sys

import typer

from .common import one_line
from .energy import energy_command
from .groups import groups_app
from .recipes import report_command, reproduce_command
from .sweep import phase_command, sweep_command
from .train import diagnose_command, train_command

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="li2 — train, measure and scale the Li2 theory of grokking on group arithmetic.")


@app.callback()
def _root() -> None:
    """li2 — train, measure and scale the Li2 theory of grokking on group arithmetic."""


app.command("train")(train_command)
app.command("energy")(energy_command)
app.command("sweep")(sweep_command)
app.command("phase")(phase_command)
app.command("reproduce")(reproduce_command)
app.command("report")(report_command)
app.command("diagnose")(diagnose_command)
app.add_typer(groups_app, name="groups", help="Finite groups: names accepted, character tables, irreps.")


def main() -> None:
    """Console entry point: usage errors become one line too."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:   # usage errors: unknown option, bad type, missing value
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(e.format_message(), err=True)
            sys.exit(0)
        text = " ".join(e.format_message().split())
        typer.echo(f"error: {one_line(text)}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
