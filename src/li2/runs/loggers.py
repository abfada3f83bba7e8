"""Live metrics of a run: every evaluation reaches the loggers as it happens.

The trainer calls back with the metrics rows it has just recorded (one per running model); `RunLog`
hands them to each logger of the run:

    metrics.jsonl   always (JsonlLogger): one JSON object per row, appended and flushed at every
                    evaluation, so `tail -f` follows a run and a killed run keeps its curve up to
                    the kill. `metrics.parquet`, written at the end, stays the run's table.
    tensorboard/    `--log tensorboard` (TensorBoardLogger): tensorboard/seed<N>/ holds one scalar
                    per metrics column (train_acc, test_acc, …) of that seed, and
                    tensorboard/figures/ the run's final figures as images.
    wandb/          `--log wandb` (WandbLogger): one Weights & Biases run per li2 run, columns logged
                    as seed<N>/<column> against seed<N>/step, figures and outcomes at the end.
                    `WANDB_MODE=offline` keeps it on disk (`wandb sync` uploads it later).

A resumed run restarts each unit of models from its checkpoint: `unit_started(seeds, rows)` gets the
rows the checkpoint restored, and every logger drops what it had recorded for those seeds after
them, so the logs of a resumed run equal an uninterrupted run's.

TensorBoard and W&B are optional extras (li2[tensorboard], li2[wandb]); `check_loggers` refuses a
missing one before anything is trained. A logger that fails while training is switched off with a
warning; the run goes on.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import string
import warnings
from pathlib import Path
from typing import Iterable, Sequence

from ..config import Li2Warning
from ..store import jsonable, read_text, write_text

LOGGERS = ("tensorboard", "wandb")
EXTRAS = {"tensorboard": ("tensorboard", "torch.utils.tensorboard"), "wandb": ("wandb", "wandb")}
NOT_SCALARS = ("step", "seed")


def check_loggers(names: Iterable[str]) -> tuple[str, ...]:
    """The logger names, checked (known, installed) before a run starts; ValueError (one line) if not."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    for name in names:
        if name not in LOGGERS:
            raise ValueError(f"unknown --log '{name}': choose {' or '.join(LOGGERS)} (metrics.jsonl is always "
                             f"written)")
        extra, module = EXTRAS[name]
        try:
            __import__(module)
        except ImportError:
            raise ValueError(f"--log {name} needs the {extra} package: pip install 'li2[{extra}]'") from None
    return names


class RunLogger:
    """What a logger is told during a run (every method may be left as the no-op it is here)."""

    def unit_started(self, seeds: list[int], rows: list[dict]) -> None:
        """A unit of models starts (or resumes, with the rows its checkpoint restored)."""

    def evaluated(self, rows: list[dict]) -> None:
        """The metrics rows recorded at one evaluation (one per running model)."""

    def finished(self, summary: dict, figures: Sequence[Path]) -> None:
        """The run's summary.json content and its figure files."""

    def close(self) -> None:
        """Release files and processes (called once, also when training failed)."""


