"""`li2.train(config)`: build the task, train every model, and keep a complete run folder.

Run folder:
    config.yaml        fully resolved configuration (+ versions, resolved ratio, device)
    metrics.parquet    one row per model per evaluation
    checkpoints/       <unit>-step<N>.safetensors (periodic, resumable) and <unit>-final.safetensors
    summary.json       {"models": [{seed, final_train_acc, final_test_acc, grok_step, memorize_step,
                                    wall_seconds, status}, ...]}
    curves.png         accuracy and loss against step (log-x), grok step marked
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from . import __version__
from .config import TrainConfig
from .groups import Group, get_group
from .store import (StoreError, clean_leftovers, is_leftover, load_checkpoint, read_yaml, save_checkpoint, write_json,
                    write_parquet, write_yaml)
from .task import Task, make_task, train_size
from .trainer import DiagnosticsHook, Trainer, UnitResult, resolve_device


class RunError(ValueError):
    """A run cannot start or continue; the message is one line for the user."""


@dataclass
class RunResult:
    """What `train` returns: everything also written to `out_dir` (when there is one)."""

    config: dict
    metrics: pd.DataFrame
    summary: dict
    params: dict[int, dict[str, torch.Tensor]]     # seed → final tensors (W, V, …) without the model axis
    out_dir: Path | None
    snapshots: dict[int, dict[int, torch.Tensor]] = field(default_factory=dict)   # seed → step → W (kM, K)


# -- task ------------------------------------------------------------------------------------------

def resolve_group(config: TrainConfig) -> Group:
    from . import groups
    if config.expression is not None:
        return groups.expression_task(config.expression, config.modulus)
    if config.group_table is not None:
        return groups.load_group_table(config.group_table)
    return get_group(config.group)


def build_task(config: TrainConfig) -> tuple[Task, float]:
    group = resolve_group(config)
    task = make_task(group, config.operands)
    ratio = config.resolved_ratio(group.order)
    return task, ratio


# -- summary -----------------------------------------------------------------------------------------

def grok_step(steps: list[int], test_acc: list[float], threshold: float = 0.95) -> int | None:
    """First evaluated step from which test accuracy stays ≥ threshold to the end (None if never)."""
    first = None
    for s, a in zip(steps, test_acc):
        if a is not None and not math.isnan(a) and a >= threshold:
            first = s if first is None else first
        else:
            first = None
    return first


def first_step(steps: list[int], values: list[float], threshold: float) -> int | None:
    for s, v in zip(steps, values):
        if v is not None and not math.isnan(v) and v >= threshold:
            return s
    return None


def _clean(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def summarise(metrics: pd.DataFrame, units: list[UnitResult], threshold: float) -> dict:
    models = []
    for unit in units:
        for i, seed in enumerate(unit.seeds):
            m = metrics[metrics.seed == seed].sort_values("step")
            steps = m.step.astype(int).tolist()
            models.append({
                "seed": int(seed),
                "final_train_acc": _clean(float(m.train_acc.iloc[-1])),
                "final_test_acc": _clean(float(m.test_acc.iloc[-1])),
                "grok_step": grok_step(steps, m.test_acc.tolist(), threshold),
                "memorize_step": first_step(steps, m.train_acc.tolist(), 0.99),
                "wall_seconds": round(float(unit.wall_seconds[i]), 3),
                "status": unit.status[i],
                "steps_trained": int(unit.stopped_step[i]),
            })
    return {"models": models}


# -- run folder ----------------------------------------------------------------------------------------

def resolved_config(config: TrainConfig, task: Task, ratio: float, device: torch.device) -> dict:
    return {
        "config": config.model_dump(mode="json"),
        "resolved": {"group": task.group.name, "order": task.order, "is_group": task.group.is_group,
                     "train_ratio": ratio, "num_samples": task.num_samples,
                     "train_size": train_size(task.num_samples, ratio), "device": str(device),
                     "eval_steps": "auto" if config.eval_every is None else config.eval_every},
        "versions": {"li2": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }


def default_out_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / stamp


def prepare_out_dir(out: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse an --out that holds something else; never touch what is already there."""
    cfg_path = out / "config.yaml"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder; choose another --out")
    if out.exists() and any(not is_leftover(p.name) for p in out.iterdir()):   # a crash's leftovers: empty
        if not cfg_path.exists():
            raise RunError(f"--out {out} is not empty and holds no li2 run; choose an empty or new folder")
        try:
            saved = read_yaml(cfg_path)["config"]
        except (StoreError, KeyError, TypeError):
            raise RunError(f"--out {out} holds an unreadable config.yaml; choose another --out") from None
        if saved != config.model_dump(mode="json"):
            raise RunError(f"--out {out} already holds a different run; choose another --out")
        if not resume:
            raise RunError(f"--out {out} already holds this run; pass --resume {out} to continue it, "
                           f"or choose another --out")
    elif resume:
        raise RunError(f"nothing to resume in {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".li2-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None


def load_config(run_dir: Path) -> TrainConfig:
    try:
        return TrainConfig.model_validate(read_yaml(run_dir / "config.yaml")["config"])
    except (KeyError, TypeError):
        raise RunError(f"{run_dir}/config.yaml is not an li2 run config") from None
    except StoreError as e:
        raise RunError(str(e)) from None


def _units(config: TrainConfig, device: torch.device) -> list[list[int]]:
    mode = config.execution
    if mode == "auto":
        # Stacking pays on a GPU; on a CPU it is cache-bound, so models run one after another
        # (with all threads: results then equal those of single-seed runs exactly).
        mode = "stack" if device.type == "cuda" else "sequential"
    return [config.seeds] if mode == "stack" else [[s] for s in config.seeds]


def _unit_name(seeds: list[int]) -> str:
    return f"seed{seeds[0]}" if len(seeds) == 1 else f"seeds{seeds[0]}-{seeds[-1]}x{len(seeds)}"


def _latest_checkpoint(ckpt_dir: Path, unit: str) -> Path | None:
    found = sorted(ckpt_dir.glob(f"{unit}-step*.safetensors"))
    return found[-1] if found else None


def train_unit(config: TrainConfig, task: Task, ratio: float, device: torch.device, seeds: list[int],
               ckpt_dir: Path | None, hooks: tuple[DiagnosticsHook, ...] = (),
               progress: Callable[[int], None] | None = None,
               lr: list[float] | None = None, weight_decay: list[float] | None = None) -> UnitResult:
    """Train one stack of models, resuming from its checkpoints in `ckpt_dir` when present."""
    trainer = Trainer(config, task, seeds, ratio, device, lr=lr, weight_decay=weight_decay, hooks=hooks)
    unit = _unit_name(seeds)
    identity = _identity(config, seeds, lr, weight_decay)
    save = None
    if ckpt_dir is not None:
        final = ckpt_dir / f"{unit}-final.safetensors"
        if final.exists():
            meta = _restore(final, trainer, identity, final=True)
            if progress is not None:
                progress(trainer.step * len(seeds))
            return UnitResult(seeds, trainer.rows, {k: v.cpu() for k, v in trainer.params.items()},
                              meta["status"], meta["wall_seconds"], meta["stopped_step"], dict(trainer.snapshots))
        latest = _latest_checkpoint(ckpt_dir, unit)
        if latest is not None:
            _restore(latest, trainer, identity)
            if progress is not None:
                progress(trainer.step * len(seeds))

        def save(step, tensors, meta):
            save_checkpoint(ckpt_dir / f"{unit}-step{step:08d}.safetensors", tensors, {**meta, "run": identity})

    result = trainer.run(progress=progress, checkpoint=save)
    if ckpt_dir is not None:
        meta = trainer.state_meta()
        meta.update(status=result.status, wall_seconds=result.wall_seconds, stopped_step=result.stopped_step,
                    run=identity)
        save_checkpoint(ckpt_dir / f"{unit}-final.safetensors", trainer.state_tensors(), meta)
    return result


def _identity(config: TrainConfig, seeds: list[int], lr: list[float] | None = None,
              weight_decay: list[float] | None = None) -> dict:
    """What a checkpoint must have been written by to be resumed here (threads/device may change)."""
    cfg = {k: v for k, v in config.model_dump(mode="json").items() if k not in ("threads", "device")}
    per_model = lambda vals, default: [float(v) for v in (vals if vals is not None else [default] * len(seeds))]
    return {"config": cfg, "seeds": [int(s) for s in seeds], "lr": per_model(lr, config.lr),
            "weight_decay": per_model(weight_decay, config.weight_decay)}


def _verify(path: Path, identity: dict, shapes: dict[str, tuple[int, ...]] | None = None):
    """Load a checkpoint and check that it belongs to this very run (StoreError otherwise)."""
    tensors, meta = load_checkpoint(path, shapes)
    saved = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    if saved.get("seeds") != identity["seeds"]:
        raise StoreError(f"checkpoint {path} holds seeds {saved.get('seeds', meta.get('seeds'))}, "
                         f"this run has {identity['seeds']}")
    if saved != identity:
        theirs = saved.get("config") if isinstance(saved.get("config"), dict) else {}
        differ = [k for k, v in identity["config"].items() if theirs.get(k) != v]
        differ += [k for k in ("lr", "weight_decay") if saved.get(k) != identity[k] and k not in differ]
        raise StoreError(f"checkpoint {path} was written by another configuration "
                         f"(differs in {', '.join(differ) or 'its metadata'}); refusing to resume from it")
    return tensors, meta


def _restore(path: Path, trainer: Trainer, identity: dict, final: bool = False) -> dict:
    """Verify a checkpoint against this run and load it into `trainer`; RunError on any mismatch."""
    shapes = {k: tuple(v.shape) for k, v in trainer.state_tensors().items() if not k.startswith("metric.")}
    try:
        tensors, meta = _verify(path, identity, shapes)
        trainer.load_state(tensors, meta)
        for key in ("status", "wall_seconds", "stopped_step") if final else ():
            if not isinstance(meta.get(key), list) or len(meta[key]) != len(trainer.seeds):
                raise KeyError(key)
    except StoreError as e:
        raise RunError(str(e)) from None
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        raise RunError(f"checkpoint {path} does not fit this run ({e.__class__.__name__}: "
                       f"{str(e).splitlines()[0][:80] if str(e) else ''})") from None
    return meta


def verify_checkpoints(config: TrainConfig, ckpt_dir: Path, device: torch.device) -> None:
    """Check every checkpoint a resume would start from before anything is trained or written."""
    for seeds in _units(config, device):
        unit = _unit_name(seeds)
        final = ckpt_dir / f"{unit}-final.safetensors"
        path = final if final.exists() else _latest_checkpoint(ckpt_dir, unit)
        if path is not None:
            try:
                _verify(path, _identity(config, seeds))
            except StoreError as e:
                raise RunError(str(e)) from None


def metrics_frame(units: list[UnitResult]) -> pd.DataFrame:
    rows = [r for u in units for r in u.rows]
    df = pd.DataFrame(rows)
    df["step"] = df["step"].astype("int64")
    df["seed"] = df["seed"].astype("int64")
    return df.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)


