"""Parameter sweeps: a YAML grid of training runs, one run folder each, one results table.

Spec format (YAML, read with `yaml.safe_load`; every key is checked before anything runs):

    name: phase-quick                 # optional label
    base:                             # options shared by every run: any TrainConfig field, or `seed`
      width: 512
      steps: 2000
    grid:                             # options that vary; the runs are the cartesian product,
      group: [Z23, Z31]               #   first key slowest, in the order written
      train_ratio: {critical_multiple: [0.5, 1.0, 2.0]}
      seed: {range: [0, 3]}
    figures: false                    # per-run curves.png (default false: it costs more than a small run)

A grid entry is a list of values or a mapping with exactly one generator:

    {range: [start, stop]} or [start, stop, step]   integers, stop excluded (as Python's range)
    {linspace: [a, b, n]}             n evenly spaced numbers from a to b, both included
    {geomspace: [a, b, n]}            n numbers from a to b, both included, evenly spaced in log
    {logspace: [a, b, n]}             10^a … 10^b (numpy's convention: a and b are exponents)
    {critical_multiple: VALUES, c: C} train_ratio only: p = m·C·ln M / M for each multiple m, per group,
                                      capped at 1 (C defaults to 2.7482; VALUES is a list or a generator)

Each run trains one seed (`seed`, default 0, stands for TrainConfig's `seeds`) with `threads: 1`
unless base sets threads (the local executor runs one single-threaded run per core). Points that
resolve to the same configuration (capping at p = 1 can do that) are trained once.

Output folder DIR:

    sweep.yaml        the spec; a DIR holding a different sweep is refused
    runs/<id>/        an ordinary li2 run folder; <id> = first 12 hex digits of the sha256 of the
                      run's resolved TrainConfig (sorted-key JSON), so ids survive grid edits
    results.parquet   a row per finished run, in grid order, rewritten atomically after every run
    .lock             held while a sweep runs, so two sweeps never share a DIR

results.parquet columns: run_index (grid order), run_id, seed, every other TrainConfig field
(train_ratio resolved to a number), order (group order M), ratio_over_critical (p / 2.7482·ln M/M),
steps_budget, the run's summary fields (final_train_acc, final_test_acc, grok_step, memorize_step,
steps_trained, wall_seconds, status, and any others, non-scalars as JSON), and error. A run that
raised has status "failed" and its message in `error`; the sweep goes on.

Rerunning a sweep skips runs whose folder has summary.json, resumes started ones from their
checkpoints (bit-exact) and retries failed ones, so the final table equals an uninterrupted
sweep's except for wall-clock columns (WALL_COLUMNS).

Executors: "local" runs each run as one task of a spawn-context process pool; "ray" sends the same
function to Ray (a cluster at `address`, or a local instance); the driver alone writes the table.
With a remote Ray cluster DIR must be on a file system every node sees.
"""
from __future__ import annotations

import difflib
import fcntl
import hashlib
import itertools
import json
import math
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictStr, ValidationError

from .config import TrainConfig
from .store import StoreError, clean_leftovers, read_json, read_yaml, write_json, write_parquet, write_text
from .task import REFERENCE_C, critical_ratio

GENERATORS = ("range", "linspace", "geomspace", "logspace", "critical_multiple")
WALL_COLUMNS = ("wall_seconds",)           # differ between otherwise identical sweeps
MAX_RUNS = 100_000
# Known summary fields and their column types; nullable ints so a never-grokked run stays an int column.
SUMMARY_TYPES = {"final_train_acc": "float64", "final_test_acc": "float64", "grok_step": "Int64",
                 "memorize_step": "Int64", "steps_trained": "Int64", "wall_seconds": "float64"}


class SweepError(ValueError):
    """A sweep spec or folder is unusable; the message names the field and is one line."""


# -- spec ----------------------------------------------------------------------------------------------