class JsonlLogger(RunLogger):
    """metrics.jsonl: one line per metrics row, flushed at every evaluation."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            write_text(self.path, "")
        self.file = None

    def unit_started(self, seeds: list[int], rows: list[dict]) -> None:
        if self.file is not None:
            self.file.close()
        seed_of = [(line, _seed_of(line)) for line in read_text(self.path).splitlines()]
        mine = set(seeds)
        kept = [line for line, seed in seed_of if seed is not None and seed not in mine]
        ours = [line for line, seed in seed_of if seed in mine]
        restored = _lines(rows)
        # A resumed unit: its lines become the checkpoint's rows (a killed run wrote more after it, maybe
        # a torn last line). Units run in turn, so its lines are the file's last; a finished unit's match.
        if ours != restored.splitlines() or len(kept) + len(ours) != len(seed_of):
            write_text(self.path, "".join(line + "\n" for line in kept) + restored)
        self.file = open(self.path, "a", encoding="utf-8")

    def evaluated(self, rows: list[dict]) -> None:
        self.file.write(_lines(rows))
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(jsonable(r), allow_nan=False) + "\n" for r in rows)


def _seed_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["seed"])
    except (ValueError, KeyError, TypeError):
        return None   # a line torn by a kill mid-write: dropped with the rest of its unit


def _scalars(row: dict) -> Iterable[tuple[str, float]]:
    for key, value in row.items():
        if key not in NOT_SCALARS and isinstance(value, (int, float)) and math.isfinite(value):
            yield key, float(value)


class TensorBoardLogger(RunLogger):
    """tensorboard/seed<N>/: one event file per seed, a scalar per metrics column; figures at the end."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.writers: dict[int, object] = {}
        self.purge: dict[int, int] = {}

    def _writer(self, name: str, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(log_dir=str(self.folder / name), purge_step=purge_step)

    def unit_started(self, seeds: list[int], rows: list[dict]) -> None:
        # events a killed run wrote after its checkpoint are purged when the writer opens
        last = {int(r["seed"]): int(r["step"]) for r in rows}
        for seed in seeds:
            if seed in self.writers:
                self.writers.pop(seed).close()
            self.purge[seed] = last[seed] + 1 if seed in last else 0

    def evaluated(self, rows: list[dict]) -> None:
        for row in rows:
            seed = int(row["seed"])
            if seed not in self.writers:
                self.writers[seed] = self._writer(f"seed{seed}", self.purge.get(seed))
            for key, value in _scalars(row):
                self.writers[seed].add_scalar(key, value, int(row["step"]))
        for writer in self.writers.values():
            writer.flush()

    def finished(self, summary: dict, figures: Sequence[Path]) -> None:
        import matplotlib.image
        writer = self._writer("figures")
        for path in figures:
            if Path(path).suffix == ".png":
                writer.add_image(Path(path).stem, matplotlib.image.imread(path)[..., :3], 0, dataformats="HWC")
        for m in summary.get("models", []):
            writer.add_text(f"seed{m['seed']}", f"{m.get('outcome')}: {m.get('hint')}", 0)
        writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class WandbLogger(RunLogger):
    """One W&B run per li2 run (its id kept in wandb/li2-run-id, so a resumed run continues it)."""

    def __init__(self, folder: Path, config: dict, name: str):
        import wandb
        self.wandb = wandb
        id_file = Path(folder) / "wandb" / "li2-run-id"
        run_id = read_text(id_file).strip() if id_file.exists() else "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        write_text(id_file, run_id + "\n")
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "li2"), dir=str(folder), name=name,
                                  id=run_id, resume="allow", config=config,
                                  settings=wandb.Settings(silent=True, console="off"))
        except Exception as e:  # not logged in, no network, a bad WANDB_* setting: wandb raises many types
            raise ValueError(f"--log wandb could not start a W&B run ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:160]}); log in with `wandb login`, or set "
                             f"WANDB_MODE=offline to keep the run on disk") from None
        self.defined: set[int] = set()

    def evaluated(self, rows: list[dict]) -> None:
        for row in rows:
            seed = int(row["seed"])
            if seed not in self.defined:   # each seed's curve has its own step axis (units run in turn)
                self.run.define_metric(f"seed{seed}/step")
                self.run.define_metric(f"seed{seed}/*", step_metric=f"seed{seed}/step")
                self.defined.add(seed)
            self.run.log({f"seed{seed}/step": int(row["step"]),
                          **{f"seed{seed}/{k}": v for k, v in _scalars(row)}})

    def finished(self, summary: dict, figures: Sequence[Path]) -> None:
        images = {f"figures/{Path(p).stem}": self.wandb.Image(str(p)) for p in figures if Path(p).suffix == ".png"}
        if images:
            self.run.log(images)
        for m in summary.get("models", []):
            for key in ("outcome", "grok_step", "final_test_acc", "final_train_acc", "steps_trained"):
                self.run.summary[f"seed{m['seed']}/{key}"] = m.get(key)

    def close(self) -> None:
        self.run.finish()


class RunLog:
    """The loggers of one run: every call reaches each of them; a failing optional logger is dropped."""

    def __init__(self, loggers: list[RunLogger]):
        self.loggers = loggers

    @classmethod
    def open(cls, out_dir: Path, names: Sequence[str], config: dict) -> "RunLog":
        loggers: list[RunLogger] = [JsonlLogger(out_dir / "metrics.jsonl")]
        for name in names:
            if name == "tensorboard":
                loggers.append(TensorBoardLogger(out_dir / "tensorboard"))
            elif name == "wandb":
                loggers.append(WandbLogger(out_dir, config, Path(out_dir).resolve().name))
        return cls(loggers)

    def _each(self, method: str, *args) -> None:
        for logger in list(self.loggers):
            if isinstance(logger, JsonlLogger):   # the run's own record: its failures are the run's
                getattr(logger, method)(*args)
                continue
            try:
                getattr(logger, method)(*args)
            except Exception as e:  # an optional logger never stops training
                self.loggers.remove(logger)
                warnings.warn(f"the {type(logger).__name__} stopped logging ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}); training goes on without it", Li2Warning)

    def unit_started(self, seeds: list[int], rows: list[dict]) -> None:
        self._each("unit_started", seeds, rows)

    def evaluated(self, rows: list[dict]) -> None:
        self._each("evaluated", rows)

    def finished(self, summary: dict, figures: Sequence[Path]) -> None:
        self._each("finished", summary, figures)

    def close(self) -> None:
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as e:  # closing must not hide the error that ended the run
                warnings.warn(f"closing the {type(logger).__name__} failed: {type(e).__name__}", Li2Warning)
