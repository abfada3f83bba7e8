"""`li2 train` (its options are TrainConfig's fields, generated) and `li2 diagnose`.

The training modules (and so torch) are imported inside the commands, after the arguments are
parsed: `li2 train --help` and an argument error answer without loading torch.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import List, Optional

import typer
from pydantic import ValidationError

from ..config import TrainConfig, did_you_mean
from ..store import StoreError, mapping_lines, parse_yaml, read_text
from .common import Progress, describe_validation_error, heavy_imports, print_summary, user_errors
from .options import config_command, config_parameters, given_on_command_line

RUN_OPTIONS = [   # `li2 train`'s own options, beside the TrainConfig fields
    inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                      default=typer.Option(None, help="one seed (init and split); --seeds for several")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, help="run folder (default: runs/<timestamp>)")),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, help="continue the run in this folder")),
    inspect.Parameter("log", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[List[str]],
                      default=typer.Option(None, help="also log live to tensorboard (run folder's tensorboard/) or "
                                                      "wandb (WANDB_MODE=offline keeps it on disk); repeat or "
                                                      "comma-separate; metrics.jsonl is always written")),
    inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--json", help="print summary.json to stdout")),
    inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, help="no progress on stderr")),
    inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, "--config", help="YAML file of training options (options on "
                                                                  "the command line override it)")),
]
NOT_TRAINING_OPTIONS = {p.name for p in RUN_OPTIONS}


def read_config_file(path: Path) -> tuple[dict, dict[str, int]]:
    """(training options, line of each option) of a --config file: a mapping of TrainConfig fields,
    or a run folder's config.yaml (its `config` mapping). Errors name the file and the line."""
    try:
        text = read_text(path)
        loaded = parse_yaml(text, str(path))
    except StoreError as e:
        raise ValueError(f"--config {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path} must hold a mapping of training options")
    nested = isinstance(loaded.get("config"), dict)
    fields = loaded["config"] if nested else loaded
    lines = mapping_lines(text, ("config",) if nested else ())
    for key in fields:
        if key not in TrainConfig.model_fields:
            where = f" line {lines[key]}" if key in lines else ""
            raise ValueError(f"--config {path}{where}: unknown option '{key}'"
                             f"{did_you_mean(key, TrainConfig.model_fields)}")
    return dict(fields), lines


def training_config(ctx: typer.Context, options: dict) -> TrainConfig:
    """TrainConfig from an optional --config file, overridden by options given on the command line;
    an invalid value from the file is reported with the file and its line."""
    config_file = options["config_file"]
    fields, lines = read_config_file(config_file) if config_file is not None else ({}, {})
    from_file = set(fields)
    for name, value in options.items():
        # an option left at its default is not passed: TrainConfig then applies the --model's defaults
        if name in NOT_TRAINING_OPTIONS or not given_on_command_line(ctx, name):
            continue
        fields[name] = value
        from_file.discard(name)
    if options["seed"] is not None:
        if options["seeds"] is not None:
            raise ValueError("give --seed or --seeds, not both")
        fields["seeds"] = [options["seed"]]
        from_file.discard("seeds")
    elif fields.get("seeds") is None:
        fields.pop("seeds", None)
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as e:
        loc = [str(p) for p in e.errors()[0].get("loc", ()) if not isinstance(p, int)]
        if loc and loc[0] in from_file:
            where = f" line {lines[loc[0]]}" if loc[0] in lines else ""
            raise ValueError(f"--config {config_file}{where}: {describe_validation_error(e)}") from None
        raise


def _train(ctx: typer.Context, **options) -> None:
    """Train networks on a group-arithmetic task (defaults: the two-layer network, Z71, p=0.4, K=1024, σ=x², MSE,
    Adam; --model mlp or transformer for the others)."""
    with user_errors():
        resume = options["resume"]
        if resume is not None:
            with heavy_imports():
                from ..runs.folder import load_config
            config, out = load_config(resume), resume
        else:
            config, out = training_config(ctx, options), options["out"]
        with heavy_imports():
            from ..runs.training import train  # torch, once the options are known to be valid
        log = [name for item in options["log"] or () for name in item.split(",")]
        bar = Progress(config.steps * len(config.seeds), "train", enabled=not options["quiet"])
        try:
            result = train(config, out, resume=resume is not None, progress=bar, on_eval=bar.evaluated, log=log)
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
    with heavy_imports():
        from ..runs.folder import diagnose_dir
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