class SweepSpec(BaseModel):
    """The parsed YAML; `expand` turns it into runs and does the semantic checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr | None = None
    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)
    figures: StrictBool = False
    _source: str | None = PrivateAttr(None)   # the YAML text as written, for sweep.yaml

    @classmethod
    def parse(cls, obj: Any) -> "SweepSpec":
        if obj is None:
            raise SweepError("the sweep spec is empty: give at least a grid")
        if not isinstance(obj, dict):
            raise SweepError("the sweep spec must be a mapping with keys name, base, grid, figures")
        try:
            spec = cls.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ()))
            if err.get("type") == "extra_forbidden":
                raise SweepError(f"{where}: unknown key '{where}' (a spec has name, base, grid, figures)") from None
            raise SweepError(f"{where}: {err.get('msg', 'invalid value')}") from None
        expand(spec)  # validate everything up front
        return spec

    @classmethod
    def from_yaml(cls, text: str) -> "SweepSpec":
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SweepError(f"the sweep spec is not valid YAML: {' '.join(str(e).split())}") from None
        spec = cls.parse(obj)
        spec._source = text
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "SweepSpec":
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise SweepError(f"sweep spec {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SweepError(f"cannot read sweep spec {path}: {e}") from None
        return cls.from_yaml(text)

    def to_yaml(self) -> str:
        return self._source if self._source is not None else yaml.safe_dump(self.model_dump(), sort_keys=False)


@dataclass(frozen=True)
class CriticalMultiple:
    """A train_ratio given as m·c·ln M / M; resolved once the run's group order is known."""

    multiple: float
    c: float


@dataclass(frozen=True)
class Run:
    index: int                # position in grid order
    run_id: str
    config: TrainConfig
    order: int
    ratio: float              # resolved train ratio


