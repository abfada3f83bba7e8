"""`li2 train` (its options are TrainConfig's fields, generated) and `li2 diagnose`."""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import typer

from ..config import TrainConfig
from ..runs.folder import diagnose_dir, load_config
from ..runs.training import train
from ..store import StoreError, read_yaml
from .common import Progress, print_summary, user_errors
from .options import config_command, config_parameters, given_on_command_line

RUN_OPTIONS = [   # `li2 train`'s own options, beside the TrainConfig fields
    inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                      default=typer.Option(None, help="one seed (init and split); --seeds for several")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, help="run folder (default: runs/<timestamp>)")),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, help="continue the run in this folder")),
    inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--json", help="print summary.json to stdout")),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, help="no progress bar")),
    inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--config", help="YAML file of training options (options on "
                                                                  "the command line override it)")),
]
NOT_TRAINING_OPTIONS = {p.name for p in RUN_OPTIONS}


def training_options(ctx: typer.Context, options: dict, config_file: Path | None) -> dict:
    """TrainConfig fields from an optional YAML file, overridden by options given on the command line."""
    fields: dict = {}
    if config_file is not None:
        try:
            loaded = read_yaml(config_file)
        except StoreError as e:
            raise ValueError(f"--config {e}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {config_file} must hold a mapping of training options")
        fields.update(loaded["config"] if isinstance(loaded.get("config"), dict) else loaded)
    for name, value in options.items():
        if name in NOT_TRAINING_OPTIONS or (config_file is not None and not given_on_command_line(ctx, name)):
            continue
        fields[name] = value
    if options["seed"] is not None:
        if options["seeds"] is not None:
            raise ValueError("give --seed or --seeds, not both")
        fields["seeds"] = [options["seed"]]
    elif fields.get("seeds") is None:
        fields.pop("seeds", None)
    return fields


def _train(ctx: typer.Context, **options) -> None:
    """Train two-layer networks on a group-arithmetic task (defaults: Z71, p=0.4, K=1024, σ=x², MSE, Adam)."""
    with user_errors():
        resume = options["resume"]
        if resume is not None:
            config, out = load_config(resume), resume
        else:
            config = TrainConfig.model_validate(training_options(ctx, options, options["config_file"]))
            out = options["out"]
        bar = Progress(config.steps * len(config.seeds), "train", enabled=not options["quiet"])
        try:
            result = train(config, out, resume=resume is not None, progress=bar)
        finally:
            bar.close()
    if options["as_json"]:
        typer.echo(json.dumps(result.summary))
    else:
        print_summary(result.summary, result.out_dir)


train_command = config_command(_train, config_parameters() + RUN_OPTIONS)


def diagnose_command(
    folder: Path = typer.Argument(..., help="a finished run folder (li2 train --out)"),
    as_json: bool = typer.Option(False, "--json", help="print the outcomes as one JSON object"),
):
    """Name what happened to each model (grokked, memorized, no_feature_learning, ungrokked, diverged,
    unfinished) and which knob the theory says to turn."""
    with user_errors():
        result = diagnose_dir(folder)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for m in result["models"]:
        test = m.get("final_test_acc")
        typer.echo(f"seed {m['seed']}: {m['outcome']}  (test acc {test if test is None else f'{test:.3f}'}, "
                   f"{m.get('status')})")
        typer.echo(f"  hint: {m['hint']}")