def train(config: TrainConfig | dict | None = None, out: str | Path | None = None, *, resume: bool = False,
          write: bool = True, progress: Callable[[int], None] | None = None,
          hooks: tuple[DiagnosticsHook, ...] | None = None, figures: bool = True, **overrides) -> RunResult:
    """Train the models of `config` and return their metrics, summary and final weights.

    `li2.train(steps=300, seeds=[0, 1])` works too.  With write=False nothing touches the disk.
    `progress(n)` is called after every n model-steps (the CLI hangs a progress bar on it).
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif isinstance(config, dict):
        config = TrainConfig(**{**config, **overrides})
    elif overrides:
        config = config.model_copy(update=overrides)
        config = TrainConfig.model_validate(config.model_dump())
    if config.top_layer == "ridge" and config.loss != "mse":
        raise RunError("--top-layer ridge needs --loss mse (the ridge solution is the MSE optimum)")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    task, ratio = build_task(config)
    if hooks is None:
        from .diagnostics import hooks_for
        hooks = hooks_for(config, task)
    out_dir = None
    ckpt_dir = None
    if write:
        out_dir = Path(out) if out is not None else default_out_dir()
        prepare_out_dir(out_dir, config, resume)
        clean_leftovers(out_dir)
        if not (out_dir / "config.yaml").exists():
            write_yaml(out_dir / "config.yaml", resolved_config(config, task, ratio, device))
        ckpt_dir = out_dir / "checkpoints"
        verify_checkpoints(config, ckpt_dir, device)
    units = []
    for seeds in _units(config, device):
        units.append(train_unit(config, task, ratio, device, seeds, ckpt_dir, hooks, progress))
    metrics = metrics_frame(units)
    summary = summarise(metrics, units, config.grok_threshold)
    from .stages import annotate_summary
    annotate_summary(summary, metrics, config)
    from .diagnose import annotate_outcomes
    annotate_outcomes(summary, metrics, config, task.order)
    params = {seed: {k: v[i] for k, v in u.params.items()} for u in units for i, seed in enumerate(u.seeds)}
    snapshots = {seed: {step: w[i] for step, w in sorted(u.snapshots.items())}
                 for u in units for i, seed in enumerate(u.seeds)}
    if write:
        write_parquet(out_dir / "metrics.parquet", metrics)
        write_json(out_dir / "summary.json", summary)
        if figures:
            from .figures import run_figures
            run_figures(out_dir, metrics, summary, config, task, snapshots)
    return RunResult(read_yaml(out_dir / "config.yaml") if write else
                     resolved_config(config, task, ratio, device), metrics, summary, params, out_dir, snapshots)


def read_run_tables(run_dir: str | Path) -> tuple[dict, pd.DataFrame, dict]:
    """(config.yaml, metrics.parquet, summary.json) of a finished run folder; RunError otherwise."""
    from .store import read_json, read_parquet
    run_dir = Path(run_dir)
    try:
        return (read_yaml(run_dir / "config.yaml"), read_parquet(run_dir / "metrics.parquet"),
                read_json(run_dir / "summary.json"))
    except StoreError as e:
        raise RunError(f"{run_dir} is not a finished li2 run: {e}") from None


def open_run(run_dir: str | Path) -> RunResult:
    """Load a finished run folder (config, metrics, summary; weights from the final checkpoints)."""
    run_dir = Path(run_dir)
    cfg, metrics, summary = read_run_tables(run_dir)
    params: dict[int, dict[str, torch.Tensor]] = {}
    snapshots: dict[int, dict[int, torch.Tensor]] = {}
    for f in sorted((run_dir / "checkpoints").glob("*-final.safetensors")):
        try:
            tensors, meta = load_checkpoint(f)
        except StoreError as e:
            raise RunError(str(e)) from None
        for i, seed in enumerate(meta["seeds"]):
            params[int(seed)] = {k.split(".", 1)[1]: v[i] for k, v in tensors.items() if k.startswith("param.")}
            snapshots[int(seed)] = {int(k.split(".", 1)[1]): v[i] for k, v in sorted(tensors.items())
                                    if k.startswith("snapshot.")}
    return RunResult(cfg, metrics, summary, params, run_dir, snapshots)

