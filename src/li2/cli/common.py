"""What every command shares: one-line errors (exit 2), a progress bar, printing a run's summary.

Every user error ends as one line `error: …` on stderr and exit code 2 — never a traceback.
"""
from __future__ import annotations

import gc
import math
import sys
import time
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
def heavy_imports():
    """Import the numerical stack (torch, numba, pandas, matplotlib) with the cyclic garbage collector
    paused, then freeze what the imports built.  Measured here: importing li2's training modules takes
    1.36 s instead of 1.90 s (the collector's full passes over a heap that only grows while importing),
    and the run's later full collections no longer walk the modules' objects.  Nothing the imports
    build is garbage, so nothing is kept that would have been freed."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


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
    """Progress on stderr, opened by the first update, so an argument error is never preceded by a bar.

    On a terminal: a tqdm bar, whose postfix shows the train/test accuracy of the latest evaluation
    (`evaluated(rows)`, the mean over the models of a stack). Anywhere else (a log file, a pipe):
    no bar and no carriage returns, but one plain line per evaluation (`evaluated`) or per `note`."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "step", initial: int = 0,
                 stream=None):
        self.total, self.desc, self.enabled, self.unit = total, desc, enabled, unit
        self.stream = stream if stream is not None else sys.stderr
        self.done = initial
        self.bar = None
        self.terminal = enabled and _is_terminal(self.stream)
        self.start = time.perf_counter()

    def _open(self):
        if self.bar is None and self.terminal:
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, initial=self.done, desc=self.desc, unit=self.unit, file=self.stream,
                            dynamic_ncols=True, leave=False)
        return self.bar

    def __call__(self, n: int) -> None:
        """n more units done (model-steps of training, runs of a sweep)."""
        self.done += n
        if self.terminal:
            self._open().update(n)

    def evaluated(self, rows: list[dict]) -> None:
        """The metrics rows of one evaluation (one per running model of the stack)."""
        if not self.enabled or not rows:
            return
        acc = {k: [r[k] for r in rows if isinstance(r.get(k), float) and math.isfinite(r[k])]
               for k in ("train_acc", "test_acc")}
        text = "  ".join(f"{k.replace('_acc', '')} {_spread(v)}" for k, v in acc.items() if v)
        if self.terminal:
            self._open().set_postfix_str(text, refresh=True)
            return
        seeds = sorted({int(r["seed"]) for r in rows})
        who = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}…{seeds[-1]} ({len(seeds)})"
        self.note(f"step {int(rows[0]['step'])}  {who}  acc {text}")

    def note(self, text: str) -> None:
        """One plain line when stderr is not a terminal (the bar carries the news on a terminal)."""
        if self.enabled and not self.terminal:
            elapsed = time.perf_counter() - self.start
            print(f"{self.desc}: {text}  [{self.done}/{self.total} {self.unit}s, {elapsed:.1f} s]",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _spread(values: list[float]) -> str:
    """0.812, or 0.812 [0.78–0.84] over several models."""
    mean = sum(values) / len(values)
    if len(values) == 1 or max(values) - min(values) < 5e-4:
        return f"{mean:.3f}"
    return f"{mean:.3f} [{min(values):.3f}–{max(values):.3f}]"


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
