"""Running a sweep: one ordinary run folder per run of a spec, one results table, resumable.

Output folder DIR:
    sweep.yaml        the spec; a DIR holding a different sweep is refused
    runs/<id>/        an ordinary li2 run folder; <id> = li2.studies.spec.run_id: a hash of the
                      fields that differ from TrainConfig's defaults, so ids survive grid edits and
                      fields added to TrainConfig later
    submitit/         the slurm executor's job scripts and logs
    results.parquet   a row per finished run, in grid order, rewritten atomically after every run
    .lock             held while a sweep runs, so two sweeps never share a DIR

results.parquet columns: run_index (grid order), run_id, seed, every other TrainConfig field
(train_ratio resolved to a number), order (group order M), ratio_over_critical (p / 2.7482·ln M/M),
steps_budget, the run's summary fields (final_train_acc, final_test_acc, grok_step, memorize_step,
steps_trained, wall_seconds, status, and any others, non-scalars as JSON; `warnings`: the run's
Li2Warnings, when any run had one), and error. A run that
raised has status "failed" and its message in `error`; the sweep goes on.

Rerunning a sweep skips runs whose folder has summary.json, resumes started ones from their
checkpoints (bit-exact) and retries failed ones, so the final table equals an uninterrupted
sweep's except for wall-clock columns (WALL_COLUMNS).

Executors: "local" runs each run as one task of a spawn-context process pool; "ray" sends the same
function to Ray (a cluster at `address`, or a local instance); "slurm" submits one job per run (one
job array) through submitit and polls them. The driver alone writes the table. With a Ray cluster or
SLURM, DIR must be on a file system every node sees. Ray and submitit are optional extras, checked
before anything touches the disk.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
from pydantic import ValidationError

from ..config import Li2Warning, TrainConfig
from ..engine.blas import auto_blas
from ..engine.fused import LANES
from ..runs.training import train
from ..store import (
    StoreError,
    clean_leftovers,
    read_json,
    read_parquet,
    read_yaml,
    write_json,
    write_parquet,
    write_text,
)
from ..task import critical_ratio
from .spec import Run, SweepError, SweepSpec, expand

WALL_COLUMNS = ("wall_seconds",)           # differ between otherwise identical sweeps
# Known summary fields and their column types; nullable ints so a never-grokked run stays an int column.
SUMMARY_TYPES = {"final_train_acc": "float64", "final_test_acc": "float64", "grok_step": "Int64",
                 "memorize_step": "Int64", "steps_trained": "Int64", "wall_seconds": "float64"}



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

def execute_run(config_json: dict, run_dir: str, figures: bool) -> dict:
    """Train one run in its folder, resuming it when it was started; never raises.

    Runs in a worker (process-pool task or Ray task), so it takes and returns plain data.
    """
    try:
        config = TrainConfig.model_validate(config_json)
        folder = Path(run_dir)
        if folder.exists() and not (folder / "config.yaml").exists():
            shutil.rmtree(folder)  # killed before its config was written: nothing worth keeping
        with warnings.catch_warnings(record=True) as caught:   # a worker's stderr is no place for them
            warnings.simplefilter("always", Li2Warning)
            result = train(config, folder, resume=(folder / "config.yaml").exists(), figures=figures)
        model = dict(result.summary["models"][0])
        said = [str(w.message) for w in caught if issubclass(w.category, Li2Warning)]
        if said:
            model["warnings"] = "; ".join(dict.fromkeys(said))
        return {"summary": model}
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


def worker_threads(workers: int) -> int:
    """Threads per worker process: the cores shared out, at most the fused step's LANES (results are
    then identical for every layout, see engine/fused.py).  A sweep with fewer runs than cores, or
    --workers 1, gets several threads per run; a full one a process per core (measured faster on two
    cores for every benchmark shape: README, Benchmark)."""
    return max(1, min(LANES, (os.cpu_count() or 1) // max(1, workers)))


def worker_init(parent: int, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _local(todo: list[Run], dirs: dict[str, Path], workers: int, figures: bool) -> Iterator[tuple[Run, dict]]:
    import multiprocessing
    attempts: dict[str, int] = {}
    queue = list(todo)
    dead_pools = 0
    while queue:
        size = min(workers, len(queue))
        pool = ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker_init, initargs=(os.getpid(), worker_threads(size)))
        try:
            futures = {pool.submit(execute_run, r.config.model_dump(mode="json"), str(dirs[r.run_id]), figures): r
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


SLURM_POLL_SECONDS = 2.0


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise SweepError("the slurm executor needs submitit: install li2[slurm] (pip install 'li2[slurm]')") from None
    return submitit


def _check_slurm(slurm: dict) -> None:
    _import_submitit()
    if slurm.get("cluster", "slurm") == "slurm" and shutil.which("sbatch") is None:
        raise SweepError("the slurm executor needs SLURM's sbatch on PATH: run li2 sweep on a SLURM login node")


def _slurm(todo: list[Run], dirs: dict[str, Path], workers: int | None, figures: bool, out_dir: Path,
           slurm: dict) -> Iterator[tuple[Run, dict]]:
    """One SLURM job per run (submitted as one array), polled until each has finished.

    `slurm`: partition, timeout_min (per run), and cluster ("slurm", or "local" for submitit's local
    executor, which runs each job as a process on this machine: how the tests drive this path)."""
    submitit = _import_submitit()
    executor = submitit.AutoExecutor(folder=out_dir / "submitit" / "%j", cluster=slurm.get("cluster", "slurm"))
    params = {"timeout_min": int(slurm.get("timeout_min") or 60), "cpus_per_task": 1, "name": "li2-sweep"}
    if slurm.get("partition"):
        params["slurm_partition"] = slurm["partition"]
    if workers:
        params["slurm_array_parallelism"] = workers
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(execute_run, r.config.model_dump(mode="json"), str(dirs[r.run_id]), figures) for r in todo]
    pending = dict(zip(jobs, todo))
    try:
        while pending:
            finished = [job for job in pending if job.done()]
            for job in finished:
                run = pending.pop(job)
                try:
                    outcome = job.result()
                except Exception as e:  # the job failed, timed out or was cancelled
                    outcome = {"error": f"slurm job {job.job_id} failed: {' '.join(str(e).split())[:500]}"}
                yield run, outcome
            if pending and not finished:
                time.sleep(SLURM_POLL_SECONDS)
    finally:
        for job in pending:   # the driver stops (error, Ctrl-C): its unfinished jobs go too; a rerun resumes them
            job.cancel(check=False)


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
        task = ray.remote(num_cpus=1, max_retries=1)(execute_run)
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


def claim_study_folder(spec, out_dir: Path, kind: str = "sweep") -> None:
    """Write <kind>.yaml into an empty DIR, or check that DIR holds this very study (a sweep or a search:
    spec is its pydantic model)."""
    saved = out_dir / f"{kind}.yaml"
    if saved.exists():
        try:
            previous = type(spec).model_validate(read_yaml(saved))
        except (StoreError, ValidationError):
            raise SweepError(f"{saved} is not a readable {kind} spec; choose another --out") from None
        if previous.model_dump() != spec.model_dump():
            raise SweepError(f"{out_dir} holds a different {kind} (its {kind}.yaml differs); choose another --out")
        return
    if any(p.name != ".lock" for p in out_dir.iterdir()):
        raise SweepError(f"{out_dir} is not empty and holds no li2 {kind}; choose an empty or new folder")
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


EXECUTORS = ("local", "ray", "slurm")


def _checked(spec: SweepSpec | dict | str | Path, executor: str, workers: int | None,
             slurm: dict | None) -> tuple[SweepSpec, dict]:
    """The spec parsed and the executor's options checked, before anything touches the disk."""
    if isinstance(spec, (str, Path)):
        spec = SweepSpec.load(spec)
    elif isinstance(spec, dict):
        spec = SweepSpec.parse(spec)
    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor '{executor}' (use {', '.join(EXECUTORS[:-1])} or {EXECUTORS[-1]})")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    slurm = dict(slurm or {})
    if executor == "ray":
        _import_ray()
    elif executor == "slurm":
        _check_slurm(slurm)
    return spec, slurm


