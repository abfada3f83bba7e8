"""`li2.train(config)`: build the task, train every model, and keep a complete run folder
(layout in li2.runs.folder).

Models of a config are trained in units (`units`): one stack on a GPU, one model after another on a
CPU. Each unit resumes from its own checkpoints, so an interrupted run continues bit-exactly.
While a run writes its folder it holds the folder's lock (`run_lock`); every evaluation reaches the
run's loggers at once (metrics.jsonl always, TensorBoard / W&B on request: li2.runs.loggers).
"""
from __future__ import annotations

import math
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch

from ..config import TrainConfig, build_task, warn_capacity
from ..engine.diagnostics import hooks_for
from ..engine.networks import embedding, embedding_blocks
from ..engine.trainer import DiagnosticsHook, Trainer, UnitResult, resolve_device
from ..store import clean_leftovers, read_yaml, write_json, write_parquet, write_yaml
from ..task import Task
from ..theory.layers import layer_timing
from ..theory.outcomes import annotate_outcomes, first_step, grok_step
from ..theory.spectra import components_for, embedding_spectrum
from ..theory.stages import annotate_summary
from ..views.figures import run_figures
from .checkpoints import latest_checkpoint, restore, run_identity, save_final, save_step, unit_name, verify_units
from .folder import RunError, RunResult, default_out_dir, prepare_out_dir, resolved_config, run_lock
from .loggers import RunLog, check_loggers


def units(config: TrainConfig, device: torch.device) -> list[list[int]]:
    """The seeds of each unit: all in one stack, or one unit per seed."""
    mode = config.execution
    if mode == "auto":
        # Stacking pays on a GPU; on a CPU it is cache-bound, so models run one after another
        # (with all threads: results then equal those of single-seed runs exactly).
        mode = "stack" if device.type == "cuda" else "sequential"
    return [config.seeds] if mode == "stack" else [[s] for s in config.seeds]


def train_unit(config: TrainConfig, task: Task, ratio: float, device: torch.device, seeds: list[int],
               ckpt_dir: Path | None, hooks: tuple[DiagnosticsHook, ...] = (),
               progress: Callable[[int], None] | None = None,
               lr: list[float] | None = None, weight_decay: list[float] | None = None,
               log: RunLog | None = None) -> UnitResult:
    """Train one stack of models, resuming from its checkpoints in `ckpt_dir` when present; `log`
    gets the rows a checkpoint restored (`unit_started`), then every evaluation's rows."""
    trainer = Trainer(config, task, seeds, ratio, device, lr=lr, weight_decay=weight_decay, hooks=hooks)
    evaluated = log.evaluated if log is not None else None
    if ckpt_dir is None:
        if log is not None:
            log.unit_started(seeds, [])
        return trainer.run(progress=progress, evaluated=evaluated)
    unit = unit_name(seeds)
    identity = run_identity(config, seeds, lr, weight_decay)
    latest = latest_checkpoint(ckpt_dir, unit)
    final = latest is not None and latest.name.endswith("-final.safetensors")
    if latest is not None:
        restore(latest, trainer, identity, final=final)
        if progress is not None:
            progress(trainer.step * len(seeds))
    if log is not None:
        log.unit_started(seeds, list(trainer.rows))
    if final:
        return trainer.result()
    def save(step: int, tensors: dict, meta: dict) -> None:
        save_step(ckpt_dir, unit, identity, step, tensors, meta)

    result = trainer.run(progress=progress, evaluated=evaluated, checkpoint=save)
    save_final(ckpt_dir, unit, identity, trainer)
    return result


def metrics_frame(unit_results: list[UnitResult]) -> pd.DataFrame:
    rows = [r for u in unit_results for r in u.rows]
    df = pd.DataFrame(rows)
    df["step"] = df["step"].astype("int64")
    df["seed"] = df["seed"].astype("int64")
    return df.sort_values(["seed", "step"], kind="stable").reset_index(drop=True)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarise(metrics: pd.DataFrame, unit_results: list[UnitResult], threshold: float) -> dict:
    """summary.json's per-model entries before stages and outcomes are added."""
    models = []
    for unit in unit_results:
        for i, seed in enumerate(unit.seeds):
            m = metrics[metrics.seed == seed].sort_values("step")
            steps = m.step.astype(int).tolist()
            models.append({
                "seed": int(seed),
                "final_train_acc": _finite_or_none(float(m.train_acc.iloc[-1])),
                "final_test_acc": _finite_or_none(float(m.test_acc.iloc[-1])),
                "grok_step": grok_step(steps, m.test_acc.tolist(), threshold),
                "memorize_step": first_step(steps, m.train_acc.tolist(), 0.99),
                "wall_seconds": round(float(unit.wall_seconds[i]), 3),
                "status": unit.status[i],
                "steps_trained": int(unit.stopped_step[i]),
            })
    return {"models": models}


