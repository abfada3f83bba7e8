"""One run folder on disk: creating it safely, what it records, and reading a finished one back.

Run folder:
    config.yaml        fully resolved configuration (+ versions, resolved ratio, device)
    metrics.jsonl      one JSON line per model per evaluation, appended while the run trains
    metrics.parquet    one row per model per evaluation (written at the end)
    checkpoints/       <unit>-step<N>.safetensors (periodic, resumable) and <unit>-final.safetensors
    summary.json       {"models": [{seed, final_train_acc, final_test_acc, grok_step, memorize_step,
                                    wall_seconds, status, steps_trained, stages, spectrum, outcome, hint,
                                    evidence}, ...]}
    curves.png, dynamics.png, spectra.png   figures (li2.views)
    tensorboard/, wandb/   with `--log tensorboard` / `--log wandb` (li2.runs.loggers)
    .lock              exists while a process writes the folder (`run_lock`)
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import platform
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from pydantic import ValidationError

from ..config import MODEL_DEFAULTS, TrainConfig
from ..engine.blas import resolved_blas
from ..store import StoreError, is_leftover, load_checkpoint, read_json, read_parquet, read_yaml
from ..task import Task, train_size
from ..theory.outcomes import annotate_outcomes
from ..version import __version__


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


def resolved_config(config: TrainConfig, task: Task, ratio: float, device: torch.device) -> dict:
    """config.yaml's content: the config, what it resolved to, and the versions that ran it."""
    resolved = {"group": task.group.name, "order": task.order, "is_group": task.group.is_group,
                "train_ratio": ratio, "num_samples": task.num_samples,
                "train_size": train_size(task.num_samples, ratio), "device": str(device),
                "eval_steps": "auto" if config.eval_every is None else config.eval_every,
                "blas": (resolved_blas(config.blas, device) if config.layers == 0 and config.model == "mlp2"
                         else "torch")}
    if config.model != "mlp2":   # the values options left unset took (config.MODEL_DEFAULTS)
        resolved["model_defaults"] = dict(MODEL_DEFAULTS[config.model])
    return {
        "config": config.model_dump(mode="json"),
        "resolved": resolved,
        "versions": {"li2": __version__, "torch": str(torch.__version__), "python": platform.python_version()},
    }


def default_out_dir() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / stamp


LOCK_NAME = ".lock"


def same_config(saved, config: TrainConfig) -> bool:
    """Whether a saved config (a dict from config.yaml) is `config`. Fields added to TrainConfig since
    it was written take their defaults, so a folder written before a new field keeps matching."""
    try:
        return TrainConfig.model_validate(saved).model_dump(mode="json") == config.model_dump(mode="json")
    except (ValidationError, TypeError, ValueError):
        return False


def _lock_holder(path: Path) -> str:
    try:
        pid, host = path.read_text().split()[:2]
        return f" (pid {int(pid)} on {host})"
    except (OSError, ValueError):
        return ""


def _alive(path: Path) -> bool:
    """Whether the process named in a lock file still runs (for file systems without flock)."""
    try:
        pid, host = path.read_text().split()[:2]
        if host != socket.gethostname():
            return True   # another machine's process: cannot tell, so assume it runs
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except (OSError, ValueError):
        return True


@contextmanager
def run_lock(out: Path, resume: bool = False) -> Iterator[None]:
    """Hold `out/.lock` while this process writes the run folder (creating the folder if needed).

    The lock is an flock, which the kernel releases when its process dies however it dies, so the
    lock file a SIGKILLed run leaves behind is stale and taken over at once. The file names the
    holder (pid, host) for the error message; where a file system has no flock, a lock whose
    process no longer runs on this host is taken over. RunError (one line) when another process
    holds it."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a folder; choose another --out")
    if resume and not out.is_dir():
        raise RunError(f"nothing to resume in {out}")
    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) or _alive(path):
                    os.close(fd)
                    raise RunError(f"--out {out} is being written by another li2 process{_lock_holder(path)}; "
                                   f"wait for it to finish or choose another --out") from None
            try:   # the holder we raced may have removed the file we opened: lock the one that is there
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError as e:
        raise RunError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def prepare_out_dir(out: Path, config: TrainConfig, resume: bool) -> None:
    """Refuse an --out that holds something else; never touch what is already there.
    The caller holds the folder's lock (`run_lock`), which also created it."""
    cfg_path = out / "config.yaml"
    if any(not is_leftover(p.name) and p.name != LOCK_NAME for p in out.iterdir()):   # a crash's leftovers: empty
        if not cfg_path.exists():
            raise RunError(f"--out {out} is not empty and holds no li2 run; choose an empty or new folder")
        try:
            saved = read_yaml(cfg_path)["config"]
        except (StoreError, KeyError, TypeError):
            raise RunError(f"--out {out} holds an unreadable config.yaml; choose another --out") from None
        if not same_config(saved, config):
            raise RunError(f"--out {out} already holds a different run; choose another --out")
        if not resume:
            raise RunError(f"--out {out} already holds this run; pass --resume {out} to continue it, "
                           f"or choose another --out")
    elif resume:
        raise RunError(f"nothing to resume in {out}")
    try:
        probe = out / ".li2-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunError(f"cannot write to --out {out}: {e.strerror or e}; choose a writable folder") from None


def load_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig a run folder was started with (RunError if it has none)."""
    try:
        return TrainConfig.model_validate(read_yaml(run_dir / "config.yaml")["config"])
    except (KeyError, TypeError):
        raise RunError(f"{run_dir}/config.yaml is not an li2 run config") from None
    except StoreError as e:
        raise RunError(str(e)) from None


def read_run_tables(run_dir: str | Path) -> tuple[dict, pd.DataFrame, dict]:
    """(config.yaml, metrics.parquet, summary.json) of a finished run folder; RunError otherwise."""
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


def diagnose_dir(run_dir: str | Path) -> dict:
    """Re-compute outcomes for an existing run folder from config.yaml, metrics.parquet and summary.json.

    Returns {"run": str, "models": [{seed, outcome, hint, evidence, final_train_acc, final_test_acc,
    grok_step, status}]}. Raises ValueError (one line) when the folder is not a finished run.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder (give the --out of an li2 train run)")
    saved, metrics, summary = read_run_tables(run_dir)
    try:
        config = TrainConfig.model_validate(saved["config"])
        models = summary["models"]
        if not isinstance(models, list) or not all(isinstance(x, dict) and "seed" in x for x in models):
            raise TypeError
        for col in ("step", "seed", "test_acc", "train_acc"):
            if col not in metrics:
                raise KeyError(col)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{run_dir} holds a damaged li2 run ({e.__class__.__name__}: "
                         f"{str(e).splitlines()[0][:60] if str(e) else 'unexpected layout'})") from None
    resolved = saved.get("resolved") if isinstance(saved.get("resolved"), dict) else {}
    order = resolved.get("order") if isinstance(resolved.get("order"), int) else None
    fresh = {"models": [dict(x) for x in models]}
    annotate_outcomes(fresh, metrics, config, order)
    keep = ("seed", "outcome", "hint", "final_train_acc", "final_test_acc", "grok_step", "status", "evidence")
    return {"run": str(run_dir), "models": [{k: x.get(k) for k in keep} for x in fresh["models"]]}
