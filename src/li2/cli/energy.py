"""`li2 energy`: the local maxima of the Stage-II energy E of a task, by projected ascent.

The numerics (and torch) are imported inside the command, after its arguments are parsed."""
from __future__ import annotations

import datetime as _dt
import inspect
import json
from pathlib import Path
from typing import Optional

import typer

from ..config import TrainConfig, resolve_group
from ..store import write_json
from .common import heavy_imports, user_errors
from .options import config_command, config_parameters

TASK_FIELDS = ("group", "group_table", "expression", "modulus", "operands", "train_ratio", "activation", "centring")
ENERGY_OPTIONS = [
    inspect.Parameter("restarts", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                      default=typer.Option(64, min=1, max=100_000, help="random starts of the ascent")),
    inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                      default=typer.Option(0, min=0, help="seed of the split and the starts")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, help="folder for energy.json and energy.png "
                                                      "(default: runs/energy-<time>)")),
    inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--json", help="print the result as one JSON object")),
]


def _energy(ctx: typer.Context, **options) -> None:
    """Local maxima of the Stage-II energy E(w) = ½‖Ỹᵀσ(Xw)‖² by projected ascent, classified by irrep."""
    with user_errors():
        cfg = TrainConfig(**{k: options[k] for k in TASK_FIELDS})
        g = resolve_group(cfg)
        ratio = cfg.resolved_ratio(g.order)
        with heavy_imports():
            from ..theory.maxima import energy_landscape
            from ..views.study_figures import energy_figure
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        out_dir = Path(options["out"]) if options["out"] is not None else Path("runs") / f"energy-{stamp}"
        out_dir.mkdir(parents=True, exist_ok=True)
        result = energy_landscape(g, ratio, activation=cfg.activation, restarts=options["restarts"],
                                  seed=options["seed"], operands=cfg.operands, centring=cfg.centring)
        write_json(out_dir / "energy.json", result)
        energy_figure(result, out_dir / "energy.png")
    if options["as_json"]:
        typer.echo(json.dumps(result))
        return
    pred = result["predicted_max_energy"]
    typer.echo(f"{result['group']} p={ratio:.3g}: max E {result['max_energy']:.4f}"
               + (f" (theory {pred:.4f})" if pred is not None else "")
               + f", irrep-like {result['irrep_fraction']:.0%}, memorisation-like "
                 f"{result['memorization_fraction']:.0%} of {result['restarts']} maxima")
    if result["component_histogram"]:
        typer.echo("by component: " + ", ".join(f"{k}: {v}" for k, v in result["component_histogram"].items()))
    typer.echo(f"written: {out_dir}/energy.json, energy.png")


energy_command = config_command(
    _energy, config_parameters(TASK_FIELDS, defaults={"group": "Z23", "train_ratio": "1.0"}) + ENERGY_OPTIONS)