def out_folder(out_dir: str | Path) -> Path:
    """The sweep folder, absolute (Ray workers do not share our working directory) and created."""
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise SweepError(f"--out {out_dir} is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create --out {out_dir}: {e.strerror or e}") from None
    return out_dir


def run_sweep(spec: SweepSpec | dict | str | Path, out_dir: str | Path, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              progress: Callable[[int], None] | None = None, slurm: dict | None = None) -> pd.DataFrame:
    """Train every run of `spec` not yet finished in `out_dir`; return the results table.

    spec: a SweepSpec, a dict, or a path to a YAML file. progress(0) is called once the sweep has
    been checked and starts training, then progress(n) after n more runs finished (trained or failed)
    in this call; runs already finished are not reported (a sweep with nothing to train never calls
    it). slurm: options of the slurm executor (`_slurm`).
    """
    spec, slurm = _checked(spec, executor, workers, slurm)
    slurm_workers = workers
    workers = workers or os.cpu_count() or 1
    runs = expand(spec)
    out_dir = out_folder(out_dir)
    with _locked(out_dir):
        claim_study_folder(spec, out_dir)
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
            if progress is not None:
                progress(0)
            auto_blas()   # measured once here and inherited (LI2_BLAS): every worker multiplies alike
            if executor == "ray":
                stream = _ray(todo, dirs, workers, spec.figures, address)
            elif executor == "slurm":
                stream = _slurm(todo, dirs, slurm_workers, spec.figures, out_dir, slurm)
            else:
                stream = _local(todo, dirs, workers, spec.figures)
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
    return read_parquet(Path(out_dir) / "results.parquet")
