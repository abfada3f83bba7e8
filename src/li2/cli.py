"""The `li2` command line: parses, calls the Python API, prints.  Nothing else lives here.

Every user error ends as one line `error: …` on stderr and exit code 2 — never a traceback.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="li2 — train, measure and scale the Li2 theory of grokking on group arithmetic.")



@app.callback()
def _root() -> None:
    """li2 — train, measure and scale the Li2 theory of grokking on group arithmetic."""


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


NOT_TRAINING_OPTIONS = {"seed", "out", "resume", "as_json", "quiet", "config_file", "ctx"}


def training_options(ctx: typer.Context, options: dict, config_file: Path | None) -> dict:
    """TrainConfig fields from an optional YAML file, overridden by options given on the command line."""
    from .store import read_yaml
    given = lambda name: (src := ctx.get_parameter_source(name)) is not None and src.name == "COMMANDLINE"
    fields: dict = {}
    if config_file is not None:
        loaded = read_yaml(config_file)
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {config_file} must hold a mapping of training options")
        fields.update(loaded.get("config", loaded) if isinstance(loaded.get("config"), dict) else loaded)
    for name, value in options.items():
        if name in NOT_TRAINING_OPTIONS or (config_file is not None and not given(name)):
            continue
        fields[name] = str(value) if isinstance(value, Path) else value
    if options["seed"] is not None:
        if options["seeds"] is not None:
            raise ValueError("give --seed or --seeds, not both")
        fields["seeds"] = [options["seed"]]
    elif fields.get("seeds") is None:
        fields.pop("seeds", None)
    return fields


@app.command()
def train(
    ctx: typer.Context,
    group: str = typer.Option("Z71", help="group: Z71, 71, Z2xZ3xZ4, S4, D7, … (li2 groups list)"),
    group_table: Optional[Path] = typer.Option(None, help="Cayley table file (JSON or CSV) instead of --group"),
    expression: Optional[str] = typer.Option(None, help="operation x∘y = EXPR mod --modulus (not a group)"),
    modulus: Optional[int] = typer.Option(None, help="modulus for --expression"),
    operands: int = typer.Option(2, help="operands per sample (M^k samples)"),
    train_ratio: str = typer.Option("0.4", help="training fraction in (0, 1], or critical / critical:C"),
    seed: Optional[int] = typer.Option(None, help="one seed (init and split)"),
    seeds: Optional[str] = typer.Option(None, help="several seeds: 0-7 or 0,3,5"),
    width: int = typer.Option(1024, "--width", "-K", help="hidden nodes K"),
    activation: str = typer.Option("sqr", help="sqr, relu, silu, relusqr, gelu"),
    loss: str = typer.Option("mse", help="mse (centred, SPEC §1) or ce"),
    init_scale: float = typer.Option(1.0, help="W init: uniform ±s/√fan_in"),
    top_init_scale: float = typer.Option(1.0, help="V init multiplier (0 = zero-initialised top layer)"),
    layers: int = typer.Option(0, help="extra residual hidden layers"),
    top_layer: str = typer.Option("learned", help="learned, or ridge (V = ridge solution every step)"),
    optimizer: str = typer.Option("adam", help="sgd, adam (coupled L2), adamw, muon"),
    lr: float = typer.Option(2e-3, help="learning rate"),
    weight_decay: float = typer.Option(5e-4, help="weight decay η"),
    muon_lr: Optional[float] = typer.Option(None, help="Muon learning rate on W (default: --lr)"),
    steps: int = typer.Option(3000, help="step budget"),
    eval_every: Optional[int] = typer.Option(None, help="evaluate every N steps (default: 5 to 200, 25 to 2000, then 100)"),
    early_stop: bool = typer.Option(True, help="stop a model once test acc ≥ 0.95 held for --stop-margin steps"),
    stop_margin: int = typer.Option(100, help="steps test accuracy must hold before an early stop"),
    checkpoint_every: int = typer.Option(500, help="periodic checkpoint interval (0 = final only)"),
    diagnostics: str = typer.Option("basic", help="off, basic or full theory diagnostics"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    execution: str = typer.Option("auto", help="auto, stack (model axis) or sequential"),
    threads: Optional[int] = typer.Option(None, help="CPU threads"),
    out: Optional[Path] = typer.Option(None, help="run folder (default: runs/<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json to stdout"),
    quiet: bool = typer.Option(False, help="no progress bar"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML file of training options (CLI options override it)"),
):
    """Train two-layer networks on a group-arithmetic task (defaults: Z71, p=0.4, K=1024, σ=x², MSE, Adam)."""
    options = dict(locals())   # first statement: exactly the command's parameters
    from .config import TrainConfig
    from .run import load_config, train as run_train

    with user_errors():
        if resume is not None:
            config = load_config(resume)
            out = resume
        else:
            config = TrainConfig.model_validate(training_options(ctx, options, config_file))
        bar = Progress(config.steps * len(config.seeds), "train", enabled=not quiet)
        try:
            result = run_train(config, out, resume=resume is not None, progress=bar)
        finally:
            bar.close()
    if as_json:
        typer.echo(json.dumps(result.summary))
    else:
        print_summary(result.summary, result.out_dir)


@app.command()
def energy(
    group: str = typer.Option("Z23", help="group name (li2 groups list)"),
    group_table: Optional[Path] = typer.Option(None, help="Cayley table file (JSON or CSV) instead of --group"),
    expression: Optional[str] = typer.Option(None, help="operation x∘y = EXPR mod --modulus (not a group)"),
    modulus: Optional[int] = typer.Option(None, help="modulus for --expression"),
    operands: int = typer.Option(2, help="operands per sample"),
    train_ratio: str = typer.Option("1.0", help="training fraction in (0, 1], or critical / critical:C"),
    activation: str = typer.Option("sqr", help="sqr, relu, silu, relusqr, gelu"),
    restarts: int = typer.Option(64, min=1, max=100_000, help="random starts of the ascent"),
    seed: int = typer.Option(0, min=0, help="seed of the split and the starts"),
    out: Optional[Path] = typer.Option(None, help="folder for energy.json and energy.png (default: runs/energy-<time>)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
):
    """Local maxima of the Stage-II energy E(w) = ½‖Ỹᵀσ(Xw)‖² by projected ascent, classified by irrep."""
    from .config import TrainConfig
    from .run import default_out_dir, resolve_group
    from .store import write_json
    from .theory import energy_figure, energy_landscape

    with user_errors():
        cfg = TrainConfig(group=group, group_table=str(group_table) if group_table else None, expression=expression,
                          modulus=modulus, operands=operands, train_ratio=train_ratio, activation=activation)
        g = resolve_group(cfg)
        ratio = cfg.resolved_ratio(g.order)
        stamp = default_out_dir()
        out_dir = Path(out) if out is not None else stamp.with_name(f"energy-{stamp.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        result = energy_landscape(g, ratio, activation=activation, restarts=restarts, seed=seed, operands=operands)
        write_json(out_dir / "energy.json", result)
        energy_figure(result, out_dir / "energy.png")
    if as_json:
        typer.echo(json.dumps(result))
    else:
        pred = result["predicted_max_energy"]
        typer.echo(f"{result['group']} p={ratio:.3g}: max E {result['max_energy']:.4f}"
                   + (f" (theory {pred:.4f})" if pred is not None else "")
                   + f", irrep-like {result['irrep_fraction']:.0%}, memorisation-like "
                     f"{result['memorization_fraction']:.0%} of {result['restarts']} maxima")
        if result["component_histogram"]:
            typer.echo("by component: " + ", ".join(f"{k}: {v}" for k, v in result["component_histogram"].items()))
        typer.echo(f"written: {out_dir}/energy.json, energy.png")


# Sub-commands live in their own modules and register themselves on `app` when imported.
# (one import per line; keep this block just above main)
# -- commands --
from . import cli_sweep  # noqa: E402,F401
from . import cli_recipes  # noqa: E402,F401
from .cli_groups import groups_app  # noqa: E402
app.add_typer(groups_app, name="groups", help="Finite groups: names accepted, character tables, irreps.")
# -- end commands --


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


if __name__ == "__main__":
    # `python -m li2.cli`: run the package's module, on whose `app` the sub-commands registered
    from li2.cli import main as _main
    _main()
