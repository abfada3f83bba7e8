"""The `li2` command line: the typer app, every command mounted on it, and the console entry point.

Command modules only define functions; this module registers them, so nothing imports the app back.
Every user error ends as one line `error: …` on stderr and exit code 2 — never a traceback; a
setting li2 runs but doubts (`Li2Warning`) is one line `warning: …`.

Parsing loads no torch: the commands import what they run once their arguments are read, so
`li2 --version`, `--help` and argument errors answer at once. Shell completion:
`li2 --install-completion` (bash, zsh, fish, PowerShell).
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

import typer

from ..config import Li2Warning
from ..version import __version__
from .common import one_line
from .energy import energy_command
from .groups import groups_app
from .recipes import report_command, reproduce_command
from .sweep import phase_command, phase_search_command, sweep_command
from .train import diagnose_command, train_command

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="li2 — train, measure and scale the Li2 theory of grokking on group arithmetic.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"li2 {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_print_version, is_eager=True,
                                                 help="print li2's version and exit")) -> None:
    """li2 — train, measure and scale the Li2 theory of grokking on group arithmetic
    (the theory: docs/theory.md; the paper: arXiv 2509.21519)."""


app.command("train")(train_command)
app.command("energy")(energy_command)
app.command("sweep")(sweep_command)
app.command("phase")(phase_command)
app.command("phase-search")(phase_search_command)
app.command("reproduce")(reproduce_command)
app.command("report")(report_command)
app.command("diagnose")(diagnose_command)
app.add_typer(groups_app, name="groups", help="Finite groups: names accepted, character tables, irreps.")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = one_line(" ".join(str(message).split()))
    print(f"warning: {text}" if issubclass(category, Li2Warning) else f"warning: {category.__name__}: {text}",
          file=sys.stderr, flush=True)


def main() -> None:
    """Console entry point: usage errors become one line too."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", Li2Warning)   # each is said once per run; the CLI always shows it
        warnings.showwarning = _show_warning
        _main()


def _main() -> None:
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
