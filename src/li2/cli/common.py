"""What every command shares: one-line errors (exit 2), a progress bar, printing a run's summary.

Every user error ends as one line `error: …` on stderr and exit code 2 — never a traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

import typer
from pydantic import ValidationError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)   # GroupError, RunError, StoreError ⊂ ValueError


def one_line(text: str) -> str:
    """Escape what would break the one-line promise or fool a terminal (newlines, \\x1e, \\u2028, RTL marks…)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def fail(message: str) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(2)


def describe_validation_error(e: ValidationError) -> str:
    """First problem of a pydantic error, phrased with the CLI option name."""
    err = e.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"unknown option '{field}'"
    if field:
        return f"invalid --{field.replace('_', '-')}: {msg}"
    return msg


@contextmanager
def user_errors():
    """Turn expected failures into `error: …` + exit 2."""
    try:
        yield
    except ValidationError as e:
        fail(describe_validation_error(e))
    except USER_ERRORS as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        fail(text)
    except (MemoryError, RuntimeError) as e:   # torch's allocators raise RuntimeError
        if not isinstance(e, MemoryError) and "alloc" not in str(e) and "out of memory" not in str(e):
            raise
        fail("out of memory: choose a smaller group, fewer operands, a smaller --width or fewer seeds")


class Progress:
    """tqdm on stderr, fed by the trainer's `progress(n)` callback."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not enabled,
                        dynamic_ncols=True, leave=False)

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def print_summary(summary: dict, out_dir) -> None:
    for m in summary["models"]:
        grok = m["grok_step"] if m["grok_step"] is not None else "never"
        line = (f"seed {m['seed']}: train acc {m['final_train_acc']:.3f}  test acc "
                f"{(m['final_test_acc'] if m['final_test_acc'] is not None else float('nan')):.3f}  "
                f"grok step {grok}  ({m['status']}, {m['wall_seconds']:.1f}s)")
        if m.get("outcome"):
            line += f"  → {m['outcome']}"
        typer.echo(line)
    if out_dir is not None:
        typer.echo(f"run folder: {out_dir}")