def _tidy(x: float) -> float:
    # 12 significant digits: 0.1·3 gives 0.3, not 0.30000000000000004, in configs and run ids
    return float(f"{float(x):.12g}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _generate(where: str, key: str, gen: dict) -> list:
    kinds = [k for k in gen if k in GENERATORS]
    for k in gen:
        if k not in GENERATORS and not (k == "c" and "critical_multiple" in gen):
            raise SweepError(f"{where}: unknown generator '{k}' (use one of {', '.join(GENERATORS)})")
    if len(kinds) != 1:
        raise SweepError(f"{where}: give exactly one generator ({', '.join(GENERATORS)}), got {len(kinds)}")
    kind = kinds[0]
    args = gen[kind]
    here = f"{where}.{kind}"
    if kind == "critical_multiple":
        if key != "train_ratio":
            raise SweepError(f"{here}: only train_ratio can be given as multiples of the critical ratio")
        c = gen.get("c", REFERENCE_C)
        if not _is_number(c) or c <= 0:
            raise SweepError(f"{where}.c: must be a positive number, got {c!r}")
        mults = _axis_values(here, key, args, nested=True)
        for m in mults:
            if not _is_number(m) or m <= 0:
                raise SweepError(f"{here}: multiples must be positive numbers, got {m!r}")
        return [CriticalMultiple(_tidy(m), float(c)) for m in mults]
    if not isinstance(args, list):
        raise SweepError(f"{here}: give a list, e.g. {{{kind}: [0, 1, 5]}}")
    if kind == "range":
        if len(args) not in (2, 3) or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise SweepError(f"{here}: give [start, stop] or [start, stop, step] as integers, got {args}")
        if len(args) == 3 and args[2] == 0:
            raise SweepError(f"{here}: step must not be 0")
        if len(range(*args)) > MAX_RUNS:   # check before building the list: [0, 10**12] must not eat the RAM
            raise SweepError(f"{here}: range {args} has {len(range(*args))} values, more than {MAX_RUNS}")
        values = list(range(*args))
        if not values:
            raise SweepError(f"{here}: range {args} is empty (stop is excluded)")
        return values
    if len(args) != 3 or not (_is_number(args[0]) and _is_number(args[1])) \
            or not isinstance(args[2], int) or isinstance(args[2], bool):
        raise SweepError(f"{here}: give [a, b, n] with numbers a, b and an integer n, got {args}")
    a, b, n = args
    if not 1 <= n <= MAX_RUNS:
        raise SweepError(f"{here}: n must be between 1 and {MAX_RUNS}, got {n}")
    if kind == "geomspace":
        if a <= 0 or b <= 0:
            raise SweepError(f"{here}: a and b must be positive, got {a}, {b}")
        values = np.geomspace(a, b, n)
    elif kind == "logspace":
        if max(a, b) > 300:
            raise SweepError(f"{here}: exponents {a}, {b} are too large (10^a overflows)")
        values = np.logspace(a, b, n)
    else:
        values = np.linspace(a, b, n)
    return [_tidy(v) for v in values]


def _axis_values(where: str, key: str, value, nested: bool = False) -> list:
    """The values one grid entry takes (generators expanded), checked for shape and repeats."""
    if isinstance(value, list):
        values = value
        if not values:
            raise SweepError(f"{where}: empty list of values")
    elif isinstance(value, dict):
        values = _generate(where, key, value)
    else:
        hint = "" if nested else "; a single value belongs in base"
        raise SweepError(f"{where}: give a list of values or a generator mapping "
                         f"({', '.join(GENERATORS)}), got {value!r}{hint}")
    seen = set()
    for v in values:
        if isinstance(v, (list, dict)):
            raise SweepError(f"{where}: values must be single numbers, strings or booleans, got {v!r}")
        tag = (type(v).__name__, repr(v))
        if tag in seen:
            raise SweepError(f"{where}: value {getattr(v, 'multiple', v)!r} appears twice")
        seen.add(tag)
    return values


def _check_key(key: str, where: str) -> None:
    if not isinstance(key, str):
        raise SweepError(f"{where}: option names must be strings, got {key!r}")
    if key == "seeds":
        raise SweepError(f"{where}.seeds: a sweep run trains one seed; vary `seed` in the grid instead")
    if key != "seed" and key not in TrainConfig.model_fields:
        close = difflib.get_close_matches(key, [*TrainConfig.model_fields, "seed"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SweepError(f"{where}.{key}: unknown option '{key}'{hint}")


def _config_error(e: ValidationError, point: dict, grid_keys: set[str]) -> SweepError:
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    field = "seed" if loc[:1] == ["seeds"] else (loc[0] if loc else "")
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if not field:
        return SweepError(f"grid point {point}: {msg}")
    if field in grid_keys:
        return SweepError(f"grid.{field}: value {point[field]!r}: {msg}")
    return SweepError(f"base.{field}: {msg}")


def expand(spec: SweepSpec) -> list[Run]:
    """Every run of the sweep in grid order; SweepError naming the field for anything invalid."""
    from .run import resolve_group

    for key in spec.base:
        _check_key(key, "base")
    if not spec.grid:
        raise SweepError("grid: empty; vary at least one option (a single run is `li2 train`)")
    axes = []
    for key, value in spec.grid.items():
        _check_key(key, "grid")
        if key in spec.base:
            raise SweepError(f"grid.{key}: also set in base; set it in one place")
        axes.append(_axis_values(f"grid.{key}", key, value))
    total = math.prod(len(v) for v in axes)
    if total > MAX_RUNS:
        raise SweepError(f"grid: {total} runs is more than {MAX_RUNS}; split the sweep")
    keys = list(spec.grid)
    grid_keys = set(keys)
    orders: dict[tuple, int] = {}
    runs: list[Run] = []
    seen: set[str] = set()
    for combo in itertools.product(*axes):
        point = dict(zip(keys, combo))
        options = {**spec.base, **point}
        seed = options.pop("seed", 0)
        multiple = options.get("train_ratio")
        if isinstance(multiple, CriticalMultiple):
            options.pop("train_ratio")
        options.setdefault("threads", 1)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            where = "grid" if "seed" in grid_keys else "base"
            raise SweepError(f"{where}.seed: must be an integer >= 0, got {seed!r}")
        try:
            config = TrainConfig(**options, seeds=[seed])
        except ValidationError as e:
            raise _config_error(e, point, grid_keys) from None
        task_key = (config.group, config.group_table, config.expression, config.modulus)
        if task_key not in orders:
            try:
                orders[task_key] = resolve_group(config).order
            except ValueError as e:
                field = next((k for k in ("group_table", "expression", "modulus", "group")
                              if options.get(k) is not None), "group")
                where = "grid" if field in grid_keys else "base"
                raise SweepError(f"{where}.{field}: {' '.join(str(e).split())}") from None
        order = orders[task_key]
        try:
            if isinstance(multiple, CriticalMultiple):
                ratio = min(1.0, _tidy(multiple.multiple * critical_ratio(order, multiple.c)))
                config.train_ratio = ratio  # validated on assignment
            ratio = config.resolved_ratio(order)
        except (ValueError, ValidationError) as e:
            where = "grid" if "train_ratio" in grid_keys else "base"
            text = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise SweepError(f"{where}.train_ratio: {text} (group of order {order})") from None
        rid = run_id(config)
        if rid not in seen:
            seen.add(rid)
            runs.append(Run(len(runs), rid, config, order, ratio))
    return runs


def run_id(config: TrainConfig) -> str:
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- results table -------------------------------------------------------------------------------------

def _row(run: Run, model: dict | None, error: str | None) -> dict:
    cfg = run.config.model_dump(mode="json")
    row: dict[str, Any] = {"run_index": run.index, "run_id": run.run_id, "seed": cfg.pop("seeds")[0]}
    row.update(cfg)
    row["train_ratio"] = run.ratio
    row["order"] = run.order
    # rounded so multiples from critical_multiple read back as given (0.5, not 0.5000000000003)
    row["ratio_over_critical"] = round(run.ratio / critical_ratio(run.order), 6) if run.order > 1 else None
    row["steps_budget"] = run.config.steps
    for key in SUMMARY_TYPES:
        row[key] = None
    for key, value in (model or {}).items():
        if key == "seed":
            continue
        is_scalar = value is None or isinstance(value, (str, int, float, bool))
        row[key] = value if is_scalar else json.dumps(value, sort_keys=True)
    row["status"] = "failed" if error is not None else (model or {}).get("status")
    row["error"] = error
    return row


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Rows in grid order with fixed column types, so equal records give equal tables."""
    df = pd.DataFrame(sorted(rows, key=lambda r: r["run_index"]))
    if df.empty:
        return df
    for key, dtype in SUMMARY_TYPES.items():
        df[key] = pd.to_numeric(df[key], errors="coerce").astype(dtype)
    front = [c for c in df.columns if c not in ("status", "error")]
    return df[front + ["status", "error"]].reset_index(drop=True)


# -- running -------------------------------------------------------------------------------------------

def _execute(config_json: dict, run_dir: str, figures: bool) -> dict:
    """Train one run in its folder, resuming it when it was started; never raises.

    Runs in a worker (process-pool task or Ray task), so it takes and returns plain data.
    """
    try:
        from .run import train
        config = TrainConfig.model_validate(config_json)
        folder = Path(run_dir)
        if folder.exists() and not (folder / "config.yaml").exists():
            shutil.rmtree(folder)  # killed before its config was written: nothing worth keeping
        result = train(config, folder, resume=(folder / "config.yaml").exists(), figures=figures)
        return {"summary": result.summary["models"][0]}
    except Exception as e:  # the sweep records any failure of one run and goes on
        text = " ".join(str(e).split()) or "no message"
        return {"error": f"{type(e).__name__}: {text}"[:1000]}


def _watch_parent(parent: int) -> None:
    # A SIGKILLed driver cannot stop its pool; an orphaned worker would keep training (and writing)
    # a run the rerun is about to resume. Exit as soon as we are re-parented.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


def _worker_init(parent: int) -> None:
    import torch
    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _local(todo: list[Run], dirs: dict[str, Path], workers: int, figures: bool) -> Iterator[tuple[Run, dict]]:
    import multiprocessing
    attempts: dict[str, int] = {}
    queue = list(todo)
    dead_pools = 0
    while queue:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(queue)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))
        try:
            futures = {pool.submit(_execute, r.config.model_dump(mode="json"), str(dirs[r.run_id]), figures): r
                       for r in queue}
            queue = []
            finished = 0
            for fut in as_completed(futures):
                run = futures[fut]
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    # a worker died (OOM killer, signal): every unfinished run lands here, so retry each
                    # once in a fresh pool; they resume from their checkpoints
                    attempts[run.run_id] = attempts.get(run.run_id, 0) + 1
                    if attempts[run.run_id] < 2:
                        queue.append(run)
                        continue
                    outcome = {"error": "worker process died twice while training this run (out of memory?)"}
                finished += 1
                yield run, outcome
            dead_pools = dead_pools + 1 if queue and finished == 0 else 0
            if dead_pools >= 2:
                # workers that never finish anything are not failing runs: they cannot start at all
                raise SweepError("sweep worker processes die before finishing any run; when calling run_sweep "
                                 "from a script, put the call under `if __name__ == '__main__':`")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SweepError("the ray executor needs Ray: install li2[ray] (pip install 'li2[ray]')") from None
    return ray


def _ray(todo: list[Run], dirs: dict[str, Path], workers: int, figures: bool,
         address: str | None) -> Iterator[tuple[Run, dict]]:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=1)(_execute)
        refs = {task.remote(r.config.model_dump(mode="json"), str(dirs[r.run_id]), figures): r for r in todo}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            run = refs.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as e:  # the task's worker died twice, or the cluster went away
                outcome = {"error": f"ray task failed: {' '.join(str(e).split())[:500]}"}
            yield run, outcome
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _locked(out_dir: Path):
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another li2 sweep is running in {out_dir}") from None
        yield
    finally:
        os.close(fd)  # also releases the lock; a killed process releases it too


def _prepare(spec: SweepSpec, out_dir: Path) -> None:
    """Write sweep.yaml into an empty DIR, or check that DIR holds this very sweep."""
    saved = out_dir / "sweep.yaml"
    if saved.exists():
        try:
            previous = SweepSpec.model_validate(read_yaml(saved))
        except (StoreError, ValidationError):
            raise SweepError(f"{saved} is not a readable sweep spec; choose another --out") from None
        if previous.model_dump() != spec.model_dump():
            raise SweepError(f"{out_dir} holds a different sweep (its sweep.yaml differs); choose another --out")
        return
    if any(p.name != ".lock" for p in out_dir.iterdir()):
        raise SweepError(f"{out_dir} is not empty and holds no li2 sweep; choose an empty or new folder")
    write_text(saved, spec.to_yaml())


def _finished(folder: Path) -> dict | None:
    """The summary of a finished run folder, or None."""
    if not (folder / "summary.json").exists():
        return None
    try:
        return read_json(folder / "summary.json")["models"][0]
    except (StoreError, KeyError, IndexError, TypeError):
        return None  # damaged: train it again (resume recovers from its checkpoints)


def sweep_progress(spec: SweepSpec, out_dir: str | Path) -> tuple[int, int]:
    """(runs in the sweep, runs already finished in out_dir): lets a progress bar start in the right place."""
    runs = expand(spec)
    done = sum((Path(out_dir) / "runs" / r.run_id / "summary.json").exists() for r in runs)
    return len(runs), done


def run_sweep(spec: SweepSpec | dict | str | Path, out_dir: str | Path, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Train every run of `spec` not yet finished in `out_dir`; return the results table.

    spec: a SweepSpec, a dict, or a path to a YAML file. progress(n) is called after n more runs
    finished (trained or failed) in this call; runs already finished are not reported.
    """
    if isinstance(spec, (str, Path)):
        spec = SweepSpec.load(spec)
    elif isinstance(spec, dict):
        spec = SweepSpec.parse(spec)
    if executor not in ("local", "ray"):
        raise SweepError(f"unknown executor '{executor}' (use local or ray)")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    if executor == "ray":
        _import_ray()  # before anything touches the disk
    workers = workers or os.cpu_count() or 1
    runs = expand(spec)
    out_dir = Path(out_dir).resolve()  # Ray workers do not share our working directory
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"--out {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create --out {out_dir}: {e.strerror or e}") from None
    with _locked(out_dir):
        _prepare(spec, out_dir)
        clean_leftovers(out_dir)
        dirs = {r.run_id: out_dir / "runs" / r.run_id for r in runs}
        rows: dict[str, dict] = {}
        todo = []
        for r in runs:
            model = _finished(dirs[r.run_id])
            if model is None:
                todo.append(r)
            else:
                rows[r.run_id] = _row(r, model, None)
        results = out_dir / "results.parquet"
        write_parquet(results, results_table(list(rows.values())))
        if todo:
            stream = (_ray(todo, dirs, workers, spec.figures, address) if executor == "ray"
                      else _local(todo, dirs, workers, spec.figures))
            for run, outcome in stream:
                error = outcome.get("error")
                rows[run.run_id] = _row(run, outcome.get("summary"), error)
                marker = dirs[run.run_id] / "error.json"
                if error is not None:
                    write_json(marker, {"run_id": run.run_id, "error": error})
                elif marker.exists():
                    marker.unlink()
                write_parquet(results, results_table(list(rows.values())))
                if progress is not None:
                    progress(1)
        return results_table(list(rows.values()))


def load_results(out_dir: str | Path) -> pd.DataFrame:
    from .store import read_parquet
    return read_parquet(Path(out_dir) / "results.parquet")