def annotate_architecture(summary: dict, metrics: pd.DataFrame, params: dict, config: TrainConfig,
                          task: Task) -> None:
    """Add to every model of summary.json "embedding" (the final embedding's key components:
    li2.theory.spectra.embedding_spectrum; groups only) and, for the deep networks, "layers" (which layer
    moved first: li2.theory.layers.layer_timing)."""
    components = components_for(task.group)
    for model in summary["models"]:
        seed = model["seed"]
        if components is not None and seed in params:
            E = embedding(config, params[seed], task.order)
            model["embedding"] = embedding_spectrum(E, components, embedding_blocks(config, task.operands)).records()[0]
        if config.model != "mlp2":
            timing = layer_timing(metrics[metrics.seed == seed])
            if timing is not None:
                model["layers"] = timing


def _config_of(config: TrainConfig | dict | None, overrides: dict) -> TrainConfig:
    if config is None:
        return TrainConfig(**overrides)
    if isinstance(config, dict):
        return TrainConfig(**{**config, **overrides})
    if overrides:
        return TrainConfig.model_validate({**config.model_dump(), **overrides})
    return config


@contextmanager
def deterministic_algorithms(on: bool) -> Iterator[None]:
    """`--deterministic`: torch.use_deterministic_algorithms while training, restored after.

    On CUDA, index_add_ / scatter_add_ (the hand-written backward of the one-hot layer) then avoid
    float atomics, and cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 (set here unless already set,
    before the first cuBLAS call of the process). CPU kernels are deterministic already."""
    if not on:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train(config: TrainConfig | dict | None = None, out: str | Path | None = None, *, resume: bool = False,
          write: bool = True, progress: Callable[[int], None] | None = None,
          hooks: tuple[DiagnosticsHook, ...] | None = None, figures: bool = True,
          log: Sequence[str] = (), on_eval: Callable[[list[dict]], None] | None = None,
          **overrides) -> RunResult:
    """Train the models of `config` and return their metrics, summary and final weights.

    `li2.train(steps=300, seeds=[0, 1])` works too.  With write=False nothing touches the disk.
    `progress(n)` is called after every n model-steps (the CLI hangs a progress bar on it) and
    `on_eval(rows)` with the metrics rows of every evaluation as it happens. `log` names extra
    loggers of the run folder: "tensorboard", "wandb" (metrics.jsonl is always written).
    """
    config = _config_of(config, overrides)
    if config.top_layer == "ridge" and config.loss != "mse":
        raise RunError("--top-layer ridge needs --loss mse (the ridge solution is the MSE optimum)")
    log = check_loggers(log)
    if log and not write:
        raise RunError(f"--log {log[0]} needs a run folder to write to (write=True)")
    device = resolve_device(config.device)
    task, ratio = build_task(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if hooks is None:
        hooks = hooks_for(config, task)
    layout = units(config, device)
    with ExitStack() as stack:
        out_dir = ckpt_dir = run_log = None
        if write:
            out_dir = Path(out) if out is not None else default_out_dir()
            stack.enter_context(run_lock(out_dir, resume))
            prepare_out_dir(out_dir, config, resume)
            clean_leftovers(out_dir)
            if not (out_dir / "config.yaml").exists():
                write_yaml(out_dir / "config.yaml", resolved_config(config, task, ratio, device))
            ckpt_dir = out_dir / "checkpoints"
            verify_units(config, ckpt_dir, layout)
            run_log = RunLog.open(out_dir, log, config.model_dump(mode="json"))
            stack.callback(run_log.close)
        if on_eval is not None:
            run_log = _Tee(run_log, on_eval)
        warn_capacity(config, task, ratio)
        stack.enter_context(deterministic_algorithms(config.deterministic))
        results = [train_unit(config, task, ratio, device, seeds, ckpt_dir, hooks, progress, log=run_log)
                   for seeds in layout]
        metrics = metrics_frame(results)
        summary = summarise(metrics, results, config.grok_threshold)
        annotate_summary(summary, metrics, config)
        annotate_outcomes(summary, metrics, config, task.order)
        params = {seed: {k: v[i] for k, v in u.params.items()} for u in results for i, seed in enumerate(u.seeds)}
        annotate_architecture(summary, metrics, params, config, task)
        snapshots = {seed: {step: w[i] for step, w in sorted(u.snapshots.items())}
                     for u in results for i, seed in enumerate(u.seeds)}
        if write:
            write_parquet(out_dir / "metrics.parquet", metrics)
            write_json(out_dir / "summary.json", summary)
            drawn = run_figures(out_dir, metrics, summary, config, task, snapshots) if figures else []
            run_log.finished(summary, drawn)
    return RunResult(read_yaml(out_dir / "config.yaml") if write else
                     resolved_config(config, task, ratio, device), metrics, summary, params, out_dir, snapshots)


class _Tee:
    """The run's loggers (or none) plus the caller's `on_eval`, seen by train_unit as one log."""

    def __init__(self, log: RunLog | None, on_eval: Callable[[list[dict]], None]):
        self.log, self.on_eval = log, on_eval

    def unit_started(self, seeds: list[int], rows: list[dict]) -> None:
        if self.log is not None:
            self.log.unit_started(seeds, rows)

    def evaluated(self, rows: list[dict]) -> None:
        if self.log is not None:
            self.log.evaluated(rows)
        self.on_eval(rows)

    def finished(self, summary: dict, figures) -> None:
        if self.log is not None:
            self.log.finished(summary, figures)
