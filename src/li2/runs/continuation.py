"""Continue a finished run with a larger step budget (the phase study's undecided runs).

`extend_run(run_dir, steps)` takes a run folder trained to a budget T (finished or not) to budget
`steps` ≥ T, in place:
  1. a run not finished at T is first finished at T (the ordinary, verified resume);
  2. each unit's final checkpoint is loaded — verified against the run's identity at budget T, exactly
     as a resume verifies it — into a trainer of the same config with budget `steps`; the final
     evaluation at T is undone (its metrics rows, the early stops it made and its snapshot: a run
     given the larger budget from the start evaluates step T as an ordinary step, e.g. on the test
     subset, and may not evaluate it at all), and that state is saved as the unit's periodic
     checkpoint at step T under the new identity;
  3. config.yaml gets the new config and the list of earlier budgets (`budgets: [T, …]`); then the
     checkpoints of the budget-T run move to checkpoints/budget-<T>/ and summary.json goes;
  4. the ordinary resume trains on from step T.
Every step can be redone: a crash before 3 leaves the budget-T run as it was; one during 3 is
completed by the next extend_run (config.yaml already names `steps` and the budget T). The result
equals a run trained with `steps` from the start (tested), apart from wall-clock fields.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import TrainConfig, build_task
from ..engine.diagnostics import hooks_for
from ..engine.trainer import Trainer, resolve_device
from ..store import StoreError, load_checkpoint, read_yaml, write_yaml
from .checkpoints import final_path, restore, run_identity, save_step, unit_name
from .folder import RunError, RunResult, load_config
from .training import train, units


def budgets(run_dir: Path) -> list[int]:
    """The earlier step budgets of a run folder (config.yaml `budgets`), oldest first; [] if never extended."""
    saved = read_yaml(Path(run_dir) / "config.yaml")
    return [int(b) for b in saved.get("budgets", [])] if isinstance(saved, dict) else []


def _streak_start(rows: list[dict], threshold: float) -> int:
    """First step of the trailing run of rows with test acc ≥ threshold (−1 if the last row is below)."""
    start = -1
    for r in rows:
        ok = r["test_acc"] == r["test_acc"] and r["test_acc"] >= threshold   # NaN is not ok
        start = (r["step"] if start < 0 else start) if ok else -1
    return int(start)


def _rewind_final(trainer: Trainer, budget: int) -> None:
    """Undo the final evaluation at step `budget`: its rows, the early stops it made, its snapshot."""
    trainer.rows = [r for r in trainer.rows if r["step"] != budget]
    for i, seed in enumerate(trainer.seeds):
        if int(trainer.stopped[i]) == budget and not bool(trainer.diverged[i]):
            trainer.active[i] = True
            trainer.stopped[i] = -1
        if bool(trainer.active[i]):
            mine = sorted((r for r in trainer.rows if r["seed"] == seed), key=lambda r: r["step"])
            trainer.good_since[i] = _streak_start(mine, trainer.config.grok_threshold)
    if budget not in trainer.snap_steps:
        trainer.snapshots.pop(budget, None)


def _checkpoint_at_budget(old: TrainConfig, new: TrainConfig, ckpt_dir: Path, seeds: list[int]) -> None:
    """Step 2 of the module doc for one unit."""
    device = resolve_device(new.device)
    task, ratio = build_task(new)
    trainer = Trainer(new, task, seeds, ratio, device, hooks=hooks_for(new, task))
    unit = unit_name(seeds)
    restore(final_path(ckpt_dir, unit), trainer, run_identity(old, seeds), final=True)
    _rewind_final(trainer, old.steps)
    save_step(ckpt_dir, unit, run_identity(new, seeds), old.steps, *trainer.state_dict())


def _final_budget(path: Path) -> int | None:
    """The step budget of the run that wrote a final checkpoint (None if it cannot be read)."""
    try:
        _, meta = load_checkpoint(path)
        return int(meta["run"]["config"]["steps"])
    except (StoreError, KeyError, TypeError, ValueError):
        return None


def _archive(run_dir: Path, config: TrainConfig) -> None:
    """Step 3's move: the checkpoints of an earlier budget T (its finals, and its periodic ones before T)
    into checkpoints/budget-<T>/, and summary.json away. A no-op once done."""
    ckpt_dir = run_dir / "checkpoints"
    for final in sorted(ckpt_dir.glob("*-final.safetensors")):
        budget = _final_budget(final)
        if budget is None or budget >= config.steps:
            continue
        keep = ckpt_dir / f"budget-{budget}"
        keep.mkdir(exist_ok=True)
        unit = final.name.removesuffix("-final.safetensors")
        for f in sorted(ckpt_dir.glob(f"{unit}-step*.safetensors")):
            if int(f.stem.rsplit("-step", 1)[1]) < budget:
                f.replace(keep / f.name)
        final.replace(keep / final.name)
        (run_dir / "summary.json").unlink(missing_ok=True)


def extend_run(run_dir: str | Path, steps: int, figures: bool = False) -> RunResult:
    """Train the run in `run_dir` on to a budget of `steps` (module doc); returns the extended run."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    if steps < config.steps:
        raise RunError(f"{run_dir} was trained to {config.steps} steps; cannot shorten it to {steps}")
    if steps > config.steps:
        old = config
        threads = torch.get_num_threads()
        try:
            train(old, run_dir, resume=True, figures=False)          # 1: finished at T (no-op if it is)
        finally:
            torch.set_num_threads(threads)
        config = TrainConfig.model_validate({**old.model_dump(), "steps": steps})
        layout = units(config, resolve_device(config.device))
        for seeds in layout:
            _checkpoint_at_budget(old, config, run_dir / "checkpoints", seeds)
        saved = read_yaml(run_dir / "config.yaml")
        saved["config"] = config.model_dump(mode="json")
        saved["budgets"] = [*budgets(run_dir), old.steps]
        write_yaml(run_dir / "config.yaml", saved)
    _archive(run_dir, config)                                          # 3 (a no-op once done)
    return train(config, run_dir, resume=True, figures=figures)
